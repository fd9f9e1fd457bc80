"""The shipped prompt audio: present for every flow prompt, telephone format (8 kHz 16-bit mono)."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import pytest
import yaml

from ivr.flow import DEFAULT_FLOW_PATH, DEFAULT_PROMPTS_DIR
from ivr.loader import load_flow
from ivr.prompts import (
    MAX_SPOKEN_AHEAD,
    hold_prompts,
    missing_prompts,
    prompt_path,
    queue_position_prompts,
    required_prompts,
    transfer_prompts,
)

TEXTS = yaml.safe_load((DEFAULT_PROMPTS_DIR.parent / "texts.yaml").read_text(encoding="utf-8"))
FLOWS = sorted(DEFAULT_FLOW_PATH.parent.glob("*.yaml"))


def assert_telephone_wav(path: Path) -> None:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2), path
        assert w.getnframes() > 800, f"{path} is shorter than 0.1 s"


@pytest.mark.parametrize("flow_path", FLOWS, ids=[p.name for p in FLOWS])
def test_every_prompt_of_a_shipped_flow_has_telephone_audio(flow_path: Path) -> None:
    flow = load_flow(flow_path)
    ids = {n.prompt.id for n in flow.nodes.values()} | {flow.invalid_prompt.id}
    assert ids <= set(TEXTS), "make_prompts.sh could not regenerate them"
    for prompt_id in ids:
        assert_telephone_wav(flow.wav_path(prompt_id))


@pytest.mark.parametrize("prompt_id", sorted(TEXTS))
def test_every_text_has_its_wav(prompt_id: str) -> None:
    assert_telephone_wav(prompt_path(prompt_id))


def test_no_stray_wavs_without_a_text() -> None:
    assert {p.stem for p in DEFAULT_PROMPTS_DIR.glob("*.wav")} == set(TEXTS)


def test_hold_and_transfer_messages() -> None:
    assert [p.stem for p in hold_prompts()] == ["hold"]
    assert "不要挂机" in TEXTS["hold"]
    assert [p.stem for p in transfer_prompts()] == ["transfer_human"]


@pytest.mark.parametrize(("position", "said"), [
    (1, ["queue_next"]),
    (2, ["queue_ahead", "n1", "queue_people"]),
    (3, ["queue_ahead", "n2", "queue_people"]),
    (MAX_SPOKEN_AHEAD + 1, ["queue_ahead", f"n{MAX_SPOKEN_AHEAD}", "queue_people"]),
    (MAX_SPOKEN_AHEAD + 2, ["queue_many"]),
    (500, ["queue_many"]),
])
def test_queue_position_phrases(position: int, said: list[str]) -> None:
    paths = queue_position_prompts(position)
    assert [p.stem for p in paths] == said
    assert all(p.is_file() for p in paths)


def test_queue_position_phrase_reads_as_a_sentence() -> None:
    spoken = "".join(TEXTS[p.stem] for p in queue_position_prompts(4))
    assert spoken == "您前面还有三位来电。"


def test_queue_position_starts_at_one() -> None:
    with pytest.raises(ValueError):
        queue_position_prompts(0)


def test_every_shipped_flow_has_every_prompt_a_caller_may_hear() -> None:
    for flow_path in FLOWS:
        assert missing_prompts(load_flow(flow_path)) == [], flow_path


def flow_copy(tmp_path: Path) -> Path:
    """The default flow with its own copy of the prompts (flow prompts and queue prompts)."""
    audio = tmp_path / "audio"
    shutil.copytree(DEFAULT_PROMPTS_DIR, audio)
    data = yaml.safe_load(DEFAULT_FLOW_PATH.read_text(encoding="utf-8"))
    data["prompts_dir"] = str(audio)
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_a_broken_prompt_is_named_before_any_call(tmp_path: Path) -> None:
    path = flow_copy(tmp_path)
    (tmp_path / "audio" / "dispute.wav").write_bytes(b"")      # present, but no audio in it
    (tmp_path / "audio" / "movable.wav").write_bytes(b"RIFF")  # a truncated header
    problems = missing_prompts(load_flow(path))  # the flow itself loads: every file exists
    assert sorted(p.split(": ", 1)[0] for p in problems) == [
        str(tmp_path / "audio" / "dispute.wav"), str(tmp_path / "audio" / "movable.wav")], problems
    assert all("not a readable WAV" in p for p in problems), problems


def test_the_queue_prompts_are_required_too() -> None:
    required = {p.name for p in required_prompts(load_flow(DEFAULT_FLOW_PATH))}
    assert {"hold.wav", "transfer_human.wav", "queue_next.wav", "queue_many.wav", "n20.wav"} <= required
