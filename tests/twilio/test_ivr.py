"""A Twilio caller walks the same IVR as a SIP caller: same questions, same outcome, same record."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from ivr.flow import DEFAULT_FLOW_PATH, DEFAULT_PROMPTS_DIR, Flow
from ivr.interpreter import Action, IvrSession, Play, Route, StartTimer
from ivr.loader import flow_from_data, load_flow
from tests.twilio.conftest import PUBLIC, SEATS, Centre, start_centre, stop_centre


def sip_outcome(flow: Flow, keys: str) -> tuple[dict[str, object], list[tuple[str, str]]]:
    """What the SIP gateway's interpreter decides for the same keys ('.' = silence after the prompt)."""
    session = IvrSession(flow, "sip-reference")
    actions: list[Action] = session.start(0.0)
    t = 0.0
    for k in keys.split():
        t += 1.0
        if k == ".":
            while not any(isinstance(a, StartTimer) for a in actions):
                play = next(a for a in actions if isinstance(a, Play))
                actions = session.prompt_finished(play.token, t)
            timer = next(a for a in actions if isinstance(a, StartTimer))
            actions = session.timeout(timer.token, t)
        else:
            actions = session.digit(k, t)
    assert any(isinstance(a, Route) for a in actions)
    rec = session.record.to_dict()
    return rec["outcome"], [(a["node"], a["digit"]) for a in rec["answers"]]


async def walk(centre: Centre, keys: str) -> str:
    phone = centre.phone()
    await phone.dial_in()
    for k in keys.split():
        if k == ".":
            await phone.silence()
        else:
            await phone.press(k)
    assert phone.doc is not None and phone.doc.find("Gather") is None, "the IVR should have decided"
    return phone.call_id


@pytest.mark.parametrize(("keys", "skill", "priority", "reason"), [
    ("1 2 1 2 2 2 2", "intake_guidance", 4, None),           # eligible, no dispute: guided self-settlement
    ("1 2 1 2 2 2 1", "online_determination", 3, None),      # eligible with dispute
    ("1 1", "police_dispatch", 1, None),                     # injury
    ("1 2 2", "rescue", 2, None),                            # cannot move
    ("2", "accident_query", 4, None),
    ("3", "insurance_claim", 4, None),
    ("0", "intake_guidance", 3, "asked_for_human"),
    ("1 2 0", "intake_guidance", 3, "asked_for_human"),      # 0 at any node
    (". . .", "intake_guidance", 3, "no_input"),             # silence: re-prompted twice, then a person
    ("1 . . .", "intake_guidance", 3, "no_input"),
    ("9 9 9", "intake_guidance", 3, "invalid_input"),        # wrong keys likewise
    ("1 # 7 5", "intake_guidance", 3, "invalid_input"),      # '#' is a key like any other
    ("* * 1 1", "police_dispatch", 1, None),                 # '*' repeats without counting as a failure
    ("9 . 2", "accident_query", 4, None),                    # failures then a good key
])
async def test_each_path_decides_like_sip(centre: Centre, keys: str, skill: str, priority: int,
                                          reason: str | None) -> None:
    call_id = await walk(centre, keys)
    rec = await centre.record(call_id)
    outcome, answers = sip_outcome(centre.flow, keys)
    assert rec["ivr"]["outcome"] == outcome
    assert (outcome["skill"], outcome["priority"]) == (skill, priority)
    if reason:
        assert outcome["reason"] == reason
    assert [(a["node"], a["digit"]) for a in rec["ivr"]["answers"]] == answers
    assert rec["skill"] == skill and rec["priority"] == priority
    assert rec["ingress"] == "twilio" and rec["caller"] == "+8613800000001" and rec["node_id"] == "test-node"
    kinds = [e["kind"] for e in rec["events"] if e["kind"] != "JOURNEY"]
    assert kinds[:3] == ["CALLSTART", "IVRDONE", "ENTERQUEUE"]


