"""Transitions and fairness rules of the pure ACD, one behaviour per test."""

from __future__ import annotations

import pytest

from routing.acd import (
    Acd,
    AcdConfig,
    DuplicateId,
    IllegalTransition,
    RestoredEntry,
    RestoredSeat,
    SeatSpec,
    SkillPolicy,
    UnknownCall,
    UnknownSkill,
)
from routing.events import Event, EventKind
from routing.seat import LEGAL_TRANSITIONS
from routing.status import SeatStatus as S

R = "rescue"
I = "intake_guidance"  # noqa: E741


def spec(seat_id: str, skills: dict[str, int] | None = None, status: S = S.AVAILABLE) -> SeatSpec:
    return SeatSpec(id=seat_id, contact=f"sip:{seat_id}@127.0.0.1:5090", skills=skills or {R: 0}, status=status)


def offers(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.call_id, e.seat_id) for e in events if e.kind is EventKind.OFFER]  # type: ignore[misc]


def kinds(events: list[Event]) -> list[str]:
    return [e.kind.value for e in events]


def acd(**kw: object) -> Acd:
    return Acd(AcdConfig(**kw))  # type: ignore[arg-type]


def status(a: Acd, seat_id: str) -> str:
    return a.seat_view(seat_id, 0)["status"]


# -- seat transitions ------------------------------------------------------------------------------

def test_transition_table_covers_every_status_and_refuses_the_named_illegal_ones() -> None:
    assert set(LEGAL_TRANSITIONS) == set(S)
    assert S.ON_CALL not in LEGAL_TRANSITIONS[S.LOGGED_OUT]
    assert S.RESERVED not in LEGAL_TRANSITIONS[S.ON_CALL]


@pytest.mark.parametrize("target", [S.RESERVED, S.ON_CALL, S.WRAP_UP])
def test_acd_owned_statuses_cannot_be_requested(target: S) -> None:
    a = acd()
    a.add_seat(spec("s1", status=S.LOGGED_OUT), 0)
    with pytest.raises(IllegalTransition):
        a.set_status("s1", target, 1)
    assert status(a, "s1") == "logged_out"


def test_status_change_of_ringing_or_talking_seat_is_refused() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    with pytest.raises(IllegalTransition):
        a.set_status("s1", S.NOT_READY, 2, "break")
    a.seat_answered("c1", 3)
    with pytest.raises(IllegalTransition):
        a.set_status("s1", S.LOGGED_OUT, 4)
    assert status(a, "s1") == "on_call"


def test_not_ready_carries_a_reason_and_emits_status_event() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    ev = a.set_status("s1", S.NOT_READY, 5, "lunch")
    assert ev[0].kind is EventKind.SEATSTATUS
    assert ev[0].data == {"status": "not_ready", "previous": "available", "reason": "lunch"}
    view = a.seat_view("s1", 6)
    assert (view["status"], view["reason"], view["since"]) == ("not_ready", "lunch", 5)
    assert a.set_status("s1", S.NOT_READY, 7, "lunch") == []
    assert a.set_status("s1", S.NOT_READY, 8, "meeting")[0].data["reason"] == "meeting"


def test_duplicate_seat_unknown_skill_and_duplicate_call_are_refused() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    with pytest.raises(DuplicateId):
        a.add_seat(spec("s1"), 0)
    with pytest.raises(UnknownSkill):
        a.add_seat(spec("s2", {"plumbing": 0}), 0)
    with pytest.raises(UnknownSkill):
        a.enqueue("c0", "plumbing", 1, 0)
    a.set_status("s1", S.NOT_READY, 0, "x")
    a.enqueue("c1", R, 1, 0)
    with pytest.raises(DuplicateId):
        a.enqueue("c1", R, 1, 0)


# -- queue order -----------------------------------------------------------------------------------

def test_queue_orders_by_priority_then_enqueue_time() -> None:
    a = acd()
    a.add_seat(spec("s1", status=S.NOT_READY), 0)
    a.enqueue("late_p4", R, 4, 1)
    a.enqueue("p2_a", R, 2, 2)
    a.enqueue("p2_b", R, 2, 3)
    a.enqueue("p1", R, 1, 4)
    assert [a.queue_position(c) for c in ("p1", "p2_a", "p2_b", "late_p4")] == [1, 2, 3, 4]
    served = []
    a.set_status("s1", S.AVAILABLE, 5)
    for t in range(6, 10):
        call = a.seat_view("s1", t)["call_id"]
        served.append(call)
        a.seat_answered(call, t)
        a.call_completed(call, t + 0.1, "caller")
        a.end_wrap_up("s1", t + 0.2)
    assert served == ["p1", "p2_a", "p2_b", "late_p4"]


