"""The default flow of DOMAIN.md, one row per case: outcome skill, priority and reason."""

from __future__ import annotations

import json

import pytest

from ivr.flow import DEFAULT_FLOW_PATH, Flow
from ivr.interpreter import CancelTimer, Play, Route, StartTimer, StopPlayback
from ivr.loader import load_flow
from tests.ivr.caller import ScriptedCaller

EXAMPLE_FLOW_PATH = DEFAULT_FLOW_PATH.parent / "example-slight-injury.yaml"


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_flow(DEFAULT_FLOW_PATH)


@pytest.fixture(scope="module")
def slight_flow() -> Flow:
    return load_flow(EXAMPLE_FLOW_PATH)


# Which question of the driver node covers each disqualifying condition of the national rules.
DRIVER_CONDITIONS = [
    ("no_valid_licence", "没有有效驾驶证"),
    ("licence_class_mismatch", "准驾车型不符"),
    ("drink_driving", "酒后"),
    ("drug_driving", "吸毒"),
    ("no_or_forged_plates", "号牌"),
    ("dangerous_goods", "危险物品"),
    ("transport_over_time_speeding_overload", "超速"),
    ("deliberate", "故意"),
]


@pytest.mark.parametrize(("condition", "asked_as"), DRIVER_CONDITIONS, ids=[c for c, _ in DRIVER_CONDITIONS])
def test_each_disqualifying_condition_of_the_driver_question_goes_to_police_dispatch(
        flow: Flow, condition: str, asked_as: str) -> None:
    assert asked_as in flow.nodes["driver"].prompt.text, f"{condition} is not asked"
    caller = ScriptedCaller.calling(flow).run("1 2 1 1")
    assert caller.session.outcome is not None
    assert (caller.session.outcome.skill, caller.session.outcome.priority, caller.session.outcome.reason) == (
        "police_dispatch", 1, "disqualified_driver_or_vehicle")


CASES = [
    # id, script, skill, priority, reason, node that decided
    ("injury_or_death", "1 1", "police_dispatch", 1, "injury", "injury"),
    ("immobile_vehicle", "1 2 2", "rescue", 2, "immobile_vehicle", "movable"),
    ("hit_and_run", "1 2 1 2 1", "police_dispatch", 1, "hit_and_run", "fled"),
    ("public_facilities_damaged", "1 2 1 2 2 1", "online_review", 3, "facility_damage", "facility"),
    ("eligible_with_dispute", "1 2 1 2 2 2 1", "online_determination", 3, "liability_dispute", "dispute"),
    ("eligible_no_dispute", "1 2 1 2 2 2 2", "intake_guidance", 4, "eligible_self_settlement", "dispute"),
    ("menu_2_earlier_accident", "2", "accident_query", 4, "earlier_accident_query", "welcome"),
    ("menu_3_insurance_claim", "3", "insurance_claim", 4, "insurance_claim", "welcome"),
    ("menu_0_person", "0", "intake_guidance", 3, "asked_for_human", "welcome"),
    ("0_deep_in_the_flow", "1 2 1 2 2 0", "intake_guidance", 3, "asked_for_human", "facility"),
    ("star_repeats_then_answer", "1 * 1", "police_dispatch", 1, "injury", "injury"),
    ("invalid_key_then_recovers", "1 5 1", "police_dispatch", 1, "injury", "injury"),
    ("hash_is_invalid_then_recovers", "# 1 1", "police_dispatch", 1, "injury", "injury"),
    ("three_invalid_keys", "9 9 9", "intake_guidance", 3, "invalid_input", "welcome"),
    ("invalid_keys_after_progress", "1 2 7 8 9", "intake_guidance", 3, "invalid_input", "movable"),
    ("silence", "T T T", "intake_guidance", 3, "no_input", "welcome"),
    ("silence_mid_flow", "1 2 1 T T T", "intake_guidance", 3, "no_input", "driver"),
    ("silence_twice_then_answer", "T T 1 1", "police_dispatch", 1, "injury", "injury"),
    ("silence_then_invalid_last_decides", "T 9 9", "intake_guidance", 3, "invalid_input", "welcome"),
    ("invalid_then_silence_last_decides", "9 9 T", "intake_guidance", 3, "no_input", "welcome"),
    ("keys_after_full_prompts", "F 1 F 2 F 1 F 2 F 2 F 2 F 2", "intake_guidance", 4, "eligible_self_settlement",
     "dispute"),
    ("too_many_repeats_count_as_invalid", "* * * * * *", "intake_guidance", 3, "invalid_input", "welcome"),
]


