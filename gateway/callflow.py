"""One call's journey in the control process, as explicit states.

    IVR --Route--> QUEUED --OFFER--> RINGING --seat answered--> TALKING --BYE--> ENDED
                     ^                  |
                     +--RONA / seat failed (back to the head of the queue)

The IVR decides (``ivr.IvrSession``), the ACD decides who takes the call (``routing``); this
module only turns their decisions into worker commands and wire events back into decisions.  Its
promises: the caller is never hung up on by a hand-off, hears the hold message and their queue
position while waiting (never silence), and every path ends at a human seat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from gateway import channel as ch
from ivr.flow import Flow
from ivr.interpreter import CancelTimer, IvrSession, Play, Route, StartTimer, StopPlayback
from ivr.prompts import hold_prompts, queue_position_prompts, transfer_prompts
from ivr.screen_pop import describe
from routing.errors import RoutingError
from routing.events import Event, EventKind

log = logging.getLogger("gateway.callflow")


class CallState(StrEnum):
    IVR = "ivr"
    QUEUED = "queued"
    RINGING = "ringing"
    TALKING = "talking"
    ENDED = "ended"


class Media(Protocol):
    """What the call flow needs from the media side (the worker pool)."""

    def send(self, call_id: str, cmd: Any) -> bool: ...


class RecordingSink(Protocol):
    async def call_started(self, call_id: str, partial_path: str | None, started_at: float,
                           error: str | None) -> str | None: ...
    async def call_ended(self, call_id: str, partial_path: str | None, error: str | None) -> str | None: ...


def seat_failure_reason(code: int, reason: str) -> str:
    """Map a seat leg's SIP outcome onto the ACD's failure kinds."""
    if code in (486, 600):
        return "busy"
    if code in (603, 403):
        return "declined"
    if code in (0, 404, 408, 410, 480, 500, 502, 503, 504) or code >= 500:
        return "unreachable"
    if 200 <= code < 300:
        return "hangup_before_bridge"
    return "unreachable"


@dataclass
class CallFlow:
    call_id: str
    caller: str
    started_at: float
    ivr: IvrSession
    state: CallState = CallState.IVR
    timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    leg_id: str | None = None
    seat_id: str | None = None
    skill: str | None = None
    offered_at: float | None = None
    attempts: int = 0
    hold_token: int = 1_000_000
    hold_handle: asyncio.TimerHandle | None = None
    recording_path: str | None = None
    recording_id: str | None = None
    #: What the queue entry carries to the seat (IVR record, screen pop); kept for a re-queue.
    info: dict[str, Any] = field(default_factory=dict)


class CallDirector:
    """Drives every live call of this node (runs on the control process's event loop)."""

    def __init__(self, *, flow: Flow, routing: Any, media: Media, recordings: RecordingSink | None,
                 node_id: str, sip_host: str, caller_id_header: str = "from+pai",
                 clock: Callable[[], float] = time.time,
                 on_handoff: Callable[[float], None] | None = None) -> None:
        self.flow = flow
        self.routing = routing
        self.media = media
        self.recordings = recordings
        self.node_id = node_id
        self.sip_host = sip_host
        self.caller_id_header = caller_id_header
        self.clock = clock
        self.on_handoff = on_handoff
        self.calls: dict[str, CallFlow] = {}
        self._loop = asyncio.get_event_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        routing.on_event(self._routing_event)

    def _routing(self, command: str, call_id: str, *args: Any, **kw: Any) -> list[Event]:
        """Tell the ACD what happened on the wire.  A late or duplicate report (the ACD already
        moved on, e.g. its own ring timer fired first) is refused by the ACD: logged, not fatal."""
        try:
            return list(getattr(self.routing, command)(call_id, *args, **kw))
        except RoutingError as e:
            log.info("routing_report_refused", extra={"call_id": call_id, "command": command, "error": str(e)})
            return []

    # ------------------------------------------------------------------------------------------
    # worker events
    # ------------------------------------------------------------------------------------------
    def worker_event(self, worker_id: int, msg: Any) -> None:
        if isinstance(msg, ch.CallStarted):
            self._call_started(msg, worker_id)
            return
        if isinstance(msg, ch.CallRejected):
            log.info("call_rejected", extra={"code": msg.code, "callee": msg.callee, "caller": msg.caller})
            return
        call = self.calls.get(getattr(msg, "call_id", "") or "")
        if call is None:
            return
        if isinstance(msg, ch.Dtmf):
            log.info("dtmf", extra={"call_id": call.call_id, "digit": msg.digit, "method": msg.method})
            if call.state is CallState.IVR:
                self._apply(call, call.ivr.digit(msg.digit, self.clock()))
        elif isinstance(msg, ch.PromptFinished):
            if call.state is CallState.IVR:
                self._apply(call, call.ivr.prompt_finished(msg.token, self.clock()))
            elif call.state in (CallState.QUEUED, CallState.RINGING) and msg.token == call.hold_token:
                self._announce(call)
        elif isinstance(msg, ch.SeatRinging):
            log.info("seat_ringing", extra={"call_id": call.call_id, "seat_id": call.seat_id})
        elif isinstance(msg, ch.SeatAnswered):
            self._seat_answered(call, msg)
        elif isinstance(msg, ch.SeatFailed):
            self._seat_failed(call, msg)
        elif isinstance(msg, ch.CallEnded):
            self._call_ended(call, msg.ended_by, msg.reason, msg.recording_error)
        elif isinstance(msg, ch.CommandFailed):
            log.warning("worker_command_failed", extra={"call_id": call.call_id, "command": msg.command,
                                                        "error": msg.error})

    def _call_started(self, msg: ch.CallStarted, worker_id: int) -> None:
        now = self.clock()
        call = CallFlow(call_id=msg.call_id, caller=msg.caller, started_at=msg.at,
                        ivr=IvrSession(self.flow, msg.call_id), recording_path=msg.recording_path)
        self.calls[msg.call_id] = call
        log.info("call_started", extra={"call_id": msg.call_id, "caller": msg.caller, "worker_id": worker_id})
        self.routing.record([Event(EventKind.CALLSTART, msg.at, call_id=msg.call_id, data={
            "caller": msg.caller, "callee": msg.callee, "ingress": "sip", "node_id": self.node_id,
            "caller_raw": msg.caller_raw,
            "answered_at": msg.at, "sip_call_id": msg.sip_call_id, "worker_id": worker_id})])
        if self.recordings is not None:
            self._spawn(self._recording_started(call, msg.recording_error))
        self._apply(call, call.ivr.start(now))

    async def _recording_started(self, call: CallFlow, error: str | None) -> None:
        assert self.recordings is not None
        call.recording_id = await self.recordings.call_started(call.call_id, call.recording_path, call.started_at,
                                                               error)

    # ------------------------------------------------------------------------------------------
    # IVR actions
    # ------------------------------------------------------------------------------------------
    def _apply(self, call: CallFlow, actions: list[Any]) -> None:
        for a in actions:
            if isinstance(a, Play):
                self.media.send(call.call_id, ch.Play(call_id=call.call_id, files=[str(a.path)], token=a.token))
            elif isinstance(a, StopPlayback):
                self.media.send(call.call_id, ch.StopPlayback(call_id=call.call_id))
            elif isinstance(a, StartTimer):
                call.timers[a.token] = self._loop.call_later(a.seconds, self._ivr_timeout, call.call_id, a.token)
            elif isinstance(a, CancelTimer):
                h = call.timers.pop(a.token, None)
                if h:
                    h.cancel()
            elif isinstance(a, Route):
                self._routed(call, a)

    def _ivr_timeout(self, call_id: str, token: int) -> None:
        call = self.calls.get(call_id)
        if call is None or call.state is not CallState.IVR:
            return
        call.timers.pop(token, None)
        self._apply(call, call.ivr.timeout(token, self.clock()))

    def _routed(self, call: CallFlow, route: Route) -> None:
        now = self.clock()
        for h in call.timers.values():
            h.cancel()
        call.timers.clear()
        o = route.outcome
        call.state = CallState.QUEUED
        call.skill = o.skill
        record = call.ivr.record.to_dict()
        log.info("ivr_done", extra={"call_id": call.call_id, "skill": o.skill, "priority": o.priority,
                                    "reason": o.reason})
        self.routing.record([Event(EventKind.IVRDONE, now, call_id=call.call_id, skill=o.skill,
                                   data={"record": record, "priority": o.priority, "reason": o.reason})])
        # The caller hears "connecting you to a specialist" at once, then hold + position.
        call.hold_token += 1
        self.media.send(call.call_id, ch.Play(call_id=call.call_id, token=call.hold_token,
                                              files=[str(p) for p in transfer_prompts()]))
        info = {"ivr": record, "caller": call.caller, "started_at": call.started_at, "node_id": self.node_id,
                "recording_id": call.recording_id, "screen_pop": describe(call.ivr.flow, record)}
        call.info = info
        self._routing("enqueue", call.call_id, o.skill, o.priority, caller=call.caller, info=info)

    def _announce(self, call: CallFlow) -> None:
        """Hold message + queue position, replayed as soon as it ends: the caller never hears silence."""
        pos = self.routing.acd.queue_position(call.call_id)
        files = [str(p) for p in hold_prompts()]
        if pos:
            files += [str(p) for p in queue_position_prompts(pos)]
        call.hold_token += 1
        self.media.send(call.call_id, ch.Play(call_id=call.call_id, files=files, token=call.hold_token))

    # ------------------------------------------------------------------------------------------
    # routing decisions
    # ------------------------------------------------------------------------------------------
    def _routing_event(self, ev: Event) -> None:
        call = self.calls.get(ev.call_id or "")
        if call is None:
            return
        if ev.kind is EventKind.OFFER:
            self._offer(call, ev)
        elif ev.kind is EventKind.RINGNOANSWER and call.state is CallState.RINGING:
            log.info("ring_no_answer", extra={"call_id": call.call_id, "seat_id": ev.seat_id})
            if call.leg_id:
                self.media.send(call.call_id, ch.CancelSeat(call_id=call.call_id, leg_id=call.leg_id))
            call.state = CallState.QUEUED
            call.leg_id = None
            call.seat_id = None
        elif ev.kind is EventKind.ESCALATE:
            call.skill = ev.data.get("to") or call.skill

    def _offer(self, call: CallFlow, ev: Event) -> None:
        call.attempts += 1
        call.state = CallState.RINGING
        call.seat_id = ev.seat_id
        call.leg_id = f"{call.call_id}-{call.attempts}"
        call.offered_at = self.clock()
        contact = ev.data.get("contact")
        headers = {"X-Handoff-Call-Id": call.call_id, "X-Handoff-Skill": str(ev.skill)}
        from_uri = None
        caller = call.caller or "anonymous"
        if "pai" in self.caller_id_header:
            headers["P-Asserted-Identity"] = f"<sip:{caller}@{self.sip_host}>"
        if "from" in self.caller_id_header:
            from_uri = f"sip:{caller}@{self.sip_host}"
        timeout = float(ev.data.get("ring_timeout_s") or 20) + 5
        log.info("offer", extra={"call_id": call.call_id, "seat_id": ev.seat_id, "contact": contact,
                                 "attempt": call.attempts})
        sent = self.media.send(call.call_id, ch.DialSeat(call_id=call.call_id, leg_id=call.leg_id, uri=str(contact),
                                                         headers=headers, from_uri=from_uri, timeout_s=timeout))
        if not sent:
            self._routing("seat_failed", call.call_id, "unreachable", seat_id=call.seat_id)

    def _seat_answered(self, call: CallFlow, msg: ch.SeatAnswered) -> None:
        if msg.leg_id != call.leg_id or call.state is not CallState.RINGING:
            return
        call.state = CallState.TALKING
        handoff_s = msg.at - call.offered_at if call.offered_at is not None else None
        if handoff_s is not None and self.on_handoff:
            self.on_handoff(handoff_s)
        log.info("bridged", extra={"call_id": call.call_id, "seat_id": call.seat_id,
                                   "handoff_ms": round(handoff_s * 1000, 2) if handoff_s is not None else None})
        self._routing("seat_answered", call.call_id, seat_id=call.seat_id)

    def _seat_failed(self, call: CallFlow, msg: ch.SeatFailed) -> None:
        if msg.leg_id != call.leg_id:
            return  # a leg we already gave up on (ring-no-answer): the ACD has moved on
        # The gateway's own failure (PJSIP refused to dial) is not the seat's: never "unreachable".
        reason = "local_error" if msg.local else seat_failure_reason(msg.code, msg.reason)
        was_talking = call.state is CallState.TALKING
        seat_id = call.seat_id
        log.warning("seat_failed", extra={"call_id": call.call_id, "seat_id": seat_id, "code": msg.code,
                                          "reason": reason, "detail": msg.reason, "mid_call": was_talking})
        call.leg_id = None
        call.seat_id = None
        call.state = CallState.QUEUED
        if was_talking:
            # The conversation ended on the seat's side by a failure, not a BYE: the seat's part
            # is over (wrap-up), and the caller, still on the line, waits again at the front.
            self._routing("call_completed", call.call_id, "seat_failure")
            self._routing("enqueue", call.call_id, call.skill or "intake_guidance", 1, caller=call.caller,
                          info={**call.info, "requeued_after": "seat_leg_failed"})
        else:
            self._routing("seat_failed", call.call_id, reason, seat_id=seat_id, detail=msg.reason)
        self._announce(call)

    # ------------------------------------------------------------------------------------------
    # end of a call
    # ------------------------------------------------------------------------------------------
    def _call_ended(self, call: CallFlow, ended_by: str, reason: str, recording_error: str | None,
                    end_reason: str | None = None) -> None:
        now = self.clock()
        state = call.state
        call.state = CallState.ENDED
        self.calls.pop(call.call_id, None)
        for h in call.timers.values():
            h.cancel()
        if state is CallState.IVR:
            outcome = end_reason or "caller_hangup_in_ivr"
            self.routing.record([Event(EventKind.IVRDONE, now, call_id=call.call_id,
                                       data={"record": call.ivr.record.to_dict(), "reason": outcome})])
        elif state in (CallState.QUEUED, CallState.RINGING):
            outcome = end_reason or "abandoned"
            self._routing("caller_abandoned", call.call_id)
        else:
            outcome = end_reason or "completed"
            self._routing("call_completed", call.call_id, ended_by)
        log.info("call_ended", extra={"call_id": call.call_id, "ended_by": ended_by, "state": state.value,
                                      "outcome": outcome})
        self._spawn(self._finish(call, ended_by, outcome, recording_error))

    async def _finish(self, call: CallFlow, ended_by: str, outcome: str, recording_error: str | None) -> None:
        recording_id = call.recording_id
        if self.recordings is not None:
            try:
                recording_id = await self.recordings.call_ended(call.call_id, call.recording_path,
                                                                recording_error) or recording_id
            except Exception:
                log.exception("recording_finish_failed", extra={"call_id": call.call_id})
        self.routing.record([Event(EventKind.CALLEND, self.clock(), call_id=call.call_id, data={
            "reason": outcome, "ended_by": ended_by, "recording_id": recording_id})])

    def worker_lost(self, call_ids: set[str]) -> None:
        """A media worker died: its calls are gone; record them as lost, free their seats."""
        for call_id in call_ids:
            call = self.calls.get(call_id)
            if call is not None:
                self._call_ended(call, "error", "worker died", "worker died", end_reason="lost_worker_failure")

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    def hangup_all(self) -> None:
        for call in list(self.calls.values()):
            with contextlib.suppress(Exception):
                self.media.send(call.call_id, ch.Hangup(call_id=call.call_id))