def test_enter_queue_reports_position() -> None:
    a = acd()
    a.enqueue("c1", R, 3, 0)
    ev = a.enqueue("c2", R, 1, 1)
    assert ev[0].kind is EventKind.ENTERQUEUE and ev[0].data["position"] == 1
    assert a.queue_position("c1") == 2


# -- strategy --------------------------------------------------------------------------------------

def test_longest_idle_seat_gets_the_call() -> None:
    a = acd()
    a.add_seat(spec("fresh"), 10)
    a.add_seat(spec("idle_long"), 0)
    assert offers(a.enqueue("c1", R, 3, 20)) == [("c1", "idle_long")]


def test_idle_time_counts_from_last_call_end_not_from_wrap_up_end() -> None:
    a = acd(policies={R: SkillPolicy(wrap_up_s=100)})
    a.add_seat(spec("a"), 0)
    a.enqueue("c1", R, 3, 1)
    a.seat_answered("c1", 2)
    a.call_completed("c1", 5, "caller")       # a's call ended at 5
    a.add_seat(spec("b"), 6)                  # b available since 6
    a.end_wrap_up("a", 50)                    # a is available from 50 but idle since 5
    assert offers(a.enqueue("c2", R, 3, 60)) == [("c2", "a")]


def test_lowest_penalty_first_even_if_less_idle() -> None:
    a = acd()
    a.add_seat(spec("backup", {R: 2}), 0)
    a.add_seat(spec("primary", {R: 0}), 10)
    assert offers(a.enqueue("c1", R, 3, 20)) == [("c1", "primary")]
    assert offers(a.enqueue("c2", R, 3, 21)) == [("c2", "backup")]


def test_free_seat_takes_its_lowest_penalty_skill_before_an_older_call_elsewhere() -> None:
    a = acd()
    a.add_seat(spec("s", {R: 0, I: 1}, status=S.NOT_READY), 0)
    a.enqueue("old_intake", I, 3, 1)
    a.enqueue("new_rescue", R, 3, 5)
    assert offers(a.set_status("s", S.AVAILABLE, 6)) == [("new_rescue", "s")]


@pytest.mark.parametrize("strategy", ["fewest_calls", "round_robin"])
def test_pluggable_strategies_spread_calls(strategy: str) -> None:
    a = acd(strategy=strategy, policies={R: SkillPolicy(wrap_up_s=0)})
    for i, s in enumerate(("a", "b", "c")):
        a.add_seat(spec(s), i)
    got = []
    t = 10.0
    for n in range(6):
        (call, seat), = offers(a.enqueue(f"c{n}", R, 3, t))
        got.append(seat)
        a.seat_answered(call, t + 1)
        a.call_completed(call, t + 2, "caller")   # wrap_up_s=0: straight back to available
        t += 3
    assert sorted(got[:3]) == ["a", "b", "c"] and sorted(got[3:]) == ["a", "b", "c"]


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ValueError):
        acd(strategy="random")


# -- offers ----------------------------------------------------------------------------------------

def test_offer_carries_contact_ring_timeout_and_reserves_the_seat() -> None:
    a = acd(ring_timeout_s=15)
    a.add_seat(spec("s1"), 0)
    ev = a.enqueue("c1", R, 2, 10, caller="13800000000", info={"answers": ["1", "2"]})
    offer = next(e for e in ev if e.kind is EventKind.OFFER)
    assert offer.data == {"contact": "sip:s1@127.0.0.1:5090", "ring_timeout_s": 15, "attempt": 1, "priority": 2,
                          "caller": "13800000000", "info": {"answers": ["1", "2"]}, "wait_s": 0,
                          "expires_at": 25}
    assert status(a, "s1") == "reserved" and a.seat_view("s1", 0)["call_id"] == "c1"
    assert a.queue_position("c1") is None and a.next_deadline() == 25


def test_no_double_offer_seat_or_caller() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    assert offers(a.enqueue("c2", R, 1, 2)) == []   # the seat is already ringing for c1
    assert a.queue_position("c2") == 1
    a.add_seat(spec("s2"), 3)
    assert a.call_view("c2")["seat_id"] == "s2"      # type: ignore[index]
    a.add_seat(spec("s3"), 4)                         # nobody left waiting: s3 stays available
    assert status(a, "s3") == "available"