@pytest.mark.parametrize(("script", "skill", "priority", "reason", "node"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_domain_case(flow: Flow, script: str, skill: str, priority: int, reason: str, node: str) -> None:
    caller = ScriptedCaller.calling(flow).run(script)
    assert caller.session.done
    assert len(caller.routes) == 1
    outcome = caller.routes[0].outcome
    assert (outcome.skill, outcome.priority, outcome.reason, outcome.node) == (skill, priority, reason, node)
    assert caller.session.outcome == outcome
    record = caller.session.record.to_dict()
    assert (record["skill"], record["priority"], record["reason"]) == (skill, priority, reason)


def test_star_replays_the_current_prompt(flow: Flow) -> None:
    caller = ScriptedCaller.calling(flow).run("1 *")
    assert caller.played == ["welcome", "injury", "injury"]
    assert caller.session.record.keys[-1].result == "repeat"


def test_welcome_plays_on_answer_and_timer_starts_only_when_prompt_ends(flow: Flow) -> None:
    caller = ScriptedCaller.calling(flow)
    assert caller.steps[0] == [Play("welcome", flow.prompts_dir / "welcome.wav", caller.play_token or -1)]
    assert caller.finish_prompt() == [StartTimer(6.0, caller.timer_token or -1)]


def test_key_during_prompt_barges_in_key_after_prompt_cancels_timer(flow: Flow) -> None:
    caller = ScriptedCaller.calling(flow)
    barged = caller.press("1")
    assert isinstance(barged[0], StopPlayback) and isinstance(barged[1], Play) and barged[1].prompt_id == "injury"
    assert caller.session.record.keys[-1].barge_in
    timer = caller.finish_prompt()[0]
    assert isinstance(timer, StartTimer)
    answered = caller.press("2")
    assert answered[0] == CancelTimer(timer.token)
    assert not caller.session.record.keys[-1].barge_in


def test_barge_in_straight_to_an_outcome(flow: Flow) -> None:
    caller = ScriptedCaller.calling(flow).run("1")
    actions = caller.press("1")
    assert isinstance(actions[0], StopPlayback)
    assert isinstance(actions[1], Route) and actions[1].outcome.reason == "injury"


def test_invalid_key_plays_the_invalid_message_then_the_question_then_waits(flow: Flow) -> None:
    caller = ScriptedCaller.calling(flow).run("F")
    caller.press("9")
    assert caller.played[-1] == "invalid"
    assert [a.prompt_id for a in caller.finish_prompt() if isinstance(a, Play)] == ["welcome"]
    assert isinstance(caller.finish_prompt()[0], StartTimer)


def test_silence_replays_the_question_without_the_invalid_message(flow: Flow) -> None:
    caller = ScriptedCaller.calling(flow).run("T")
    assert caller.played == ["welcome", "welcome"]


def test_stale_tokens_are_ignored(flow: Flow) -> None:
    caller = ScriptedCaller.calling(flow)
    welcome_token = caller.play_token
    caller.finish_prompt()
    old_timer = caller.timer_token
    assert old_timer is not None and welcome_token is not None
    caller.press("*")  # the timer of the first play is now stale, and so is the first prompt's end
    assert caller.session.timeout(old_timer, 99.0) == []
    assert caller.session.prompt_finished(welcome_token, 99.0) == []
    # a timer token is not a prompt token and the other way round
    assert caller.session.timeout(caller.play_token or -1, 99.0) == []
    assert caller.session.record.timeouts == []
    assert caller.session.node == "welcome"


def test_events_after_the_outcome_are_ignored(flow: Flow) -> None:
    caller = ScriptedCaller.calling(flow).run("F 1 1")
    session = caller.session
    assert session.done
    assert session.digit("1", 50.0) == []
    assert session.timeout(caller.timer_token or 0, 50.0) == []
    assert session.prompt_finished(caller.play_token or 0, 50.0) == []
    assert session.start(50.0) == []
    assert session.record.decided_at == 2.0  # F (+1 s), 1 (+0.5 s), 1 (+0.5 s)


def test_events_before_the_call_is_answered_are_ignored(flow: Flow) -> None:
    from ivr.interpreter import IvrSession

    session = IvrSession(flow, "early")
    assert session.digit("1", 0.0) == [] and session.timeout(1, 0.0) == [] and session.prompt_finished(1, 0.0) == []
    assert session.record.keys == []


def test_decision_record_is_json_and_tells_the_whole_story(flow: Flow) -> None:
    caller = ScriptedCaller.calling(flow, "c-42").run("1 F 7 T 2 1 2 2 2 2")
    record = json.loads(json.dumps(caller.session.record.to_dict()))
    assert record["call_id"] == "c-42" and record["flow"] == "default"
    assert record["started_at"] == 0.0 and record["decided_at"] == caller.now
    assert [a["node"] for a in record["answers"]] == ["welcome", "injury", "movable", "driver", "fled",
                                                      "facility", "dispute"]
    assert [k["result"] for k in record["keys"]].count("invalid") == 1
    assert record["keys"][1] == {"digit": "7", "node": "injury", "at": 2.0, "result": "invalid", "barge_in": False}
    assert record["timeouts"] == [{"node": "injury", "at": record["timeouts"][0]["at"]}]
    assert record["rule"] == {"kind": "key", "node": "dispute", "key": "2"}
    assert record["outcome"] == {"skill": "intake_guidance", "priority": 4, "reason": "eligible_self_settlement",
                                 "node": "dispute"}
    assert [p["id"] for p in record["prompts"]][:4] == ["welcome", "injury", "invalid", "injury"]


@pytest.mark.parametrize(("script", "kind", "key"), [
    ("0", "any_node", "0"), ("T T T", "timeout_exhausted", None), ("x x x", "invalid_exhausted", None),
    ("3", "key", "3")])
def test_the_rule_that_fired(flow: Flow, script: str, kind: str, key: str | None) -> None:
    rule = ScriptedCaller.calling(flow).run(script).session.record.rule
    assert rule is not None and (rule.kind, rule.key) == (kind, key)


SLIGHT_CASES = [
    ("death_or_serious_injury", "1 1", "police_dispatch", 1, "injury"),
    ("slight_injury_uninsured", "1 2 2", "police_dispatch", 1, "injury_uninsured"),
    ("slight_injury_insured_is_fast_handled", "1 2 1 1 2 2 2 2", "intake_guidance", 4, "eligible_self_settlement"),
    ("no_injury", "1 3 1 2 2 2 1", "online_determination", 3, "liability_dispute"),
]


@pytest.mark.parametrize(("script", "skill", "priority", "reason"), [c[1:] for c in SLIGHT_CASES],
                         ids=[c[0] for c in SLIGHT_CASES])
def test_slight_injury_region_variant(slight_flow: Flow, script: str, skill: str, priority: int,
                                      reason: str) -> None:
    outcome = ScriptedCaller.calling(slight_flow).run(script).session.outcome
    assert outcome is not None and (outcome.skill, outcome.priority, outcome.reason) == (skill, priority, reason)
