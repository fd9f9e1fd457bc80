"""Broken flows are refused with every problem and where it is."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ivr.check import validate_flow
from ivr.flow import DEFAULT_FLOW_PATH, FlowInvalid, FlowProblem
from ivr.loader import load_flow

BASE = yaml.safe_load(DEFAULT_FLOW_PATH.read_text(encoding="utf-8"))


def broken(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    change(data)
    return data


def problems_of(data: dict[str, Any]) -> dict[str, str]:
    return {p.location: p.message for p in validate_flow(data, DEFAULT_FLOW_PATH.parent)}


def test_the_shipped_flows_are_valid() -> None:
    for path in DEFAULT_FLOW_PATH.parent.glob("*.yaml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert validate_flow(data, path.parent) == [], path


def _set(path: str, value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            data = data[part]
        if value is _DELETE:
            del data[last]
        else:
            data[last] = value
    return change


_DELETE = object()
LABEL = {"zh": "问题", "en": "a question"}
NODE = {"prompt": {"id": "movable", "text": "x"}, "label": LABEL,
        "keys": {"1": {"goto": "dispute", "meaning": LABEL}}}

BROKEN = [
    # id, change, location, words in the message
    ("unknown_target", _set("nodes.fled.keys.2", {"goto": "nowhere"}), "nodes.fled.keys.2.goto", "unknown target"),
    ("unknown_start", _set("start", "hello"), "start", "unknown start"),
    ("unreachable_node", _set("nodes.orphan", NODE), "nodes.orphan", "unreachable"),
    ("loop_back_to_welcome", _set("nodes.dispute.keys.2", {"goto": "welcome"}), "nodes.dispute.keys.2",
     "loops forever"),
    ("self_loop", _set("nodes.injury.keys.2", {"goto": "injury"}), "nodes.injury.keys.2", "injury -> injury"),
    ("node_without_exit", _set("nodes.injury.keys", {"5": "repeat"}), "nodes.injury.keys", "no exit"),
    ("missing_prompt_audio", _set("nodes.fled.prompt.id", "no_such_prompt"), "nodes.fled.prompt.id",
     "missing prompt audio"),
    ("missing_invalid_audio", _set("invalid_prompt", {"id": "gone", "text": "x"}), "invalid_prompt.id",
     "missing prompt audio"),
    ("key_also_global", _set("nodes.fled.keys.0", {"goto": "facility"}), "nodes.fled.keys.0", "mapped twice"),
    ("unknown_skill", _set("nodes.dispute.keys.1.skill", "judge"), "nodes.dispute.keys.1.skill", "unknown skill"),
    ("priority_zero", _set("nodes.movable.keys.2.priority", 0), "nodes.movable.keys.2.priority", "bad priority"),
    ("priority_nine", _set("on_invalid_exhausted.priority", 9), "on_invalid_exhausted.priority", "bad priority"),
    ("timeout_not_to_a_human", _set("on_timeout_exhausted.skill", "rescue"), "on_timeout_exhausted.skill",
     "no human fallback"),
    ("invalid_not_to_a_human", _set("on_invalid_exhausted.skill", "insurance_claim"), "on_invalid_exhausted.skill",
     "no human fallback"),
    ("zero_not_to_a_human", _set("any_node.0", {"skill": "accident_query", "priority": 3, "reason": "x"}),
     "any_node.keys.0", "no human fallback"),
    ("no_zero_at_all", _set("any_node.0", _DELETE), "any_node", "no human fallback"),
    ("global_goto", _set("any_node.9", {"goto": "welcome"}), "any_node.keys.9", "ends in an outcome"),
    ("not_a_keypad_key", _set("nodes.fled.keys.x", {"goto": "facility"}), "nodes.fled.keys.x", "not a keypad key"),
    ("target_half_outcome", _set("nodes.fled.keys.1", {"skill": "police_dispatch"}), "nodes.fled.keys.1",
     "skill, priority and reason"),
    ("target_bare_name", _set("nodes.fled.keys.2", "facility"), "nodes.fled.keys.2", "{goto: facility}"),
    ("missing_prompt", _set("nodes.fled.prompt", _DELETE), "nodes.fled.prompt", "Field required"),
    ("negative_timeout", _set("nodes.fled.timeout", -1), "nodes.fled.timeout", "greater than 0"),
    ("question_without_label", _set("nodes.fled.label", _DELETE), "nodes.fled.label", "needs a label"),
    ("label_without_english", _set("nodes.fled.label", {"zh": "问"}), "nodes.fled.label.en", "Field required"),
    ("answer_without_meaning", _set("nodes.fled.keys.2.meaning", _DELETE), "nodes.fled.keys.2.meaning",
     "needs a meaning"),
    ("reason_without_words", _set("reasons.hit_and_run", _DELETE), "reasons.hit_and_run", "needs a label"),
    ("unknown_field", _set("nodes.fled.tiemout", 3), "nodes.fled.tiemout", "Extra inputs"),
    ("missing_fallback", _set("on_timeout_exhausted", _DELETE), "on_timeout_exhausted", "Field required"),
]


@pytest.mark.parametrize(("change", "location", "words"), [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_each_kind_of_error_is_reported_where_it_is(change: Any, location: str, words: str) -> None:
    found = problems_of(broken(change))
    assert location in found, found
    assert words in found[location]


def test_every_error_is_reported_at_once() -> None:
    def change(data: dict[str, Any]) -> None:
        data["nodes"]["fled"]["keys"]["2"] = {"goto": "nowhere"}
        data["nodes"]["dispute"]["keys"]["1"]["skill"] = "judge"
        data["nodes"]["injury"]["prompt"]["id"] = "no_such_prompt"
        data["on_timeout_exhausted"]["skill"] = "rescue"
        data["nodes"]["movable"]["retries"] = "many"

    found = problems_of(broken(change))
    assert {"nodes.fled.keys.2.goto", "nodes.dispute.keys.1.skill", "nodes.injury.prompt.id",
            "on_timeout_exhausted.skill", "nodes.movable.retries"} <= set(found)


def test_graph_errors_are_all_found_together() -> None:
    def change(data: dict[str, Any]) -> None:
        data["nodes"]["dispute"]["keys"]["2"] = {"goto": "welcome"}
        data["nodes"]["orphan"] = NODE

    assert {"nodes.dispute.keys.2", "nodes.orphan"} <= set(problems_of(broken(change)))


def test_a_flow_that_is_not_a_mapping() -> None:
    assert [p.location for p in validate_flow(["welcome"], Path("."))] == ["(top)"]  # type: ignore[arg-type]


def edited(old: str, new: str) -> str:
    """The default flow with one line replaced; fails loudly if the line is no longer there."""
    text = DEFAULT_FLOW_PATH.read_text(encoding="utf-8")
    assert old in text, f"the default flow no longer has {old!r}"
    return text.replace(old, new, 1)


INJURY_YES = '      "1": {skill: police_dispatch, priority: 1, reason: injury, meaning: {zh: 有人受伤或死亡, en: "yes, someone is injured"}}\n'
INJURY_NO = '      "2": {goto: movable, meaning: {zh: 无人受伤, en: "no one is injured"}}\n'
DUPLICATE_KEY_FLOW = edited(INJURY_YES, INJURY_YES + '      "1": {goto: movable}\n')


def line_containing(text: str, needle: str, nth: int = 1) -> int:
    lines = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    return lines[nth - 1]


def test_a_key_written_twice_is_found_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text(DUPLICATE_KEY_FLOW, encoding="utf-8")
    with pytest.raises(FlowInvalid) as e:
        load_flow(path)
    assert e.value.problems == [FlowProblem("nodes.injury.keys.1", e.value.problems[0].message,
                                            line_containing(DUPLICATE_KEY_FLOW, '"1": {goto: movable}'))]
    assert "written twice" in e.value.problems[0].message


def test_unquoted_and_quoted_digit_are_the_same_key(tmp_path: Path) -> None:
    text = edited(INJURY_NO, INJURY_NO + "      2: {goto: fled}\n")
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FlowInvalid) as e:
        load_flow(path)
    [problem] = e.value.problems
    assert problem.location == "nodes.injury.keys.2" and "mapped twice" in problem.message
    assert problem.line == line_containing(text, "2: {goto: fled}")


def test_problems_carry_the_line_of_their_key(tmp_path: Path) -> None:
    text = edited("{goto: facility,", "{goto: nowhere,")
    path = tmp_path / "f.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FlowInvalid) as e:
        load_flow(path)
    lines = {p.location: p.line for p in e.value.problems}
    assert lines["nodes.fled.keys.2.goto"] == line_containing(text, "{goto: nowhere,")
    # facility and dispute are now cut off from the start, and located at their definitions
    assert lines["nodes.facility"] == line_containing(text, "  facility:")
    assert lines["nodes.dispute"] == line_containing(text, "  dispute:")


def test_yaml_syntax_error_is_located(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nnodes:\n  welcome: [unclosed\n", encoding="utf-8")
    with pytest.raises(FlowInvalid) as e:
        load_flow(path)
    assert e.value.problems[0].location == "file" and e.value.problems[0].line is not None


def test_prompts_dir_is_relative_to_the_flow_file(tmp_path: Path) -> None:
    (tmp_path / "voice").mkdir()
    data = copy.deepcopy(BASE)
    data["prompts_dir"] = "voice"
    found = problems_of_in(data, tmp_path)
    assert "nodes.welcome.prompt.id" in found and str(tmp_path / "voice") in found["nodes.welcome.prompt.id"]
    for prompt_id in ["welcome", "injury", "movable", "driver", "fled", "facility", "dispute", "invalid"]:
        (tmp_path / "voice" / f"{prompt_id}.wav").write_bytes(b"RIFF")
    assert problems_of_in(data, tmp_path) == {}
    (tmp_path / "flow.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    assert load_flow(tmp_path / "flow.yaml").wav_path("fled") == tmp_path / "voice" / "fled.wav"


def problems_of_in(data: dict[str, Any], base: Path) -> dict[str, str]:
    return {p.location: p.message for p in validate_flow(data, base)}


def test_check_flow_cli_accepts_the_default_flow() -> None:
    done = subprocess.run(["handoff122", "check-flow", str(DEFAULT_FLOW_PATH)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"ok: {DEFAULT_FLOW_PATH} (7 nodes)"


def test_check_flow_cli_lists_located_errors(tmp_path: Path) -> None:
    text = edited("{goto: facility,", "{goto: nowhere,").replace("skill: rescue", "skill: tow_truck")
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(["handoff122", "check-flow", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert f"{path}:{line_containing(text, '{goto: nowhere,')}: nodes.fled.keys.2.goto: unknown target node " \
           "'nowhere'" in lines
    assert any(line.startswith(f"{path}:{line_containing(text, 'tow_truck')}: nodes.movable.keys.2.skill: "
                               "unknown skill 'tow_truck'") for line in lines)
    assert done.stdout == ""
