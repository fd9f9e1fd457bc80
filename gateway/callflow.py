"""The SIP media adapter of the call journey: worker events in, worker commands out.

The journey itself (stages, ACD reports, the call record's events, metrics) is
``journey.call.CallJourney``; the IVR decides what the caller hears (``ivr.IvrSession``) and the
ACD who takes the call (``routing``).  What is left here is what only SIP media has: prompts
played by a worker, the IVR's timers, the seat leg (``DialSeat`` / ``CancelSeat``), the hold
announcements and the recording.  Its promises: the caller is never hung up on by a hand-off,
hears the hold message and their queue position while waiting (never silence), and every path
ends at a human seat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway import channel as ch
from ivr.flow import Flow
from ivr.interpreter import CancelTimer, IvrSession, Play, Route, StartTimer, StopPlayback
from ivr.prompts import hold_prompts, queue_position_prompts, transfer_prompts
from ivr.screen_pop import describe
from journey.call import CallJourney, Offer
from journey.failures import from_sip
from journey.notifier import JourneyNotifier
from journey.stages import CONVERSATION, Stage
from journey.transfer import MonitorRequest, TransferRefused, TransferRequest
from routing.events import Event, EventKind
from routing.skills import SKILLS

log = logging.getLogger("gateway.callflow")

#: The worker's own ring timer is a backstop, this long after the ACD's.
WORKER_RING_MARGIN_S = 5.0


class Media(Protocol):
    """What the call flow needs from the media side (the worker pool)."""

    def send(self, call_id: str, cmd: Any) -> bool: ...


class RecordingSink(Protocol):
    async def call_started(self, call_id: str, partial_path: str | None, started_at: float,
                           error: str | None) -> str | None: ...
    async def call_ended(self, call_id: str, partial_path: str | None, error: str | None) -> str | None: ...


@dataclass
class CallFlow:
    """One SIP call: its journey, plus what only the SIP media side needs."""

    journey: CallJourney
    ivr: IvrSession
    timers: dict[int, asyncio.TimerHandle] = field(default_factory=dict)
    leg_id: str | None = None
    attempts: int = 0
    hold_token: int = 1_000_000
    last_position_at: float = 0.0
    recording_path: str | None = None
    monitors: int = 0

    @property
    def call_id(self) -> str:
        return self.journey.call_id

    @property
    def stage(self) -> Stage:
        return self.journey.stage


class CallDirector:
    """Drives every live SIP call of this node (runs on the control process's event loop)."""

    def __init__(self, *, flow: Flow, routing: Any, media: Media, recordings: RecordingSink | None,
                 node_id: str, sip_host: str, caller_id_header: str = "from+pai",
                 clock: Callable[[], float] = time.time, announce_every_s: float = 15.0,
                 seat_media_timeout_s: float = 9.0) -> None:
        self.flow = flow
        self.routing = routing
        self.media = media
        self.recordings = recordings
        self.node_id = node_id
        self.sip_host = sip_host
        self.caller_id_header = caller_id_header
        self.clock = clock
        self.announce_every_s = announce_every_s
        self.seat_media_timeout_s = seat_media_timeout_s  # the worker's watchdog on a bridged seat leg
        self.notifier = JourneyNotifier(routing, ingress="sip")
        self.calls: dict[str, CallFlow] = {}
        self._loop = asyncio.get_event_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        routing.on_event(self._routing_event)

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
            log.info("worker_event_for_unknown_call", extra={"call_id": getattr(msg, "call_id", None),
                                                             "event": type(msg).__name__})
            return
        if isinstance(msg, ch.Dtmf):
            log.info("dtmf", extra={"call_id": call.call_id, "digit": msg.digit, "method": msg.method,
                                    "stage": call.stage.value})
            if call.stage is Stage.IN_IVR:
                self._apply(call, call.ivr.digit(msg.digit, self.clock()))
        elif isinstance(msg, ch.PromptFinished):
            if call.stage is Stage.IN_IVR:
                self._apply(call, call.ivr.prompt_finished(msg.token, self.clock()))
            elif call.journey.waiting and msg.token == call.hold_token:
                self._announce(call)
            elif call.stage is Stage.ON_HOLD and msg.token == call.hold_token and call.leg_id:
                self._hold_audio(call, on=True)  # hold audio again: never silence on hold
        elif isinstance(msg, ch.SeatRinging):
            if msg.leg_id == call.leg_id and call.journey.offer is not None:
                call.journey.seat_ringing(call.journey.offer.seat_id, msg.at)
        elif isinstance(msg, ch.SeatAnswered):
            self._seat_answered(call, msg)
        elif isinstance(msg, ch.SeatFailed):
            self._seat_failed(call, msg)
        elif isinstance(msg, ch.SeatReferred):
            self._seat_referred(call, msg)
        elif isinstance(msg, ch.MonitorAnswered):
            self._monitor_event(call, msg.leg_id, "answered", msg.at, mode=msg.mode)
        elif isinstance(msg, ch.MonitorEnded):
            self._monitor_event(call, msg.leg_id, "ended", msg.at, reason=msg.reason, code=msg.code,
                                answered=msg.answered)
        elif isinstance(msg, ch.CallEnded):
            self._call_ended(call, msg.ended_by, msg.recording_error)
        elif isinstance(msg, ch.CommandFailed):
            log.warning("worker_command_failed", extra={"call_id": call.call_id, "command": msg.command,
                                                        "error": msg.error})

    def _call_started(self, msg: ch.CallStarted, worker_id: int) -> None:
        journey = CallJourney(call_id=msg.call_id, caller=msg.caller, ingress="sip", node_id=self.node_id,
                              started_at=msg.at, routing=self.routing, notifier=self.notifier)
        call = CallFlow(journey=journey, ivr=IvrSession(self.flow, msg.call_id), recording_path=msg.recording_path)
        self.calls[msg.call_id] = call
        log.info("call_started", extra={"call_id": msg.call_id, "caller": msg.caller, "worker_id": worker_id})
        journey.answered(msg.at, msg.callee, sip_call_id=msg.sip_call_id, worker_id=worker_id,
                         caller_raw=msg.caller_raw)
        if self.recordings is not None:
            self._spawn(self._recording_started(call, msg.recording_error))
        self._apply(call, call.ivr.start(self.clock()))

    async def _recording_started(self, call: CallFlow, error: str | None) -> None:
        assert self.recordings is not None
        call.journey.recording_id = await self.recordings.call_started(
            call.call_id, call.recording_path, call.journey.started_at, error)

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
        if call is None or call.stage is not Stage.IN_IVR:
            return  # the IVR is over: its timers were cancelled, this one was already due
        call.timers.pop(token, None)
        self._apply(call, call.ivr.timeout(token, self.clock()))

    def _cancel_timers(self, call: CallFlow) -> None:
        for h in call.timers.values():
            h.cancel()
        call.timers.clear()

    def _routed(self, call: CallFlow, route: Route) -> None:
        self._cancel_timers(call)
        o = route.outcome
        # Queued first (the ACD may offer a seat at once), then "connecting you to a specialist".
        record = call.ivr.record.to_dict()
        call.journey.routed(o.skill, o.priority, o.reason, record, self.clock(),
                            screen_pop=describe(call.ivr.flow, record))
        call.hold_token += 1
        self.media.send(call.call_id, ch.Play(call_id=call.call_id, token=call.hold_token,
                                              files=[str(p) for p in transfer_prompts()]))

    def announce_interval(self, skill: str | None) -> float:
        """How often a waiting caller hears their position: the queue's ``announce_every_s``, else
        the node's ``hold_announce_interval``."""
        policy = self.routing.acd.policy(skill) if skill else None
        every = getattr(policy, "announce_every_s", None)
        return float(every) if every else self.announce_every_s

    def _announce(self, call: CallFlow) -> None:
        """The hold message, replayed as soon as it ends (the caller never hears silence), with the
        queue position every ``announce_interval`` seconds."""
        files = [str(p) for p in hold_prompts()]
        now = self.clock()
        said = None
        if now - call.last_position_at >= self.announce_interval(call.journey.skill):
            pos = self.routing.acd.queue_position(call.call_id)
            if pos:
                files += [str(p) for p in queue_position_prompts(pos)]
                call.last_position_at = now
                said = pos
        log.info("hold_announced", extra={"call_id": call.call_id, "position": said})
        call.hold_token += 1
        self.media.send(call.call_id, ch.Play(call_id=call.call_id, files=files, token=call.hold_token))

    # ------------------------------------------------------------------------------------------
    # routing decisions
    # ------------------------------------------------------------------------------------------
    def _routing_event(self, ev: Event) -> None:
        call = self.calls.get(ev.call_id or "")
        if call is None:
            return
        result = call.journey.routing_event(ev, self.clock())
        if isinstance(result, Offer):
            self._dial(call, result)
        elif result is True and call.leg_id:
            # the ACD's ring timer gave up on the seat: hang up that leg; the caller stays
            self.media.send(call.call_id, ch.CancelSeat(call_id=call.call_id, leg_id=call.leg_id))
            call.leg_id = None

    def _dial(self, call: CallFlow, offer: Offer) -> None:
        call.attempts += 1
        call.leg_id = f"{call.call_id}-{call.attempts}"
        headers = {"X-Handoff-Call-Id": call.call_id, "X-Handoff-Skill": offer.skill}
        from_uri = None
        caller = call.journey.caller or "anonymous"
        if "pai" in self.caller_id_header:
            headers["P-Asserted-Identity"] = f"<sip:{caller}@{self.sip_host}>"
        if "from" in self.caller_id_header:
            from_uri = f"sip:{caller}@{self.sip_host}"
        log.info("dial_seat", extra={"call_id": call.call_id, "seat_id": offer.seat_id, "contact": offer.contact,
                                     "attempt": call.attempts, "leg_id": call.leg_id})
        sent = self.media.send(call.call_id, ch.DialSeat(
            call_id=call.call_id, leg_id=call.leg_id, uri=offer.contact, headers=headers, from_uri=from_uri,
            timeout_s=offer.ring_timeout_s + WORKER_RING_MARGIN_S, media_timeout_s=self.seat_media_timeout_s))
        if not sent:
            # no worker to carry the leg: the gateway's fault, not the seat's
            call.leg_id = None
            call.journey.seat_not_taken(offer.seat_id, from_sip(0, "local_error: worker unavailable"), self.clock())

    def _seat_answered(self, call: CallFlow, msg: ch.SeatAnswered) -> None:
        offer = call.journey.offer
        if msg.leg_id != call.leg_id or offer is None:
            log.info("stale_seat_answered", extra={"call_id": call.call_id, "leg_id": msg.leg_id})
            return
        offered_at = offer.offered_at
        if call.journey.seat_answered(offer.seat_id, msg.answered_at, msg.at):
            # handoff_ms: OFFER -> seat's 200 OK -> bridged (what `bench handoff` reports);
            # answer_to_bridge_ms: the part the handoff_latency_seconds metric measures
            log.info("bridged", extra={"call_id": call.call_id, "seat_id": offer.seat_id,
                                       "handoff_ms": round((msg.at - offered_at) * 1000, 2),
                                       "answer_to_bridge_ms": round((msg.at - msg.answered_at) * 1000, 2)})

    def _seat_failed(self, call: CallFlow, msg: ch.SeatFailed) -> None:
        if msg.leg_id != call.leg_id:
            return  # a leg we already gave up on (ring-no-answer): the ACD has moved on
        call.leg_id = None
        now = self.clock()
        log.warning("seat_failed", extra={"call_id": call.call_id, "code": msg.code, "reason": msg.reason,
                                          "local": msg.local, "stage": call.stage.value})
        if call.stage in CONVERSATION:
            # mid-conversation (a SIP failure, or the worker's media watchdog: seat_media_timeout):
            # the seat goes not_ready, the caller back to the head of its queue, hold audio below
            call.journey.seat_leg_lost(msg.code, msg.reason, now)
        elif call.journey.offer is not None:
            # the gateway's own failure (PJSIP refused to dial) is never the seat's
            reason = msg.reason if not msg.local or msg.reason.startswith("local_error") else f"local_error: {msg.reason}"
            call.journey.seat_not_taken(call.journey.offer.seat_id, from_sip(msg.code, reason, msg.cancelled), now)
        if call.journey.waiting:
            self._announce(call)

    # ------------------------------------------------------------------------------------------
    # transfers (docs/SEATS.md): the caller's leg is never touched
    # ------------------------------------------------------------------------------------------
    def transfer(self, req: TransferRequest) -> dict[str, Any]:
        """Send a talking caller on; raises ``TransferRefused`` with the API's status.

        Order matters: the worker is told to release seat 1's leg *before* the journey re-queues
        the caller, because the ACD may offer seat 2 at once and its dial must find no seat leg."""
        call = self.calls.get(req.call_id)
        if call is None:
            raise TransferRefused(404, f"no live call {req.call_id!r} on this node")
        if req.mode != "blind":
            raise TransferRefused(409, "warm (consult) transfer is not available on this node yet")
        to_skill = req.to_skill
        if req.to_seat is not None:
            to_skill = self._seat_target(req.to_seat, call.journey.seat_id)
        if to_skill not in SKILLS:
            raise TransferRefused(422, f"unknown skill {to_skill!r}")
        if call.stage not in CONVERSATION or call.leg_id is None:
            raise TransferRefused(409, f"call {req.call_id} is {call.stage.value}, not talking to a seat")
        from_seat = call.journey.seat_id
        leg = call.leg_id
        if not self.media.send(call.call_id, ch.ReleaseSeat(call_id=call.call_id, leg_id=leg, reason="transfer")):
            raise TransferRefused(409, "the call's media worker is not reachable")
        call.leg_id = None
        now = self.clock()
        call.journey.transferred(to_skill, req.note, req.by, now, mode="blind", to_seat=req.to_seat)
        log.info("transferred", extra={"call_id": call.call_id, "from_seat": from_seat, "to_skill": to_skill,
                                       "to_seat": req.to_seat, "by": req.by, "mode": req.mode})
        if call.journey.waiting and call.leg_id is None:
            self._announce(call)  # hold audio until the next seat answers
        elif call.journey.waiting:
            # seat 2 was offered at once and is being dialled: the caller hears hold audio meanwhile
            call.hold_token += 1
            self.media.send(call.call_id, ch.Play(call_id=call.call_id, token=call.hold_token,
                                                  files=[str(p) for p in hold_prompts()]))
        return {"call_id": call.call_id, "mode": req.mode, "to_skill": to_skill, "to_seat": req.to_seat,
                "from_seat": from_seat, "stage": call.stage.value}

    def _seat_target(self, seat_id: str, own: str | None) -> str:
        """The skill a transfer to ``seat_id`` queues in (its first-choice skill); only a seat that
        is free now is a target, so the caller never waits for someone who is not there."""
        if seat_id == own:
            raise TransferRefused(409, "a seat cannot transfer a call to itself")
        try:
            view = self.routing.acd.seat_view(seat_id, self.clock())
        except Exception:
            raise TransferRefused(404, f"unknown seat {seat_id!r}") from None
        if str(view.get("status")) != "available":
            raise TransferRefused(409, f"seat {seat_id} is {view.get('status')}, not available: transfer to its skill "
                                       "instead, or wait until it is free")
        skills = view.get("skills") or {}
        if isinstance(skills, dict):
            return min(skills, key=lambda s: skills[s])
        return str(next(iter(skills)))

    # ------------------------------------------------------------------------------------------
    # supervisors: listen, whisper, barge (a third leg in the worker's bridge)
    # ------------------------------------------------------------------------------------------
    def monitor(self, req: MonitorRequest) -> dict[str, Any]:
        call = self.calls.get(req.call_id)
        if call is None:
            raise TransferRefused(404, f"no live call {req.call_id!r} on this node")
        if call.stage not in CONVERSATION:
            raise TransferRefused(409, f"call {req.call_id} is {call.stage.value}; a supervisor joins a conversation")
        call.monitors += 1
        leg_id = f"{call.call_id}-m{call.monitors}"
        cmd = ch.DialMonitor(call_id=call.call_id, leg_id=leg_id, uri=req.contact, mode=req.mode,  # type: ignore[arg-type]
                             headers={"X-Handoff-Call-Id": call.call_id, "X-Handoff-Monitor": req.mode})
        if not self.media.send(call.call_id, cmd):
            raise TransferRefused(409, "the call's media worker is not reachable")
        self._monitor_event(call, leg_id, "dialing", self.clock(), mode=req.mode, contact=req.contact, by=req.by)
        return {"call_id": call.call_id, "leg_id": leg_id, "mode": req.mode, "contact": req.contact,
                "state": "dialing"}

    def _monitor_event(self, call: CallFlow, leg_id: str, state: str, at: float, **data: Any) -> None:
        log.info("monitor", extra={"call_id": call.call_id, "leg_id": leg_id, "state": state, **data})
        self.notifier.record([Event(EventKind.MONITOR, at, call_id=call.call_id, seat_id=call.journey.seat_id,
                                    data={"leg_id": leg_id, "state": state, **data})])

    def _seat_referred(self, call: CallFlow, msg: ch.SeatReferred) -> None:
        """A REFER from the seat's own phone on its leg: trusted (the gateway dialled that seat), but
        only ever as our own transfer to a skill; anything else is refused and logged."""
        if msg.leg_id != call.leg_id:
            return
        seat = call.journey.seat_id
        if msg.target not in SKILLS:
            log.warning("seat_refer_refused", extra={"call_id": call.call_id, "seat_id": seat, "target": msg.target})
            return
        try:
            self.transfer(TransferRequest(call_id=call.call_id, to_skill=msg.target, by=f"refer:{seat}"))
        except TransferRefused as e:
            log.warning("seat_refer_refused", extra={"call_id": call.call_id, "seat_id": seat, "target": msg.target,
                                                     "error": e.detail})

    def hold(self, call_id: str, on: bool, by: str) -> dict[str, Any]:
        """Seat hold / resume: the caller hears hold audio, the seat stays on the line (no re-INVITE)."""
        call = self.calls.get(call_id)
        if call is None:
            raise TransferRefused(404, f"no live call {call_id!r} on this node")
        want = Stage.TALKING if on else Stage.ON_HOLD
        if call.stage is not want or call.leg_id is None:
            raise TransferRefused(409, f"call {call_id} is {call.stage.value}; "
                                       f"{'hold' if on else 'resume'} needs {want.value}")
        if not self._hold_audio(call, on):
            raise TransferRefused(409, "the call's media worker is not reachable")
        now = self.clock()
        if on:
            call.journey.held(by, now)
        else:
            call.journey.resumed(by, now)
        return {"call_id": call_id, "stage": call.stage.value, "seat_id": call.journey.seat_id}

    def _hold_audio(self, call: CallFlow, on: bool) -> bool:
        assert call.leg_id is not None
        call.hold_token += 1
        return self.media.send(call.call_id, ch.HoldSeat(
            call_id=call.call_id, leg_id=call.leg_id, on=on, token=call.hold_token,
            files=[str(p) for p in hold_prompts()] if on else []))

    # ------------------------------------------------------------------------------------------
    # end of a call
    # ------------------------------------------------------------------------------------------
    def _call_ended(self, call: CallFlow, ended_by: str, recording_error: str | None) -> None:
        self.calls.pop(call.call_id, None)
        self._cancel_timers(call)
        outcome = call.journey.hung_up(ended_by, self.clock(), record=call.ivr.record.to_dict())
        log.info("call_ended", extra={"call_id": call.call_id, "ended_by": ended_by, "outcome": outcome})
        self._spawn(self._finish(call, recording_error))

    async def _finish(self, call: CallFlow, recording_error: str | None) -> None:
        recording_id = None
        if self.recordings is not None:
            try:
                recording_id = await self.recordings.call_ended(call.call_id, call.recording_path, recording_error)
            except Exception:
                log.exception("recording_finish_failed", extra={"call_id": call.call_id})
        call.journey.closed(self.clock(), recording_id)

    def line_lost(self, call_id: str, reason: str) -> bool:
        """The media worker carrying ``call_id`` died: the journey ends ``reason`` (the ACD frees
        the seat and queues a callback with the caller's number and IVR answers), the recording is
        sealed by this process.  False when this director does not know the call."""
        call = self.calls.pop(call_id, None)
        if call is None:
            return False
        self._cancel_timers(call)
        stage = call.stage
        outcome = call.journey.line_lost(reason, self.clock(), record=call.ivr.record.to_dict())
        log.warning("call_lost", extra={"call_id": call_id, "reason": reason, "stage": stage.value,
                                        "outcome": outcome})
        self._spawn(self._finish(call, "worker died"))
        return True

    def _spawn(self, coro: Any) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=10)

    def hangup_all(self) -> None:
        for call in list(self.calls.values()):
            if not self.media.send(call.call_id, ch.Hangup(call_id=call.call_id)):
                log.error("hangup_not_sent", extra={"call_id": call.call_id})
