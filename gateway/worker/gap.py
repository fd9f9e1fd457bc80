"""What a media worker keeps while its control process is away, to tell the next one (issue 13).

A control process that dies (and is started again by the node's supervisor) misses what happened
on the wire meanwhile: a caller who hung up, a seat that hung up, a seat leg lost mid-talk.  Told
nothing, the new control process would find those calls gone and close them as lost (with a
callback), although they ended normally.  So the worker keeps a *snapshot* of its calls taken the
moment it learns the control process is gone, and the *events* its calls produce after it, in
order.  At the next connection the ``Hello`` carries the snapshot (``calls``, each flagged
``ended`` when it is gone since) and the events follow it: the control process rebuilds each call
as it was and then applies what happened, so a call that ended in the gap ends with its true end
(``completed``, ``abandoned``), and one that changed (seat leg lost) changes as if it had been
there.  Snapshot plus events: each event is applied exactly once, none twice.

Bounded, with a stated overflow policy: events that only matter while the control process drives
the call (DTMF, prompt ends, ringing, statistics, refused INVITEs) are not kept at all; a call's end
is always kept (at most one per call of the snapshot: the buffer cannot grow with it); other events
are kept up to ``max_events``.  Past that the gap's events are given up, loudly: the ``Hello`` then
describes the calls as they are *now* and only the ends are replayed (each with the call's
snapshot), so every call still ends with its true reason; what a dropped event would have told
(a seat leg lost in the gap) is not.

Runs on the PJSIP thread only (``ControlLink.send`` and the hello are called there).
"""

from __future__ import annotations

import logging
from typing import Any

from gateway import channel as ch

log = logging.getLogger("gateway.worker.gap")

#: Events that change what the control process must know of a call: replayed after the hello.
KEPT = (ch.CallEnded, ch.SeatFailed, ch.SeatAnswered, ch.SeatReferred, ch.MonitorAnswered, ch.MonitorEnded,
        ch.ConsultDialing, ch.ConsultAnswered, ch.ConsultEnded, ch.CommandFailed)
MAX_EVENTS = 256


class ControlGap:
    """The calls as they were when the control process went away, and what happened since."""

    def __init__(self, snapshot: list[ch.LiveCall], max_events: int = MAX_EVENTS) -> None:
        self.snapshot = {c.call_id: c for c in snapshot}
        self.max_events = max_events
        self.events: list[Any] = []
        self.overflowed = False
        self.skipped = 0   # not worth replaying (DTMF, prompt ends, statistics...)
        self.dropped = 0   # worth replaying, dropped by the overflow policy

    def add(self, msg: Any) -> None:
        if not isinstance(msg, KEPT):
            self.skipped += 1
            return
        if isinstance(msg, ch.CallEnded):
            self.events.append(msg)   # at most one per call: never dropped
            return
        if self.overflowed or sum(not isinstance(e, ch.CallEnded) for e in self.events) >= self.max_events:
            if not self.overflowed:
                log.error("control_gap_overflow", extra={"kept": len(self.events), "max_events": self.max_events,
                                                         "policy": "replay call ends only; calls as they are now"})
            self.overflowed = True
            self.dropped += 1
            return
        self.events.append(msg)

    def hello_calls(self, now: list[ch.LiveCall]) -> tuple[list[ch.LiveCall], list[Any]]:
        """What the next ``Hello`` says (``calls``) and the events to send after it, in order."""
        live = {c.call_id: c for c in now}
        ended = [c.model_copy(update={"ended": True}) for cid, c in self.snapshot.items() if cid not in live]
        if self.overflowed:
            self.dropped += sum(not isinstance(e, ch.CallEnded) for e in self.events)
            events = [e for e in self.events if isinstance(e, ch.CallEnded) and e.call_id in self.snapshot]
            return [*now, *ended], events
        calls = [*self.snapshot.values()]
        calls = [c if c.call_id in live else c.model_copy(update={"ended": True}) for c in calls]
        calls += [c for cid, c in live.items() if cid not in self.snapshot]  # (none: new callers are refused)
        return calls, list(self.events)


__all__ = ["KEPT", "MAX_EVENTS", "ControlGap"]