def test_seat_answered_connects_and_late_reports_are_refused() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    ev = a.seat_answered("c1", 4, seat_id="s1")
    assert kinds(ev) == ["CONNECT", "SEATSTATUS"] and ev[0].data["wait_s"] == 3
    assert status(a, "s1") == "on_call"
    with pytest.raises(IllegalTransition):
        a.ring_no_answer("c1", 5)
    with pytest.raises(IllegalTransition):
        a.caller_abandoned("c1", 5)
    with pytest.raises(UnknownCall):
        a.seat_answered("nope", 5)


def test_report_about_another_seat_is_refused() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    with pytest.raises(IllegalTransition):
        a.seat_answered("c1", 2, seat_id="s9")


# -- ring-no-answer and seat failures ----------------------------------------------------------------

def test_rona_by_tick_sets_seat_not_ready_and_offers_next_seat() -> None:
    a = acd(ring_timeout_s=20)
    a.add_seat(spec("first"), 0)
    a.add_seat(spec("second"), 1)
    a.enqueue("c1", R, 3, 10)
    assert a.tick(29.9) == []
    ev = a.tick(30)
    assert kinds(ev)[:2] == ["RINGNOANSWER", "SEATSTATUS"]
    assert ev[1].data["reason"] == "no answer"
    assert offers(ev) == [("c1", "second")]
    assert next(e for e in ev if e.kind is EventKind.OFFER).data["attempt"] == 2


def test_rona_below_threshold_keeps_seat_available_but_not_immediately_same_call() -> None:
    a = acd(rona_not_ready_after=2, reject_delay_s=5)
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    ev = a.ring_no_answer("c1", 3)
    assert status(a, "s1") == "available" and offers(ev) == []
    assert a.queue_position("c1") == 1
    assert a.next_deadline() == 8
    assert offers(a.tick(8)) == [("c1", "s1")]
    a.ring_no_answer("c1", 10)                        # second consecutive RONA
    assert (status(a, "s1"), a.seat_view("s1", 0)["reason"]) == ("not_ready", "no answer")


def test_rona_caller_goes_back_ahead_of_later_callers_keeping_enqueue_time() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("first", R, 3, 1)                 # rings s1
    a.enqueue("second", R, 3, 2)
    a.enqueue("third", R, 3, 3)
    a.ring_no_answer("first", 4)                # s1 -> not_ready
    assert [a.queue_position(c) for c in ("first", "second", "third")] == [1, 2, 3]
    a.add_seat(spec("s2"), 5)
    ev = offers(a.set_status("s1", S.AVAILABLE, 6))
    assert a.call_view("first")["seat_id"] == "s2"   # type: ignore[index]
    assert ev == [("second", "s1")]
    # the wait keeps counting from the first enqueue
    assert a.seat_answered("first", 11)[0].data["wait_s"] == 10


def test_consecutive_rona_count_resets_after_an_answer() -> None:
    a = acd(rona_not_ready_after=2, reject_delay_s=1, policies={R: SkillPolicy(wrap_up_s=0)})
    a.add_seat(spec("s1"), 0)
    a.add_seat(spec("s2"), 100)
    a.enqueue("c1", R, 3, 1)          # s1
    a.ring_no_answer("c1", 2)         # s1 rona 1 -> c1 to s2
    a.seat_answered("c1", 3)
    a.tick(3.5)                       # s1's 1 s reject delay is over
    a.enqueue("c2", R, 3, 4)          # s1
    a.seat_answered("c2", 5)
    a.call_completed("c2", 6, "caller")
    a.enqueue("c3", R, 3, 7)
    assert a.call_view("c3")["seat_id"] == "s1"   # type: ignore[index]
    a.ring_no_answer("c3", 8)
    assert status(a, "s1") == "available"          # only one consecutive RONA since the answer


@pytest.mark.parametrize("reason", ["declined", "busy", "hangup_before_bridge"])
def test_declining_seat_is_held_back_and_never_offered_that_call_again(reason: str) -> None:
    a = acd(reject_delay_s=5)
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    ev = a.seat_failed("c1", 2, reason)
    assert ev[0].kind is EventKind.SEATFAILED and ev[0].data["reason"] == reason
    assert status(a, "s1") == "available" and offers(ev) == []
    a.enqueue("c2", R, 3, 3)
    assert a.queue_position("c2") == 2                # held back: no offer during the delay
    ev = a.tick(7)
    assert offers(ev) == [("c2", "s1")]               # c1 is first in line but s1 declined it
    assert a.queue_position("c1") == 1


