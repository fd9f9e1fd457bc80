"""What a seat reads: the IVR's questions and the caller's answers in words, from the real flow."""

from __future__ import annotations

from ivr.flow import DEFAULT_FLOW_PATH
from ivr.loader import load_flow
from ivr.screen_pop import describe
from tests.ivr.caller import ScriptedCaller

FLOW = load_flow(DEFAULT_FLOW_PATH)


def pop_after(script: str) -> dict:
    caller = ScriptedCaller.calling(FLOW).run(script)
    assert caller.session.done
    return describe(FLOW, caller.session.record.to_dict())


def test_eligible_with_dispute_lists_every_question_with_its_answer() -> None:
    pop = pop_after("1 2 1 2 2 2 1")
    assert [(a["question"]["en"], a["key"], a["answer"]["en"]) for a in pop["answers"]] == [
        ("Reason for calling", "1", "reporting a new accident"),
        ("Is anyone injured or killed?", "2", "no one is injured"),
        ("Can the vehicles be moved?", "1", "yes, they can be moved"),
        (FLOW.nodes["driver"].label.en, "2", "none of these"),
        ("Has the other party left the scene?", "2", "no, they are still there"),
        ("Were road facilities or buildings damaged?", "2", "no damage"),
        ("Do the parties disagree about liability?", "1", "yes, liability is disputed"),
    ]
    assert pop["answers"][1]["question"]["zh"] == "是否有人受伤或死亡？"
    assert pop["outcome"]["skill"] == "online_determination"
    assert pop["outcome"]["why"] == {"zh": "符合快处条件，但对责任有争议", "en": "eligible, but the parties dispute liability"}


def test_a_person_asked_for_at_any_node_reads_as_such() -> None:
    pop = pop_after("1 0")
    assert [a["answer"]["en"] for a in pop["answers"]] == ["reporting a new accident", "asked for a person"]
    assert pop["outcome"]["why"]["en"] == "the caller asked for a person"


def test_silence_is_said_as_silence() -> None:
    pop = pop_after("T T T")
    assert pop["answers"] == []
    assert pop["no_input_at"] == ["welcome", "welcome", "welcome"]
    assert pop["outcome"]["why"]["en"] == "the caller pressed no key"


def test_a_node_the_flow_no_longer_has_falls_back_to_its_id() -> None:
    record = {"answers": [{"node": "gone", "digit": "4"}], "outcome": {"skill": "rescue", "reason": "unknown"}}
    pop = describe(FLOW, record)
    assert pop["answers"][0]["question"] == {"zh": "gone", "en": "gone"}
    assert pop["answers"][0]["answer"] == {"zh": "4", "en": "4"}
    assert pop["outcome"]["why"] == {"zh": "unknown", "en": "unknown"}
