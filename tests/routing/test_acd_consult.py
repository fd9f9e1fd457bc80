"""Warm transfers in the pure ACD: seat 2 reserved for a consult, released without penalty, or
handed the call (seat 1 to wrap-up)."""

from __future__ import annotations

import pytest

from routing.acd import Acd, AcdConfig, IllegalTransition, SeatSpec
from routing.events import EventKind
from routing.status import SeatStatus as S

R, C = "rescue", "insurance_claim"


def spec(seat_id: str, skill: str) -> SeatSpec:
    return SeatSpec(id=seat_id, contact=f"sip:{seat_id}@127.0.0.1:5090", skills={skill: 0}, status=S.AVAILABLE)


def talking() -> Acd:
    """c1 talks to s1 (rescue); s2 and s3 (insurance claims) are free."""
    a = Acd(AcdConfig(rona_not_ready_after=1))
    for sid, skill in (("s1", R), ("s2", C), ("s3", C)):
        a.add_seat(spec(sid, skill), 0.0)
    a.enqueue("c1", R, 2, 1.0)
    a.seat_answered("c1", 2.0, seat_id="s1")
    return a


def st(a: Acd, seat_id: str) -> str:
    return str(a.seat_view(seat_id, 10.0)["status"])


def test_the_consulted_seat_is_reserved_and_offered_nothing_else() -> None:
    a = talking()
    out = a.consult_reserve("c1", 3.0, seat_id="s2", info={"transfer_note": "n"})
    assert [(e.seat_id, e.data["status"]) for e in out] == [("s2", "reserved")]
    assert a.call_view("c1")["info"]["transfer_note"] == "n" and a.call_view("c1")["consult_seat"] == "s2"
    offered = a.enqueue("c2", C, 1, 4.0)
    assert [e.seat_id for e in offered if e.kind is EventKind.OFFER] == ["s3"]   # never s2
    with pytest.raises(IllegalTransition):
        a.consult_reserve("c1", 4.0, seat_id="s3")                               # one consult at a time


def test_a_cancelled_consult_frees_seat_2_without_penalty() -> None:
    a = talking()
    a.consult_reserve("c1", 3.0, skill=C)
    seat = a.call_view("c1")["consult_seat"]
    out = a.consult_release("c1", 5.0, "cancelled")
    assert st(a, seat) == "available" and st(a, "s1") == "on_call"
    assert not any(e.kind is EventKind.RINGNOANSWER for e in out)
    a.enqueue("c2", C, 1, 6.0)                                                    # offered again at once
    assert st(a, seat) == "reserved" and a.seat_view(seat, 6.0)["call_id"] == "c2"


def test_completing_hands_the_call_to_seat_2_and_wraps_seat_1_up() -> None:
    a = talking()
    a.consult_reserve("c1", 3.0, seat_id="s2")
    out = a.consult_complete("c1", 8.0)
    assert out[0].kind is EventKind.COMPLETE and out[0].seat_id == "s1"
    assert st(a, "s1") == "wrap_up" and st(a, "s2") == "on_call"
    assert a.call_view("c1")["seat_id"] == "s2" and a.call_view("c1")["skill"] == C
    a.call_completed("c1", 20.0, "caller")
    assert st(a, "s2") == "wrap_up"


def test_a_caller_leaving_during_the_consult_frees_both_seats() -> None:
    a = talking()
    a.consult_reserve("c1", 3.0, seat_id="s2")
    a.call_completed("c1", 5.0, "caller")
    assert st(a, "s1") == "wrap_up" and st(a, "s2") == "available"


def test_no_seat_to_consult() -> None:
    a = talking()
    for sid in ("s2", "s3"):
        a.set_status(sid, S.NOT_READY, 3.0)
    with pytest.raises(IllegalTransition, match="no seat available"):
        a.consult_reserve("c1", 4.0, skill=C)
    with pytest.raises(IllegalTransition, match="not available"):
        a.consult_reserve("c1", 4.0, seat_id="s2")
    with pytest.raises(IllegalTransition, match="itself"):
        a.consult_reserve("c1", 4.0, seat_id="s1")