def test_a_local_failure_keeps_the_seat_available_and_retries_the_same_call_after_the_delay() -> None:
    """The gateway could not dial (its own fault): no penalty, no exclusion, but no hot loop either."""
    a = acd(reject_delay_s=5)
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    ev = a.seat_failed("c1", 2, "local_error", detail="dial failed: Unsupported transport")
    assert ev[0].data == {"reason": "local_error", "attempt": 1, "detail": "dial failed: Unsupported transport"}
    assert status(a, "s1") == "available" and offers(ev) == []   # not re-offered in the same breath
    assert a.queue_position("c1") == 1                              # the caller keeps the head
    assert offers(a.tick(7)) == [("c1", "s1")]                      # the same seat, once the delay is over


def test_unreachable_seat_goes_not_ready() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.add_seat(spec("s2"), 1)
    a.enqueue("c1", R, 3, 2)
    ev = a.seat_failed("c1", 3, "unreachable")
    assert (status(a, "s1"), a.seat_view("s1", 0)["reason"]) == ("not_ready", "unreachable")
    assert offers(ev) == [("c1", "s2")]


# -- abandon ---------------------------------------------------------------------------------------

def test_abandon_while_waiting_removes_and_counts() -> None:
    a = acd(callback_after_s=1000)
    a.enqueue("c1", R, 3, 0)
    a.enqueue("c2", R, 3, 1)
    ev = a.caller_abandoned("c1", 5)
    assert kinds(ev) == ["ABANDON"] and ev[0].data["position"] == 1 and ev[0].data["wait_s"] == 5
    assert a.queue_position("c2") == 1 and a.call_state("c1") is None
    q = next(v for v in a.queues_view(6) if v["skill"] == R)
    assert (q["waiting"], q["abandoned"], q["offered"]) == (1, 1, 2)


def test_abandon_while_ringing_frees_the_seat_for_the_next_caller() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    a.enqueue("c2", R, 3, 2)
    ev = a.caller_abandoned("c1", 3)
    assert ev[0].kind is EventKind.ABANDON and ev[0].seat_id == "s1"
    assert offers(ev) == [("c2", "s1")]


# -- wrap-up ---------------------------------------------------------------------------------------

def test_wrap_up_for_the_skill_then_available_and_early_end() -> None:
    a = acd(policies={R: SkillPolicy(wrap_up_s=30)})
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    a.seat_answered("c1", 2)
    ev = a.call_completed("c1", 62, "seat")
    assert kinds(ev) == ["COMPLETE", "SEATSTATUS"] and ev[0].data["talk_s"] == 60
    assert status(a, "s1") == "wrap_up" and a.next_deadline() == 92
    a.enqueue("c2", R, 3, 70)
    assert a.queue_position("c2") == 1
    ev = a.tick(92)
    assert ev[0].data["previous"] == "wrap_up" and ev[0].data["handle_s"] == 90
    assert offers(ev) == [("c2", "s1")]
    a.seat_answered("c2", 93)
    a.call_completed("c2", 103, "caller")
    ev = a.end_wrap_up("s1", 105)
    assert status(a, "s1") == "available" and ev[0].data["wrap_s"] == 2
    with pytest.raises(IllegalTransition):
        a.end_wrap_up("s1", 106)
    q = next(v for v in a.queues_view(106) if v["skill"] == R)
    assert q["aht_s"] == (90 + 12) / 2


def test_going_not_ready_from_wrap_up_still_counts_handle_time() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    a.seat_answered("c1", 2)
    a.call_completed("c1", 12, "seat")
    a.set_status("s1", S.NOT_READY, 15, "break")
    assert a.metrics.cumulative(R).aht_s == 13
    assert a.tick(100) == []                    # the wrap-up timer went stale


def test_completing_a_call_that_is_not_connected_is_refused() -> None:
    a = acd()
    a.enqueue("c1", R, 3, 0)
    with pytest.raises(IllegalTransition):
        a.call_completed("c1", 1, "caller")


# -- escalation ------------------------------------------------------------------------------------

