"""The worker's seat leg states: every listed move is taken, every other one refused and logged."""

from __future__ import annotations

import logging

import pytest

from gateway.worker.legs import SEAT_LEG_MOVES, SeatLegState, seat_leg_move

L = SeatLegState
LEGAL = [(src, dst) for src, dsts in SEAT_LEG_MOVES.items() for dst in dsts]
ILLEGAL = [(src, dst) for src in L for dst in L if dst not in SEAT_LEG_MOVES[src]]


def test_a_seat_leg_can_end_from_every_live_state_and_nothing_follows_the_end() -> None:
    assert all(L.ENDED in SEAT_LEG_MOVES[s] for s in L if s is not L.ENDED)
    assert SEAT_LEG_MOVES[L.ENDED] == frozenset()
    assert SEAT_LEG_MOVES[L.BRIDGED] == {L.ENDED}  # a bridged leg is never cancelled


@pytest.mark.parametrize(("src", "dst"), LEGAL)
def test_legal_moves(src: SeatLegState, dst: SeatLegState, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.worker.legs"):
        assert seat_leg_move("c-1", "c-1-1", src, dst)
    assert [r.getMessage() for r in caplog.records] == ["seat_leg"]


@pytest.mark.parametrize(("src", "dst"), ILLEGAL)
def test_illegal_moves_are_refused_and_logged(src: SeatLegState, dst: SeatLegState,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.worker.legs"):
        assert not seat_leg_move("c-1", "c-1-1", src, dst)
    assert [(r.getMessage(), r.levelno, getattr(r, "call_id", None)) for r in caplog.records] == [
        ("seat_leg_unexpected", logging.ERROR, "c-1")]


def test_a_new_leg_starts_dialing_or_retrying() -> None:
    assert seat_leg_move("c-1", "c-1-1", None, L.DIALING)
    assert seat_leg_move("c-1", "c-1-1", None, L.RETRYING)
    assert not seat_leg_move("c-1", "c-1-1", None, L.BRIDGED)
