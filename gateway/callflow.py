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
from journey.call import REQUEUE_PRIORITY, CallJourney, Offer
from journey.failures import from_sip
from journey.notifier import JourneyNotifier
from journey.stages import CONVERSATION, Stage
from journey.transfer import MonitorRequest, TransferRefused, TransferRequest
from routing.events import Event, EventKind
from routing.skills import SKILLS

log = logging.getLogger("gateway.callflow")

#: The worker's own ring timer is a backstop, this long after the ACD's.
WORKER_RING_MARGIN_S = 5.0
#: How long an API request about a consult waits for the worker's answer before it gives up.
CONSULT_REPLY_S = 4.0


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
    consults: int = 0
    consult_leg: str | None = None     # the warm transfer's leg to seat 2, while it lasts
    consult_waiter: asyncio.Future[dict[str, Any]] | None = None  # an API request awaiting the worker

    @property
    def call_id(self) -> str:
        return self.journey.call_id

    @property
    def stage(self) -> Stage:
        return self.journey.stage


def _leg_number(leg_id: str | None, prefix: str) -> int:
    """``c-..-3`` -> 3 (``prefix`` ``x``: ``c-..-x2`` -> 2); 0 when there is none."""
    tail = (leg_id or "").rsplit("-", 1)[-1]
    return int(tail[len(prefix):]) if leg_id and tail.startswith(prefix) and tail[len(prefix):].isdigit() else 0


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
            elif call.stage is Stage.CONSULTING and msg.token == call.hold_token:
                self._play_hold(call)  # the caller waits while seat 1 consults seat 2
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
        elif isinstance(msg, ch.ConsultDialing):
            self._consult_dialing(call, msg)
        elif isinstance(msg, ch.ConsultAnswered):
            self._consult_answered(call, msg)
        elif isinstance(msg, ch.ConsultEnded):
            self._consult_ended(call, msg)
        elif isinstance(msg, ch.CallEnded):
            self._call_ended(call, msg.ended_by, msg.recording_error)
        elif isinstance(msg, ch.CommandFailed):
            if msg.command == "end_consult":
                self._answer_waiter(call, TransferRefused(409, msg.error))
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

    # ------------------------------------------------------------------------------------------
    # a restarted control process takes over the calls its workers kept (gateway.supervisor)
    # ------------------------------------------------------------------------------------------
    async def adopt(self, live: dict[str, tuple[int, ch.LiveCall]], records: dict[str, Any]) -> None:
        """Take over the calls the workers carried through a restart of this process.

        ``records``: the store's open call records (``routing.store.reconcile.OpenCall``).  The
        journey is rebuilt at its stage, not walked there (its transitions were stored when they
        happened): a conversation goes on untouched (``talking`` / ``on_hold`` with its seat, the
        ACD restored that seat ``on_call``); a caller the ACD restored in its queue hears the hold
        message and their position and keeps their place (a seat offered to them since is dialled);
        a routed caller without a queue entry is queued again at the head; a caller in the IVR
        hears the flow again from its start (the answers given so far are not kept); a call the
        store never heard of starts now, like a new one.

        ``live`` describes each call as it was when the previous control process went away; what
        happened since (``gateway.worker.gap``) follows as worker events once the pool dispatches.
        A call flagged ``ended`` ended meanwhile: it is rebuilt the same way but nothing is sent to
        its worker (no prompt, no seat dialled, not queued again), and its replayed ``CallEnded``
        closes it with its true end (``completed``, ``abandoned``, ``caller_hangup_in_ivr``)."""
        now = self.clock()
        for call_id, (worker_id, lc) in sorted(live.items(), key=lambda kv: kv[1][1].started_at):
            rec = records.get(call_id)
            if rec is None:
                self._call_started(ch.CallStarted(
                    call_id=call_id, caller=lc.caller, callee=lc.callee, sip_call_id=lc.sip_call_id,
                    at=lc.started_at, recording_path=lc.recording_path, recording_error=lc.recording_error), worker_id)
                log.warning("call_adopted", extra={"call_id": call_id, "stage": "in_ivr", "as": "new"})
                continue
            ivr_record = dict(rec.ivr or {})
            journey = CallJourney(call_id=call_id, caller=rec.caller or lc.caller, ingress="sip", node_id=self.node_id,
                                  started_at=rec.started_at or lc.started_at, routing=self.routing,
                                  notifier=self.notifier, stage=Stage.IN_IVR, skill=rec.skill, priority=rec.priority,
                                  recording_id=call_id if lc.recording_path else None, ivr_record=ivr_record,
                                  queued_at=rec.queued_at)
            journey.queue_info = {"ivr": ivr_record, "caller": journey.caller, "started_at": journey.started_at,
                                  "node_id": self.node_id, "recording_id": journey.recording_id, "ingress": "sip",
                                  "screen_pop": describe(self.flow, ivr_record) if ivr_record else {}}
            call = CallFlow(journey=journey, ivr=IvrSession(self.flow, call_id), recording_path=lc.recording_path)
            # legs dialled from now on get new ids: a replayed event of an old leg is found stale
            call.attempts = _leg_number(lc.last_seat_leg or lc.seat_leg_id, "")
            call.consults = _leg_number(lc.last_consult_leg, "x")
            self.calls[call_id] = call
            if self.recordings is not None and hasattr(self.recordings, "adopted"):
                await self.recordings.adopted(call_id, lc.recording_path, journey.started_at, lc.recording_error)
            view = self.routing.acd.call_view(call_id)
            if lc.seat_state == "bridged" and lc.seat_id:
                journey.stage = Stage.ON_HOLD if lc.on_hold else Stage.TALKING
                journey.seat_id, call.leg_id = lc.seat_id, lc.seat_leg_id
                if view is None or view.get("seat_id") != lc.seat_id:
                    log.error("call_adopted_without_seat", extra={"call_id": call_id, "seat_id": lc.seat_id})
            elif view is not None:
                journey.stage, journey.skill = Stage.QUEUED, view["skill"]
                if view["state"] == "ringing" and view.get("seat_id"):
                    # offered a seat when routing was restored, before this call had a journey
                    seat = self.routing.acd.seat_view(view["seat_id"], now)
                    offer = journey.routing_event(Event(
                        EventKind.OFFER, now, call_id=call_id, seat_id=view["seat_id"], skill=view["skill"],
                        data={"contact": seat["contact"], "attempt": view.get("attempt") or 1,
                              "ring_timeout_s": self.routing.acd.config.ring_timeout_s}), now)
                    if isinstance(offer, Offer) and not lc.ended:
                        self._dial(call, offer)
                if journey.waiting and not lc.ended:
                    self._announce(call)
            elif lc.ended:
                # ended meanwhile: its stage as the store knew it, for its end to count right
                journey.stage = Stage.QUEUED if rec.skill else Stage.IN_IVR
            elif rec.skill:
                journey.stage = Stage.QUEUED
                self.routing.enqueue(call_id, rec.skill, REQUEUE_PRIORITY, caller=journey.caller,
                                     info={**journey.queue_info, "requeued_after": "control_restart"},
                                     place_at=rec.queued_at)
                if journey.waiting and call.leg_id is None:
                    self._announce(call)
            else:
                self._apply(call, call.ivr.start(now))
            log.warning("call_adopted", extra={"call_id": call_id, "stage": journey.stage.value,
                                               "seat_id": journey.seat_id, "worker_id": worker_id,
                                               "ended_meanwhile": lc.ended})

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
        if offer.epoch is not None:  # cluster mode: which leader's offer rings the seat (fault tests, audits)
            headers["X-Handoff-Epoch"] = str(offer.epoch)
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
            timeout_s=offer.ring_timeout_s + WORKER_RING_MARGIN_S, seat_id=offer.seat_id,
            media_timeout_s=self.seat_media_timeout_s))
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
    def transfer(self, req: TransferRequest, seat_skill: str | None = None) -> dict[str, Any]:
        """Send a talking caller on; raises ``TransferRefused`` with the API's status.
        ``seat_skill``: the skill of ``req.to_seat`` as the routing leader found it (a node that
        does not lead cannot read seats; ``seat_target`` there).

        Order matters: the worker is told to release seat 1's leg *before* the journey re-queues
        the caller, because the ACD may offer seat 2 at once and its dial must find no seat leg."""
        call = self.calls.get(req.call_id)
        if call is None:
            raise TransferRefused(404, f"no live call {req.call_id!r} on this node")
        if req.mode != "blind":
            raise TransferRefused(409, "a warm transfer is a consult (CallDirector.consult)")
        to_skill = req.to_skill
        if req.to_seat is not None and req.to_seat == call.journey.seat_id:
            raise TransferRefused(409, "a seat cannot transfer a call to itself")
        if req.to_seat is not None:
            to_skill = seat_skill or self.seat_target(req.to_seat, call.journey.seat_id)
        if to_skill not in SKILLS:
            raise TransferRefused(422, f"unknown skill {to_skill!r}")
        if call.stage not in CONVERSATION or call.leg_id is None or call.journey.consult is not None:
            raise TransferRefused(409, f"call {req.call_id} is {call.stage.value}, not talking to a seat"
                                  + (" (a consult is starting)" if call.journey.consult is not None else ""))
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

    # ------------------------------------------------------------------------------------------
    # warm (consult) transfers: seat 2 as a third leg in the caller's worker (docs/SEATS.md)
    # ------------------------------------------------------------------------------------------
    async def consult(self, req: TransferRequest) -> dict[str, Any]:
        """Start a warm transfer: seat 2 is reserved, the caller hears hold audio and seat 1 talks
        to seat 2.  The journey moves when the worker says it is dialling (its events drive every
        move, in order); this request waits for that answer.  ``TransferRefused`` otherwise."""
        call = self.calls.get(req.call_id)
        if call is None:
            raise TransferRefused(404, f"no live call {req.call_id!r} on this node")
        if req.to_skill is not None and req.to_skill not in SKILLS:
            raise TransferRefused(422, f"unknown skill {req.to_skill!r}")
        journey = call.journey
        if call.stage not in CONVERSATION or call.leg_id is None:
            raise TransferRefused(409, f"call {req.call_id} is {call.stage.value}, not talking to a seat")
        if req.to_seat is not None:
            if req.to_seat == journey.seat_id:
                raise TransferRefused(409, "a seat cannot transfer a call to itself")
            try:
                self.routing.acd.seat_view(req.to_seat, self.clock())
            except Exception:
                raise TransferRefused(404, f"unknown seat {req.to_seat!r}") from None
        if call.consult_waiter is not None:
            raise TransferRefused(409, "another transfer request for this call is under way")
        c = journey.consult_reserve(req.to_seat, req.to_skill, req.note, req.by, self.clock())
        call.consults += 1
        call.consult_leg = leg_id = f"{call.call_id}-x{call.consults}"
        headers = {"X-Handoff-Call-Id": call.call_id, "X-Handoff-Skill": c.skill,
                   "X-Handoff-Consult": str(c.from_seat)}
        from_uri = None
        caller = journey.caller or "anonymous"
        if "pai" in self.caller_id_header:
            headers["P-Asserted-Identity"] = f"<sip:{caller}@{self.sip_host}>"
        if "from" in self.caller_id_header:
            from_uri = f"sip:{caller}@{self.sip_host}"
        call.hold_token += 1
        log.info("consult_dial", extra={"call_id": call.call_id, "from_seat": c.from_seat, "seat_id": c.seat_id,
                                        "contact": c.contact, "leg_id": leg_id, "by": req.by})
        waiter = call.consult_waiter = self._loop.create_future()
        ring_s = float(getattr(self.routing.acd.config, "ring_timeout_s", 20.0))
        if not self.media.send(call.call_id, ch.DialConsult(
                call_id=call.call_id, leg_id=leg_id, uri=c.contact, headers=headers, from_uri=from_uri,
                timeout_s=ring_s, files=[str(p) for p in hold_prompts()], token=call.hold_token)):
            call.consult_leg = call.consult_waiter = None
            journey.consult_unreserve("media worker not reachable")
            raise TransferRefused(409, "the call's media worker is not reachable")
        return await self._await_worker(call, waiter, leg_id)

    async def end_consult(self, call_id: str, complete: bool, by: str) -> dict[str, Any]:
        """Complete (seat 2 keeps the caller, seat 1's leg gets a BYE) or cancel (caller back with
        seat 1, seat 2 released without penalty) the consult of ``call_id``."""
        call = self.calls.get(call_id)
        if call is None:
            raise TransferRefused(404, f"no live call {call_id!r} on this node")
        c = call.journey.consult
        if call.stage is not Stage.CONSULTING or c is None or call.consult_leg is None:
            raise TransferRefused(409, f"call {call_id} is {call.stage.value}; no consult (warm transfer) "
                                       "is under way")
        if complete and not c.answered:
            raise TransferRefused(409, f"seat {c.seat_id} has not answered yet: wait for it, or cancel")
        if call.consult_waiter is not None:
            raise TransferRefused(409, "another transfer request for this call is under way")
        what = "completed" if complete else "cancelled"
        waiter = call.consult_waiter = self._loop.create_future()
        leg_id = call.consult_leg
        if not self.media.send(call_id, ch.EndConsult(call_id=call_id, leg_id=leg_id, complete=complete,
                                                      reason=f"{what} by {by}")):
            call.consult_waiter = None
            raise TransferRefused(409, "the call's media worker is not reachable")
        return await self._await_worker(call, waiter, leg_id)

    async def _await_worker(self, call: CallFlow, waiter: asyncio.Future[dict[str, Any]],
                            leg_id: str) -> dict[str, Any]:
        try:
            async with asyncio.timeout(CONSULT_REPLY_S):
                return await waiter
        except TimeoutError:
            log.error("consult_worker_silent", extra={"call_id": call.call_id, "leg_id": leg_id})
            raise TransferRefused(409, "the call's media worker did not answer; try again") from None
        finally:
            if call.consult_waiter is waiter:
                call.consult_waiter = None

    def _answer_waiter(self, call: CallFlow, result: dict[str, Any] | Exception) -> None:
        waiter, call.consult_waiter = call.consult_waiter, None
        if waiter is None or waiter.done():
            return
        if isinstance(result, Exception):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)

    def _consult_view(self, call: CallFlow, state: str, seat_id: str | None, skill: str | None,
                      from_seat: str | None) -> dict[str, Any]:
        return {"call_id": call.call_id, "mode": "warm", "state": state, "to_seat": seat_id, "to_skill": skill,
                "from_seat": from_seat, "seat_id": call.journey.seat_id, "stage": call.stage.value}

    def _play_hold(self, call: CallFlow) -> None:
        call.hold_token += 1
        self.media.send(call.call_id, ch.Play(call_id=call.call_id, token=call.hold_token,
                                              files=[str(p) for p in hold_prompts()]))

    def _consult_dialing(self, call: CallFlow, msg: ch.ConsultDialing) -> None:
        c = call.journey.consult
        if msg.leg_id != call.consult_leg or c is None:
            return
        call.journey.consult_started(msg.at)
        self._answer_waiter(call, self._consult_view(call, "dialing", c.seat_id, c.skill, c.from_seat))

    def _consult_answered(self, call: CallFlow, msg: ch.ConsultAnswered) -> None:
        c = call.journey.consult
        if msg.leg_id != call.consult_leg or c is None:
            return
        c.answered = True
        log.info("consult_answered", extra={"call_id": call.call_id, "seat_id": c.seat_id, "leg_id": msg.leg_id})

    def _consult_ended(self, call: CallFlow, msg: ch.ConsultEnded) -> None:
        c = call.journey.consult
        if msg.leg_id != call.consult_leg or c is None:
            return
        call.consult_leg = None
        now = self.clock()
        journey = call.journey
        log.info("consult_ended", extra={"call_id": call.call_id, "seat_id": c.seat_id, "outcome": msg.outcome,
                                         "reason": msg.reason, "code": msg.code})
        if msg.outcome == "refused":
            journey.consult_unreserve(msg.reason)
            self._answer_waiter(call, TransferRefused(409, f"the consult could not start: {msg.reason}"))
        elif msg.outcome == "completed":
            call.leg_id = msg.leg_id  # the consult leg is the seat leg now
            journey.consult_completed(now, msg.reason)
            self._answer_waiter(call, self._consult_view(call, "completed", c.seat_id, c.skill, c.from_seat))
        elif msg.outcome == "seat_left":
            call.leg_id = None
            journey.consult_seat_left(now)
            if journey.waiting and call.leg_id is None:
                self._announce(call)
            self._answer_waiter(call, TransferRefused(409, f"seat {c.from_seat} left before seat {c.seat_id} "
                                                           "answered; the caller waits for that seat"))
        else:
            why = msg.reason if msg.outcome == "cancelled" else \
                f"seat {c.seat_id} {'hung up' if msg.answered else 'did not answer'} ({msg.code} {msg.reason})"
            journey.consult_cancelled(now, why)
            if msg.outcome == "cancelled":
                self._answer_waiter(call, self._consult_view(call, "cancelled", c.seat_id, c.skill, c.from_seat))
            else:
                self._answer_waiter(call, TransferRefused(409, f"{why}; the caller is back with seat {c.from_seat}"))

    def seat_target(self, seat_id: str, own: str | None) -> str:
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
        only ever as our own blind transfer, to a skill (``sip:insurance_claim@...``) or to a seat
        (``sip:s2@...``) on the same rules as the API's ``to_seat``; anything else is refused and
        logged, and the conversation goes on."""
        if msg.leg_id != call.leg_id:
            return
        seat = call.journey.seat_id
        target = msg.target
        if target in SKILLS:
            req = TransferRequest(call_id=call.call_id, to_skill=target, by=f"refer:{seat}")
        elif self._is_seat(target):
            req = TransferRequest(call_id=call.call_id, to_seat=target, by=f"refer:{seat}")
        else:
            log.warning("seat_refer_refused", extra={"call_id": call.call_id, "seat_id": seat, "target": target,
                                                     "reason": "neither a skill nor a seat"})
            return
        try:
            self.transfer(req)
        except TransferRefused as e:
            log.warning("seat_refer_refused", extra={"call_id": call.call_id, "seat_id": seat, "target": target,
                                                     "reason": e.detail, "status": e.status})

    def _is_seat(self, seat_id: str) -> bool:
        try:
            self.routing.acd.seat_view(seat_id, self.clock())
        except Exception:
            return False
        return True

    def hold(self, call_id: str, on: bool, by: str) -> dict[str, Any]:
        """Seat hold / resume: the caller hears hold audio, the seat stays on the line (no re-INVITE)."""
        call = self.calls.get(call_id)
        if call is None:
            raise TransferRefused(404, f"no live call {call_id!r} on this node")
        want = Stage.TALKING if on else Stage.ON_HOLD
        if call.stage is not want or call.leg_id is None or call.journey.consult is not None:
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
        self._answer_waiter(call, TransferRefused(409, f"the call ended (by {ended_by})"))
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
        self._answer_waiter(call, TransferRefused(409, f"the call's media was lost ({reason})"))
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