async def test_gather_asks_for_one_key_and_reports_silence(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    g = phone.gather()
    assert g.attrib["input"] == "dtmf" and g.attrib["numDigits"] == "1"
    assert g.attrib["timeout"] == "6" and g.attrib["actionOnEmptyResult"] == "true"
    assert g.attrib["finishOnKey"] == ""
    assert g.attrib["action"] == f"{PUBLIC}/twilio/gather?step=1"
    assert [p.text for p in g.findall("Play")] == [f"{PUBLIC}/twilio/prompts/welcome.wav"]
    await phone.press("1")
    assert [p.text for p in phone.gather().findall("Play")] == [f"{PUBLIC}/twilio/prompts/injury.wav"]
    await phone.press("8")  # invalid: the invalid prompt, then the question again, in one Gather
    g = phone.gather()
    assert [p.text for p in g.findall("Play")] == [f"{PUBLIC}/twilio/prompts/invalid.wav",
                                                   f"{PUBLIC}/twilio/prompts/injury.wav"]
    assert g.attrib["action"] == f"{PUBLIC}/twilio/gather?step=3"
    await phone.silence()  # silence re-asks the question only
    assert [p.text for p in phone.gather().findall("Play")] == [f"{PUBLIC}/twilio/prompts/injury.wav"]


async def test_decided_caller_hears_transfer_then_hold_with_position(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    await phone.press("2")  # accident_query: no seat has that skill, so the caller waits
    doc = phone.doc
    assert doc is not None
    assert [p.text for p in doc.findall("Play")] == [f"{PUBLIC}/twilio/prompts/transfer_human.wav",
                                                     f"{PUBLIC}/twilio/prompts/hold.wav"]
    redirect = doc.find("Redirect")
    assert redirect is not None and redirect.attrib["method"] == "POST"
    await phone.hold_poll()
    assert [p.text for p in phone.doc.findall("Play")] == [f"{PUBLIC}/twilio/prompts/queue_next.wav"]
    second = centre.phone()
    await second.dial_in()
    await second.press("2")
    await second.hold_poll()  # second in line: "there are 1 callers ahead of you"
    assert [p.text.rsplit("/", 1)[1] for p in second.doc.findall("Play")] == [
        "queue_ahead.wav", "n1.wav", "queue_people.wav"]
    assert centre.queue("accident_query")["waiting"] == 2


async def test_missing_wav_is_spoken_in_mandarin(tmp_path: Path, sqlite_url: str) -> None:
    audio = tmp_path / "audio"
    shutil.copytree(DEFAULT_PROMPTS_DIR, audio)
    data = yaml.safe_load(DEFAULT_FLOW_PATH.read_text(encoding="utf-8"))
    data["prompts_dir"] = str(audio)
    flow = flow_from_data(data, DEFAULT_FLOW_PATH.parent)
    (audio / "welcome.wav").unlink()  # lost after the flow was checked
    centre = await start_centre(sqlite_url, tmp_path, SEATS, flow=flow)
    try:
        phone = centre.phone()
        await phone.dial_in()
        g = phone.gather()
        assert g.find("Play") is None
        say = g.find("Say")
        assert say is not None and say.attrib["language"] == "zh-CN"
        assert say.text == flow.nodes["welcome"].prompt.text
    finally:
        await stop_centre(centre)


async def test_prompt_audio_is_served(centre: Centre) -> None:
    r = await centre.http.get("/twilio/prompts/welcome.wav")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    assert r.content == (load_flow(DEFAULT_FLOW_PATH).wav_path("welcome")).read_bytes()
    assert (await centre.http.get("/twilio/prompts/hold.wav")).status_code == 200
    for bad in ("nope", "..%2Fflows%2Fdefault", "Welcome"):
        assert (await centre.http.get(f"/twilio/prompts/{bad}.wav")).status_code == 404


async def test_key_after_the_prompt_ended_is_not_a_barge_in(tmp_path: Path, sqlite_url: str) -> None:
    now = [1000.0]
    centre = await start_centre(sqlite_url, tmp_path, SEATS, clock=lambda: now[0])
    try:
        phone = centre.phone()
        await phone.dial_in()
        now[0] += 1.0   # during the 17.7 s welcome prompt
        await phone.press("1")
        now[0] += 30.0  # long after the injury prompt ended
        await phone.press("1")
        keys = (await centre.record(phone.call_id))["ivr"]["keys"]
        assert [(k["node"], k["barge_in"]) for k in keys] == [("welcome", True), ("injury", False)]
    finally:
        await stop_centre(centre)