def test_escalates_after_timeout_keeping_enqueue_time() -> None:
    a = acd(policies={R: SkillPolicy(escalate_after_s=60, escalate_to=I)})
    a.add_seat(spec("intake", {I: 0}, status=S.NOT_READY), 0)
    a.enqueue("older_intake", I, 3, 5)
    a.enqueue("c1", R, 3, 0)
    assert a.next_deadline() == 60
    ev = a.tick(60)
    assert ev[0].kind is EventKind.ESCALATE and ev[0].data["from"] == R and ev[0].data["to"] == I
    assert a.queue_position("c1") == 1        # enqueued at 0: ahead of the intake call from t=5
    assert offers(a.set_status("intake", S.AVAILABLE, 61)) == [("c1", "intake")]
    views = {v["skill"]: v for v in a.queues_view(62)}
    assert (views[R]["escalated_out"], views[I]["escalated_in"], views[R]["offered"], views[I]["offered"]) == (1, 1, 1, 1)


def test_no_escalation_if_answered_and_no_loop() -> None:
    a = acd(policies={R: SkillPolicy(escalate_after_s=10, escalate_to=I),
                      I: SkillPolicy(escalate_after_s=10, escalate_to=R)})
    a.enqueue("c1", R, 3, 0)
    assert kinds(a.tick(10)) == ["ESCALATE"]
    assert a.tick(1000) == []                 # R already visited: stays in intake
    assert a.call_view("c1")["skill"] == I    # type: ignore[index]
    a.add_seat(spec("r1"), 1000)
    a.enqueue("c2", R, 3, 1001)
    a.seat_answered("c2", 1002)
    assert a.call_view("c2")["state"] == "connected"   # type: ignore[index]
    assert a.tick(2000) == []                 # answered before its escalation was due: no ESCALATE
    assert a.call_view("c2")["skill"] == R    # type: ignore[index]


def test_bad_escalation_policy_is_a_config_error() -> None:
    with pytest.raises(UnknownSkill):
        acd(policies={R: SkillPolicy(escalate_after_s=5, escalate_to="nowhere")})


# -- callbacks -------------------------------------------------------------------------------------

def test_long_waiters_who_hang_up_go_on_the_callback_list_in_original_order() -> None:
    a = acd(callback_after_s=30)
    a.enqueue("b", R, 2, 10, caller="139")
    a.enqueue("a", I, 4, 0, caller="138")
    a.enqueue("short", R, 3, 50, caller="137")
    ev = a.caller_abandoned("b", 100)
    assert kinds(ev) == ["ABANDON", "CALLBACK"]
    a.caller_abandoned("a", 110)
    assert kinds(a.caller_abandoned("short", 60)) == ["ABANDON"]   # waited only 10 s
    assert [c.caller for c in a.callbacks.pending()] == ["138", "139"]
    a.add_seat(spec("intake", {I: 0}, status=S.NOT_READY), 120)
    a.add_seat(spec("rescuer", {R: 0}, status=S.NOT_READY), 120)
    with pytest.raises(IllegalTransition):
        a.take_callback("rescuer", 121)
    taken = a.take_callback("intake", 121)
    assert taken[0].data["caller"] == "138" and taken[0].data["action"] == "taken"
    a.complete_callback(taken[0].data["callback_id"], 130)
    assert a.take_callback("intake", 131)[0].data["caller"] == "139"
    assert a.take_callback("intake", 132) == []
    assert {v["skill"]: v["callbacks"] for v in a.queues_view(133)}[R] == 1


# -- seats added/removed ---------------------------------------------------------------------------

def test_removing_a_ringing_seat_requeues_its_call_and_talking_seat_is_refused() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.add_seat(spec("s2"), 1)
    a.enqueue("c1", R, 3, 2)
    ev = a.remove_seat("s1", 3)
    assert "SEATREMOVED" in kinds(ev) and offers(ev) == [("c1", "s2")]
    a.seat_answered("c1", 4)
    with pytest.raises(IllegalTransition):
        a.remove_seat("s2", 5)


def test_update_seat_changes_skills_and_reindexes() -> None:
    a = acd()
    a.add_seat(spec("s1", {R: 0}), 0)
    a.enqueue("c1", I, 3, 1)
    ev = a.update_seat(spec("s1", {R: 0, I: 0}), 2)
    assert offers(ev) == [("c1", "s1")]


# -- restart ---------------------------------------------------------------------------------------

