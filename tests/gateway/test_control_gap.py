"""What a media worker keeps while its control process is away (``gateway.worker.gap``), with the
messages the worker really sends: the snapshot and the events after it, and the overflow policy."""

from __future__ import annotations

import logging

import pytest

from gateway import channel as ch
from gateway.worker.gap import ControlGap


def live(call_id: str, **kw: object) -> ch.LiveCall:
    return ch.LiveCall(call_id=call_id, caller="13800000000", started_at=1.0, **kw)  # type: ignore[arg-type]


def ended(call_id: str, by: str = "caller") -> ch.CallEnded:
    return ch.CallEnded(call_id=call_id, ended_by=by, reason="Normal call clearing", code=200, at=5.0)  # type: ignore[arg-type]


def seat_failed(call_id: str, leg: str) -> ch.SeatFailed:
    return ch.SeatFailed(call_id=call_id, leg_id=leg, code=0, reason="seat_media_timeout", at=4.0)


def test_the_hello_describes_the_calls_as_they_were_and_the_events_follow_in_order() -> None:
    gap = ControlGap([live("a", seat_leg_id="a-1", seat_state="bridged", seat_id="s1"), live("b")])
    gap.add(ch.WorkerStats(calls=2, callers=2, at=2.0))      # not kept: the next ones say it again
    gap.add(ch.Dtmf(call_id="b", digit="1", method="rfc4733", at=2.5))
    gap.add(seat_failed("a", "a-1"))
    gap.add(ended("a", "seat"))
    calls, events = gap.hello_calls([live("b")])
    assert [(c.call_id, c.ended, c.seat_state) for c in calls] == [("a", True, "bridged"), ("b", False, None)]
    assert events == [seat_failed("a", "a-1"), ended("a", "seat")]
    assert gap.skipped == 2 and gap.dropped == 0
    hello = ch.Hello(worker_id=0, pid=1, sip_port=5070, max_calls=4, calls=calls, replayed=len(events))
    again = ch.decode_event(ch.encode(hello))  # what the control process reads
    assert again.calls[0].ended and again.replayed == 2


def test_past_its_bound_the_gap_keeps_every_call_end_and_describes_live_calls_as_they_are_now(
        caplog: pytest.LogCaptureFixture) -> None:
    gap = ControlGap([live("a", seat_state="bridged", seat_id="s1", seat_leg_id="a-1"), live("b")], max_events=2)
    with caplog.at_level(logging.ERROR, logger="gateway.worker.gap"):
        for i in range(5):
            gap.add(seat_failed("b", f"b-{i}"))
        gap.add(ended("a"))
    assert [r.getMessage() for r in caplog.records].count("control_gap_overflow") == 1
    calls, events = gap.hello_calls([live("b", seat_state=None)])
    assert [(c.call_id, c.ended) for c in calls] == [("b", False), ("a", True)]
    assert calls[1].seat_state == "bridged"          # the ended call as it was: its end counts right
    assert events == [ended("a")] and gap.overflowed and gap.dropped == 5
