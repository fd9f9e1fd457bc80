"""The call journey's transition table, walked through the real driver over the real routing service.

Every legal move is taken (and leaves one JOURNEY event with from/to/cause), every move the table
does not have is refused (stage unchanged, an error logged with the call id), and the table printed
in docs/ARCHITECTURE.md is the one the code runs.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from journey.call import CallJourney
from journey.failures import SeatOutcome, from_sip, from_twilio
from journey.notifier import JourneyNotifier
from journey.stages import TRANSITIONS, Cause, Stage, table_markdown
from routing.acd import Acd, AcdConfig, SeatSpec
from routing.events import Event, EventKind
from routing.service import RoutingService
from routing.status import SeatStatus

ROOT = Path(__file__).resolve().parents[2]


def seat(sid: str, skill: str) -> SeatSpec:
    return SeatSpec(id=sid, contact=f"sip:{sid}@127.0.0.1:5091", skills={skill: 0}, status=SeatStatus.AVAILABLE)


async def started(*seats: SeatSpec) -> tuple[RoutingService, asyncio.Queue[Event]]:
    routing = RoutingService(Acd(AcdConfig(reject_delay_s=5.0)))
    await routing.start(list(seats))
    return routing, routing.subscribe()


def drained(q: asyncio.Queue[Event]) -> list[Event]:
    out = []
    while not q.empty():
        out.append(q.get_nowait())
    return out


def journey(routing: RoutingService, call_id: str = "c-1") -> CallJourney:
    return CallJourney(call_id=call_id, caller="13800000001", ingress="sip", node_id="n1", started_at=0.0,
                       routing=routing, notifier=JourneyNotifier(routing, "sip"))


@pytest.mark.parametrize(("src", "cause"), list(TRANSITIONS))
async def test_every_legal_move_is_taken_and_published(src: Stage, cause: Cause) -> None:
    routing, q = await started()
    try:
        j = journey(routing)
        j.stage = src
        assert j._move(cause, 1.0, "walk")
        assert j.stage is TRANSITIONS[(src, cause)]
        moves = [e for e in drained(q) if e.kind is EventKind.JOURNEY]
        assert [(e.call_id, e.data["from"], e.data["to"], e.data["cause"]) for e in moves] == [
            ("c-1", src.value, TRANSITIONS[(src, cause)].value, cause.value)]
    finally:
        await routing.stop()


ILLEGAL = [(s, c) for s in Stage for c in Cause if (s, c) not in TRANSITIONS]


@pytest.mark.parametrize(("src", "cause"), ILLEGAL)
async def test_every_other_move_is_refused_and_logged(src: Stage, cause: Cause,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    routing, q = await started()
    try:
        j = journey(routing)
        j.stage = src
        with caplog.at_level(logging.ERROR, logger="journey"):
            assert not j._move(cause, 1.0)
        assert j.stage is src
        assert not [e for e in drained(q) if e.kind is EventKind.JOURNEY]
        errors = [r for r in caplog.records if r.getMessage() == "journey_unexpected_event"]
        assert [(r.call_id, r.stage, r.cause) for r in errors] == [("c-1", src.value, cause.value)]  # type: ignore[attr-defined]
    finally:
        await routing.stop()


def test_the_documented_table_is_the_table_the_code_runs() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    assert table_markdown() in doc


async def test_a_call_walks_from_answer_to_end_through_the_acd() -> None:
    routing, q = await started(seat("s1", "rescue"))
    try:
        j = journey(routing)
        j.answered(0.0, "122")
        assert j.routed("rescue", 2, "immobile", {"answers": []}, 1.0)
        # the ACD offered s1 at once; the adapter hears it as a routing event
        offer = next(e for e in drained(q) if e.kind is EventKind.OFFER)
        assert j.routing_event(offer, 1.0) is not None and j.stage is Stage.OFFERED
        assert j.seat_ringing("s1", 1.2) and j.stage is Stage.RINGING_SEAT
        assert j.seat_answered("s1", 2.0, 2.05) and j.stage is Stage.TALKING
        assert routing.acd.seat_view("s1", 0.0)["status"] == "on_call"
        assert j.hung_up("caller", 9.0) == "completed" and j.stage is Stage.WRAP_UP
        assert j.closed(9.1, "rec-1") and j.stage is Stage.ENDED
        events = drained(q)
        end = [e for e in events if e.kind is EventKind.CALLEND]
        assert [(e.data["reason"], e.data["ended_by"], e.data["recording_id"]) for e in end] == [
            ("completed", "caller", "rec-1")]
        assert [s for s, _, _ in j.history] + [j.stage] == [
            Stage.ANSWERED, Stage.IN_IVR, Stage.QUEUED, Stage.OFFERED, Stage.RINGING_SEAT, Stage.TALKING,
            Stage.WRAP_UP, Stage.ENDED]
        # an event the journey does not expect now changes nothing
        assert not j.closed(10.0)
    finally:
        await routing.stop()


# offered_again: at once. A local failure is retried after the reject delay, not in the same breath
# (tests/routing/test_acd.py); a refusal never offers this call to that seat again.
@pytest.mark.parametrize(("outcome", "seat_after", "offered_again"), [
    (from_sip(0, "local_error: dial failed: too many"), "available", False),  # our fault: no penalty
    (from_sip(486, "Busy Here"), "available", False),                         # refused: not this call again
    (from_sip(503, "Service Unavailable"), "not_ready", False),               # unreachable
    (from_twilio("no-answer"), "not_ready", False),                           # RONA
])
async def test_one_failure_mapping_for_both_ingresses(outcome: SeatOutcome, seat_after: str,
                                                      offered_again: bool) -> None:
    routing, q = await started(seat("s1", "rescue"))
    try:
        j = journey(routing)
        j.answered(0.0, "122")
        j.routed("rescue", 2, "immobile", {}, 1.0)
        j.routing_event(next(e for e in drained(q) if e.kind is EventKind.OFFER), 1.0)
        assert j.seat_not_taken("s1", outcome, 3.0)
        events = drained(q)
        offers = [e for e in events if e.kind is EventKind.OFFER]
        assert bool(offers) is offered_again, events
        if offered_again:
            assert j.routing_event(offers[0], 3.0) is not None and j.stage is Stage.OFFERED
        else:
            assert routing.acd.seat_view("s1", 3.0)["status"] == seat_after
            assert j.stage is Stage.QUEUED and routing.acd.queue_position("c-1") == 1
        # a second report about the same leg is stale: nothing moves
        stage = j.stage
        assert not j.seat_not_taken("s9", outcome, 3.5)
        assert j.stage is stage
    finally:
        await routing.stop()


def test_sip_and_twilio_failures_share_kinds() -> None:
    assert from_sip(486, "Busy Here").kind == from_twilio("busy").kind == "busy"
    assert from_sip(0, "worker ring timeout", cancelled=True).kind == from_twilio("no-answer").kind == "rona"
    assert from_sip(480, "Temporarily Unavailable").kind == from_twilio("failed").kind == "unreachable"
    assert from_sip(0, "local_error: dial failed").kind == "local_error"
    assert not from_sip(0, "local_error: dial failed").is_sip_error
    assert from_sip(603, "Decline").is_sip_error


@pytest.mark.parametrize("lost_in", [Stage.IN_IVR, Stage.QUEUED, Stage.RINGING_SEAT, Stage.TALKING])
async def test_a_lost_line_is_called_back_with_the_callers_number_and_answers(lost_in: Stage) -> None:
    """``line_lost`` (a media worker died): out of the ACD without counting as abandoned, the seat
    rung goes back to available unpenalised, and the callback carries what the seat needs."""
    routing, q = await started(seat("s1", "rescue"))
    try:
        j = journey(routing)
        j.answered(0.0, "122")
        answers = {"answers": [{"node": "welcome", "digit": "1", "at": 0.5}]}
        if lost_in is Stage.QUEUED:
            assert j.routed("online_review", 3, "facility", answers, 1.0)  # no seat of that skill: waits
            assert routing.acd.queue_position("c-1") == 1
        elif lost_in is not Stage.IN_IVR:
            assert j.routed("rescue", 2, "immobile", answers, 1.0)
            offer = next(e for e in drained(q) if e.kind is EventKind.OFFER)
            assert j.routing_event(offer, 1.0) is not None and j.seat_ringing("s1", 1.2)
            if lost_in is Stage.TALKING:
                assert j.seat_answered("s1", 2.0, 2.05)
        assert j.stage is lost_in
        drained(q)
        assert j.line_lost("lost_worker_failure", 5.0, record=answers) == "lost_worker_failure"
        assert j.stage is Stage.WRAP_UP and not j.line_lost("lost_worker_failure", 5.1)
        assert j.closed(5.2)
        events = drained(q)
        assert [e for e in events if e.kind.value == "ABANDON"] == []
        (cb,) = routing.acd.callbacks.active()
        assert cb.call_id == "c-1" and cb.caller == "13800000001", cb
        assert cb.info["lost"] == "lost_worker_failure" and cb.info["lost_in"] == lost_in.value
        assert cb.info["ivr"]["answers"] == answers["answers"]
        assert routing.acd.call_view("c-1") is None
        seat_after = routing.acd.seat_view("s1", 5.3)
        if lost_in is Stage.TALKING:
            assert seat_after["status"] == "wrap_up"
        else:
            assert seat_after["status"] == "available"
        end = [e for e in events if e.kind is EventKind.CALLEND]
        assert [(e.data["reason"], e.data["ended_by"]) for e in end] == [("lost_worker_failure", "error")]
    finally:
        await routing.stop()