def test_restore_keeps_statuses_and_places() -> None:
    a = acd(policies={R: SkillPolicy(wrap_up_s=30)})
    seats = [
        RestoredSeat(spec("busy"), S.ON_CALL, None, 5),
        RestoredSeat(spec("ringing"), S.RESERVED, None, 6),
        RestoredSeat(spec("paused"), S.NOT_READY, "lunch", 7),
        RestoredSeat(spec("wrapping", {R: 0}), S.WRAP_UP, None, 90),
        RestoredSeat(spec("out"), S.LOGGED_OUT, None, 1),
    ]
    waiting = [RestoredEntry("later", R, 3, 50), RestoredEntry("earlier", R, 3, 40, caller="1")]
    ev = a.restore(seats, waiting, 100)
    assert not offers(ev)
    got = {v["id"]: (v["status"], v["reason"]) for v in a.seats_view(100)}
    assert got == {"busy": ("not_ready", "restart"), "ringing": ("not_ready", "restart"),
                   "paused": ("not_ready", "lunch"), "wrapping": ("wrap_up", None), "out": ("logged_out", None)}
    assert [a.queue_position("earlier"), a.queue_position("later")] == [1, 2]
    assert a.next_deadline() == 120
    assert offers(a.tick(120)) == [("earlier", "wrapping")]
    assert a.seat_answered("earlier", 121)[0].data["wait_s"] == 81


def test_restore_offers_to_available_seats() -> None:
    a = acd()
    ev = a.restore([RestoredSeat(spec("s1"), S.AVAILABLE, None, 0)], [RestoredEntry("c1", R, 3, 1)], 2)
    assert offers(ev) == [("c1", "s1")]


# -- views -----------------------------------------------------------------------------------------

def test_queues_view_has_contract_keys_and_realtime_figures() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.add_seat(spec("s2", status=S.NOT_READY), 0)
    a.enqueue("c1", R, 3, 1)
    a.enqueue("c2", R, 3, 2)
    a.enqueue("c3", R, 1, 5)
    view = next(v for v in a.queues_view(10) if v["skill"] == R)
    contract = {"skill", "waiting", "longest_wait_s", "seats_by_status", "offered", "answered", "abandoned",
                "answered_within_sl", "service_level", "asa_s", "aht_s", "rona", "callbacks",
                "escalated_out", "escalated_in"}
    assert contract <= set(view)
    assert view["waiting"] == 2 and view["longest_wait_s"] == 8     # c2 (enqueued at 2), not the p1 call
    assert view["seats_by_status"]["reserved"] == 1 and view["seats_by_status"]["not_ready"] == 1
    assert set(view["seats_by_status"]) == {s.value for s in S}
    seats = {v["id"]: v for v in a.seats_view(10)}
    assert set(seats["s1"]) >= {"id", "name", "contact", "status", "reason", "since", "skills", "call_id"}
    assert seats["s1"]["call_id"] == "c1"


# -- a seat lost mid-conversation (issue 13) -----------------------------------------------------

def test_a_seat_lost_mid_talk_goes_not_ready_with_its_reason_and_is_no_ring_no_answer() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    a.seat_answered("c1", 2)
    out = a.seat_lost("c1", 20, "seat_media_timeout")
    assert kinds(out) == ["COMPLETE", "SEATSTATUS", "SEATSTATUS"]
    assert out[0].data["ended_by"] == "seat_lost" and out[0].data["talk_s"] == 18
    assert [e.data["status"] for e in out[1:]] == ["wrap_up", "not_ready"]
    view = a.seat_view("s1", 20)
    assert view["status"] == "not_ready" and view["reason"] == "seat_media_timeout"
    assert a.metrics.cumulative(R).rona == 0
    with pytest.raises(UnknownCall):
        a.seat_lost("c1", 21, "seat_media_timeout")


def test_a_call_not_connected_cannot_lose_its_seat() -> None:
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)  # ringing s1
    with pytest.raises(IllegalTransition):
        a.seat_lost("c1", 2, "seat_media_timeout")
    assert status(a, "s1") == "reserved"


def test_the_requeued_caller_keeps_its_place_ahead_of_later_callers_of_its_priority() -> None:
    """What the journey does after a lost seat: enqueue again with ``place_at`` = its first queueing."""
    a = acd()
    a.add_seat(spec("s1"), 0)
    a.enqueue("c1", R, 3, 1)
    a.seat_answered("c1", 2)
    a.enqueue("c2", R, 3, 5)       # arrived later, waiting
    a.seat_lost("c1", 20, "seat_media_timeout")
    a.enqueue("c1", R, 3, 20, place_at=1)
    assert a.queue_position("c1") == 1 and a.queue_position("c2") == 2
    a.add_seat(spec("s2"), 21)
    assert a.call_state("c1") == "ringing" and a.call_view("c1")["seat_id"] == "s2"
    assert a.queue_position("c2") == 1
