"""The ACD: a pure state machine over seats and waiting calls.

Every method takes an explicit ``now`` (unix seconds) and returns the ``Event`` list describing
the transitions it made, in order.  Nothing here does I/O or reads a clock, so the same decisions
run in tests, benchmarks, the SIP gateway and the Twilio ingress.  The caller persists and
publishes the events.

Timers belong to the ACD too: ``next_deadline()`` says when ``tick(now)`` must next be called
(ring timeout -> RINGNOANSWER, wrap-up end, reject-delay end, escalation to another skill).  After
every method the ACD has already made any new offers (``OFFER`` events) that became possible, so
the invariant between calls is: no waiting call and offerable seat of its skill are left unmatched.

Races with the gateway (a ring timeout fired here while the seat's 486 was on its way) surface as
``IllegalTransition`` / ``UnknownCall``: the late report is refused, never applied to a newer
attempt.  Pass ``seat_id=`` to ``seat_answered``/``ring_no_answer``/``seat_failed`` to make sure a
report about an older attempt is never taken for the current one.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from routing.callbacks import CallbackList
from routing.errors import (
    DuplicateId,
    IllegalTransition,
    RoutingError,
    UnknownCall,
    UnknownSeat,
    UnknownSkill,
)
from routing.events import Event, EventKind
from routing.metrics import Metrics
from routing.queue import EntryState, QueuedCall, SkillQueue
from routing.seat import REQUESTABLE, AvailableSeats, Seat
from routing.skills import SKILLS, Skill
from routing.status import SeatStatus
from routing.strategy import strategy_named

__all__ = [
    "Acd", "AcdConfig", "DuplicateId", "Escalation", "IllegalTransition", "RestoredConnected", "RestoredEntry",
    "RestoredSeat", "RoutingError",
    "SeatSpec", "SkillPolicy", "UnknownCall", "UnknownSeat", "UnknownSkill",
]

S = SeatStatus

#: seat_failed reasons that say the seat cannot take calls at all (it goes not_ready); every other
#: reason (busy, declined, hangup_before_bridge, ...) is a refusal of this one call.
UNREACHABLE_REASONS = frozenset({"unreachable", "error"})
#: seat_failed reasons that are the gateway's own fault (it could not dial): the seat is not
#: penalised (it stays available, nothing excludes it) and the caller goes back to the head.  The
#: seat is held back for the reject delay all the same, so that a fault that repeats (a contact the
#: gateway cannot dial) is retried every few seconds instead of offering the same pair in a loop.
LOCAL_REASONS = frozenset({"local_error"})
INTAKE_SKILL = Skill.INTAKE_GUIDANCE.value


@dataclass(frozen=True, slots=True)
class SeatSpec:
    """A seat as configured (seats file / API).  ``skills`` maps skill -> penalty (0 = first choice)."""

    id: str
    contact: str
    skills: dict[str, int]
    name: str = ""
    status: SeatStatus = SeatStatus.LOGGED_OUT
    register_user: str | None = None   # a seat phone that REGISTERs (digest user); contact comes from it
    ha1: str | None = field(default=None, repr=False)  # md5(user:realm:password), never the password


@dataclass(frozen=True, slots=True)
class Escalation:
    """One escalation rule of a queue: after waiting ``after_s`` in it, the call is also offered to
    seats of ``also`` (it keeps its place in its own queue), or its priority is raised to ``priority``."""

    after_s: float
    also: str | None = None
    priority: int | None = None

    def view(self) -> dict[str, Any]:
        return {"after_s": self.after_s, **({"also": self.also} if self.also else {}),
                **({"priority": self.priority} if self.priority is not None else {})}


@dataclass(frozen=True, slots=True)
class SkillPolicy:
    """Per-skill routing policy (a queue: like a TaskRouter workflow target, an Asterisk queue)."""

    wrap_up_s: float = 15.0
    escalate_after_s: float | None = None  # waiting longer than this moves the call ...
    escalate_to: str | None = None         # ... to this skill's queue (keeping its enqueue time)
    strategy: str | None = None            # longest_idle | fewest_calls | round_robin; None: the ACD's
    sl_threshold_s: float | None = None    # service-level threshold; None: the ACD's
    announce_every_s: float | None = None  # queue position announced this often; None: the node's
    escalate: tuple[Escalation, ...] = ()  # rules, in order of after_s (seats file ``queues:``)

    def view(self, config: AcdConfig) -> dict[str, Any]:
        return {"strategy": self.strategy or config.strategy,
                "sl_threshold_s": self.sl_threshold_s if self.sl_threshold_s is not None else config.service_level_s,
                "wrap_up_s": self.wrap_up_s, "announce_every_s": self.announce_every_s,
                "escalate": [r.view() for r in self.escalate] or (
                    [{"after_s": self.escalate_after_s, "to": self.escalate_to}] if self.escalate_to else [])}


@dataclass(slots=True)
class AcdConfig:
    ring_timeout_s: float = 20.0
    rona_not_ready_after: int = 1          # consecutive RONAs before a seat goes not_ready
    service_level_s: float = 20.0
    callback_after_s: float = 30.0         # abandoned after waiting longer -> callback list
    reject_delay_s: float = 5.0            # a seat that declined is not offered again for this long
    strategy: str = "longest_idle"         # longest_idle | fewest_calls | round_robin
    policies: dict[str, SkillPolicy] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RestoredSeat:
    """What ``routing.store.load_state`` gives back for a seat after a restart."""

    spec: SeatSpec
    status: SeatStatus
    reason: str | None
    since: float


@dataclass(frozen=True, slots=True)
class RestoredEntry:
    """A call that was waiting when the node stopped; it keeps its place (enqueue time)."""

    call_id: str
    skill: str
    priority: int
    enqueued_at: float
    caller: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RestoredConnected:
    """A conversation still going on at a restart of the control process alone (its media worker
    kept it bridged): its seat comes back ``on_call`` bound to it, so the hang-up later completes
    it (seat to wrap-up) like any other conversation."""

    call_id: str
    seat_id: str
    skill: str
    priority: int
    enqueued_at: float
    answered_at: float
    caller: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


_DEFAULT_POLICY = SkillPolicy()

# timer kinds
_RING, _WRAP, _HOLD, _ESCALATE = 0, 1, 2, 3


class Acd:
    def __init__(self, config: AcdConfig | None = None, metrics: Metrics | None = None) -> None:
        self.config = config or AcdConfig()
        self.strategy = strategy_named(self.config.strategy)
        self._strategies = {s: strategy_named(p.strategy) for s, p in self.config.policies.items() if p.strategy}
        for skill, policy in self.config.policies.items():
            _check_skill(skill)
            for rule in policy.escalate:
                if rule.also is not None:
                    _check_skill(rule.also)
                if (rule.also is None) == (rule.priority is None) or rule.after_s < 0:
                    raise ValueError(f"policy {skill}: an escalation needs after_s >= 0 and one of also / priority")
            if policy.escalate_to is not None:
                _check_skill(policy.escalate_to)
                if policy.escalate_after_s is None or policy.escalate_after_s < 0:
                    raise ValueError(f"policy {skill}: escalate_to needs escalate_after_s >= 0")
        self.metrics = metrics or Metrics(service_level_s=self.config.service_level_s, service_level_by_skill={
            s: p.sl_threshold_s for s, p in self.config.policies.items() if p.sl_threshold_s is not None})
        self.callbacks = CallbackList()
        self._reset()

    def _reset(self) -> None:
        self._seats: dict[str, Seat] = {}
        self._calls: dict[str, QueuedCall] = {}
        self._queues: dict[str, SkillQueue] = {s: SkillQueue() for s in SKILLS}
        self._available: dict[str, AvailableSeats] = {s: AvailableSeats() for s in SKILLS}
        self._ringing: dict[str, int] = dict.fromkeys(SKILLS, 0)
        self._timers: list[tuple[float, int, int, str, int]] = []
        self._timer_seq = 0
        self._call_seq = 0
        self._seat_seq = 0
        self._offer_seq = 0

    def policy(self, skill: str) -> SkillPolicy:
        return self.config.policies.get(skill, _DEFAULT_POLICY)

    # -- seats ---------------------------------------------------------------------------------
    def add_seat(self, spec: SeatSpec, now: float) -> list[Event]:
        if spec.id in self._seats:
            raise DuplicateId(f"seat {spec.id} already exists")
        for skill in spec.skills:
            _check_skill(skill)
        if spec.status not in REQUESTABLE:
            raise IllegalTransition(f"seat {spec.id}: cannot start as {spec.status.value}")
        self._seat_seq += 1
        reason = "initial" if spec.status is S.NOT_READY else None
        seat = Seat(id=spec.id, name=spec.name, contact=spec.contact, skills=dict(spec.skills),
                    status=spec.status, since=now, order=self._seat_seq, reason=reason, idle_since=now,
                    register_user=spec.register_user)
        self._seats[seat.id] = seat
        out = [Event(EventKind.SEATADDED, now, seat_id=seat.id,
                     data={"name": seat.name, "contact": seat.contact, "skills": dict(seat.skills),
                           "status": seat.status.value, "reason": reason})]
        if seat.status is S.AVAILABLE:
            self._make_offerable(seat, now, out)
        return self._done(out)

    def update_seat(self, spec: SeatSpec, now: float) -> list[Event]:
        """Change name, contact, skills and the phone's digest user; the status stays (it changes
        through ``set_status`` only)."""
        seat = self._seat(spec.id)
        for skill in spec.skills:
            _check_skill(skill)
        was_indexed = bool(seat.index_keys)
        self._unindex(seat)
        seat.name, seat.contact, seat.skills = spec.name, spec.contact, dict(spec.skills)
        seat.register_user = spec.register_user
        out = [Event(EventKind.SEATADDED, now, seat_id=seat.id,
                     data={"name": seat.name, "contact": seat.contact, "skills": dict(seat.skills),
                           "status": seat.status.value, "reason": seat.reason, "updated": True})]
        if was_indexed:
            self._make_offerable(seat, now, out)
        return self._done(out)

    def remove_seat(self, seat_id: str, now: float) -> list[Event]:
        """Remove a seat.  A ringing seat gives its call back to the head; a talking seat is refused."""
        seat = self._seat(seat_id)
        if seat.status is S.ON_CALL:
            raise IllegalTransition(f"seat {seat_id} is on a call; remove it after the call")
        out: list[Event] = []
        call = None
        if seat.status is S.RESERVED:
            call = self._calls[seat.call_id]  # type: ignore[index]
            out.append(Event(EventKind.SEATFAILED, now, call_id=call.id, seat_id=seat.id, skill=call.skill,
                             data={"reason": "seat_removed", "attempt": call.attempt}))
            out.append(seat.move(S.AVAILABLE, now, call_id=call.id))
            seat.call_id = None
            self._requeue(call, now)
        elif seat.status is S.WRAP_UP:
            self._end_wrap(seat, now, S.LOGGED_OUT, None, out)
        self._unindex(seat)
        seat.version += 1
        del self._seats[seat_id]
        out.append(Event(EventKind.SEATREMOVED, now, seat_id=seat_id, data={"status": seat.status.value}))
        if call is not None:
            self._offer_for_call(call, now, out)
        return self._done(out)

    def set_status(self, seat_id: str, status: SeatStatus, now: float, reason: str | None = None) -> list[Event]:
        seat = self._seat(seat_id)
        status = SeatStatus(status)
        if status not in REQUESTABLE:
            raise IllegalTransition(f"seat {seat_id}: {status.value} is decided by the ACD, not requested")
        if seat.status in (S.RESERVED, S.ON_CALL):
            raise IllegalTransition(f"seat {seat_id} is {seat.status.value}; change its status after the call")
        if status is S.AVAILABLE and not seat.contact:
            raise IllegalTransition(f"seat {seat_id} has no phone to ring: its phone must register first")
        if status is S.NOT_READY:
            reason = reason or "manual"
        if seat.status is status and (status is not S.NOT_READY or seat.reason == reason):
            return []
        out: list[Event] = []
        if seat.status is S.WRAP_UP:
            self._end_wrap(seat, now, status, reason, out)
            return self._done(out)
        became_available = status is S.AVAILABLE
        self._unindex(seat)
        seat.hold_until = None
        out.append(seat.move(status, now, reason))
        if became_available:
            seat.idle_since = now
            seat.consecutive_rona = 0
            self._make_offerable(seat, now, out)
        return self._done(out)

    def end_wrap_up(self, seat_id: str, now: float) -> list[Event]:
        seat = self._seat(seat_id)
        if seat.status is not S.WRAP_UP:
            raise IllegalTransition(f"seat {seat_id} is {seat.status.value}, not in wrap-up")
        out: list[Event] = []
        self._end_wrap(seat, now, S.AVAILABLE, None, out)
        return self._done(out)

    # -- calls ---------------------------------------------------------------------------------
    def enqueue(self, call_id: str, skill: str, priority: int, now: float, caller: str | None = None,
                info: dict[str, Any] | None = None, place_at: float | None = None,
                only_seat: str | None = None) -> list[Event]:
        """``place_at``: the call's place among its priority (a transferred caller keeps the time
        they first queued, so they go ahead of callers who came later); wait figures still run
        from ``now``.  ``only_seat``: a transfer to a named seat; if that seat does not take it (ring-no-
        answer, failure) the call falls back to the whole skill's queue, so no caller waits for one
        person who is not there."""
        _check_skill(skill)
        if call_id in self._calls:
            raise DuplicateId(f"call {call_id} is already routed")
        self._call_seq += 1
        call = QueuedCall(id=call_id, skill=skill, priority=int(priority), enqueued_at=now, seq=self._call_seq,
                          caller=caller, info=dict(info or {}), skill_entered_at=now, visited={skill},
                          place_at=place_at, only_seat=only_seat)
        self._calls[call_id] = call
        position = self._queues[skill].push(call)
        self._arm_escalation(call, now)
        out = [Event(EventKind.ENTERQUEUE, now, call_id=call_id, skill=skill,
                     data={"priority": call.priority, "caller": caller, "position": position, "info": call.info})]
        self._offer_for_call(call, now, out)
        return self._done(out)

    def seat_answered(self, call_id: str, now: float, seat_id: str | None = None) -> list[Event]:
        call, seat = self._ringing_call(call_id, seat_id)
        call.state = EntryState.CONNECTED
        call.answered_at = now
        self._ringing[call.skill] -= 1
        seat.consecutive_rona = 0
        seat.calls_taken += 1
        out = [Event(EventKind.CONNECT, now, call_id=call.id, seat_id=seat.id, skill=call.skill,
                     data={"wait_s": now - call.enqueued_at, "attempt": call.attempt,
                           "ring_s": now - (call.offered_at or now), "priority": call.priority}),
               seat.move(S.ON_CALL, now, call_id=call.id, skill=call.skill)]
        return self._done(out)

    def ring_no_answer(self, call_id: str, now: float, seat_id: str | None = None) -> list[Event]:
        call, seat = self._ringing_call(call_id, seat_id)
        out: list[Event] = []
        self._ring_no_answer(call, seat, now, out)
        return self._done(out)

    def _ring_no_answer(self, call: QueuedCall, seat: Seat, now: float, out: list[Event]) -> None:
        out.append(Event(EventKind.RINGNOANSWER, now, call_id=call.id, seat_id=seat.id, skill=call.skill,
                         data={"attempt": call.attempt, "ring_s": now - (call.offered_at or now)}))
        seat.consecutive_rona += 1
        if seat.consecutive_rona >= self.config.rona_not_ready_after:
            self._release_seat(seat, call, now, out, not_ready="no answer")
        else:
            self._release_seat(seat, call, now, out, hold=True)

    def seat_failed(self, call_id: str, now: float, reason: str, seat_id: str | None = None,
                    detail: str | None = None) -> list[Event]:
        """``reason`` decides (see UNREACHABLE_REASONS); ``detail`` is the SIP/PJSIP text, kept for people."""
        call, seat = self._ringing_call(call_id, seat_id)
        data: dict[str, Any] = {"reason": reason, "attempt": call.attempt}
        if detail:
            data["detail"] = detail[:200]
        out = [Event(EventKind.SEATFAILED, now, call_id=call.id, seat_id=seat.id, skill=call.skill, data=data)]
        if reason in UNREACHABLE_REASONS:
            self._release_seat(seat, call, now, out, not_ready="unreachable")
        elif reason in LOCAL_REASONS:
            self._release_seat(seat, call, now, out, hold=True)
        else:
            call.excluded.add(seat.id)
            self._release_seat(seat, call, now, out, hold=True)
        return self._done(out)

    def caller_abandoned(self, call_id: str, now: float) -> list[Event]:
        call = self._call(call_id)
        if call.state is EntryState.CONNECTED:
            raise IllegalTransition(f"call {call_id} is connected; a hang-up now is call_completed")
        out: list[Event] = []
        seat = None
        position = None
        if call.state is EntryState.WAITING:
            position = self._queues[call.skill].remove(call)
            for extra in call.also:
                self._queues[extra].remove(call)
        else:
            seat = self._seats[call.seat_id]  # type: ignore[index]
            self._ringing[call.skill] -= 1
        wait_s = now - call.enqueued_at
        out.append(Event(EventKind.ABANDON, now, call_id=call.id, seat_id=seat.id if seat else None,
                         skill=call.skill, data={"wait_s": wait_s, "position": position,
                                                 "state": call.state.value, "priority": call.priority}))
        del self._calls[call_id]
        call.state = EntryState.CONNECTED  # gone: any timer left for it is stale
        if wait_s > self.config.callback_after_s:
            entry = self.callbacks.add(call.id, call.caller, call.skill, call.priority, call.enqueued_at, now,
                                       call.info)
            out.append(Event(EventKind.CALLBACK, now, call_id=call.id, skill=call.skill,
                             data={"action": "queued", "callback_id": entry.id, "caller": call.caller,
                                   "wait_s": wait_s, "for_skill": INTAKE_SKILL}))
        if seat is not None:
            # not the seat's fault: straight back to available, keeping its idle time
            out.append(seat.move(S.AVAILABLE, now, call_id=call.id, skill=call.skill))
            seat.call_id = None
            self._make_offerable(seat, now, out)
        return self._done(out)

    def call_completed(self, call_id: str, now: float, ended_by: str) -> list[Event]:
        call = self._call(call_id)
        if call.state is not EntryState.CONNECTED:
            raise IllegalTransition(f"call {call_id} is {call.state.value}; only a connected call completes")
        seat = self._seats[call.seat_id]  # type: ignore[index]
        out: list[Event] = []
        self._release_consult(call, now, f"call ended ({ended_by})", out)
        del self._calls[call_id]
        self._seat_part_ends(call, seat, now, out, ended_by=ended_by)
        return self._done(out)

    def _seat_part_ends(self, call: QueuedCall, seat: Seat, now: float, out: list[Event], **data: Any) -> None:
        """A seat's part of a conversation ends (hang-up, or a transfer that hands the caller on):
        COMPLETE with its talk and wait times, then the skill's wrap-up (none: available at once)."""
        talk_s = now - (call.answered_at or now)
        out.append(Event(EventKind.COMPLETE, now, call_id=call.id, seat_id=seat.id, skill=call.skill,
                         data={"talk_s": talk_s, **data, "wait_s": (call.answered_at or now) - call.enqueued_at}))
        wrap_s = self.policy(call.skill).wrap_up_s
        out.append(seat.move(S.WRAP_UP, now, call_id=call.id, skill=call.skill, wrap_up_s=wrap_s))
        seat.wrap_skill, seat.wrap_talk_s, seat.call_ended_at = call.skill, talk_s, now
        if wrap_s <= 0:
            self._end_wrap(seat, now, S.AVAILABLE, None, out)
        else:
            self._arm(now + wrap_s, _WRAP, seat.id, seat.version)

    # -- warm (consult) transfers (docs/SEATS.md) ----------------------------------------------
    def consult_reserve(self, call_id: str, now: float, seat_id: str | None = None, skill: str | None = None,
                        info: dict[str, Any] | None = None) -> list[Event]:
        """Reserve seat 2 for a consult on a connected call: the named seat if it is available now,
        else the best available seat of ``skill``.  The seat is ``reserved`` for this call (never
        offered another) until ``consult_release`` or ``consult_complete``; ``info`` (the transfer
        note) joins the call's screen pop.  ``IllegalTransition`` when no seat can take it."""
        call = self._call(call_id)
        if call.state is not EntryState.CONNECTED:
            raise IllegalTransition(f"call {call_id} is {call.state.value}; only a connected call consults")
        if call.consult_seat is not None:
            raise IllegalTransition(f"call {call_id} is already consulting seat {call.consult_seat}")
        if seat_id is not None:
            seat = self._seat(seat_id)
            if seat.id == call.seat_id:
                raise IllegalTransition("a seat cannot consult itself")
            if seat.status is not S.AVAILABLE or not seat.contact:
                raise IllegalTransition(f"seat {seat_id} is {seat.status.value}, not available")
            target = skill or min(seat.skills, key=lambda s: seat.skills[s])
        else:
            _check_skill(skill or "")
            target = str(skill)
            free = next((sid for sid in self._available[target].seat_ids() if sid != call.seat_id), None)
            if free is None:
                raise IllegalTransition(f"no seat available in {target}")
            seat = self._seats[free]
        self._unindex(seat)
        seat.hold_until = None
        seat.call_id = call.id
        call.consult_seat, call.consult_skill = seat.id, target
        call.info.update(info or {})
        return self._done([seat.move(S.RESERVED, now, call_id=call.id, skill=target, consult=call.seat_id)])

    def consult_release(self, call_id: str, now: float, reason: str) -> list[Event]:
        """The consult ended without a hand-over (cancelled, seat 2 did not answer, the caller left):
        seat 2 goes straight back to available, keeping its idle time (no ring-no-answer penalty)."""
        call = self._call(call_id)
        out: list[Event] = []
        self._release_consult(call, now, reason, out)
        return self._done(out)

    def _release_consult(self, call: QueuedCall, now: float, reason: str, out: list[Event]) -> None:
        seat = self._seats.get(call.consult_seat or "")
        skill = call.consult_skill
        call.consult_seat = call.consult_skill = None
        if seat is None or seat.status is not S.RESERVED or seat.call_id != call.id:
            return
        out.append(seat.move(S.AVAILABLE, now, call_id=call.id, skill=skill, consult_ended=reason))
        seat.call_id = None
        self._make_offerable(seat, now, out)

    def consult_complete(self, call_id: str, now: float) -> list[Event]:
        """The hand-over: seat 1's part ends (COMPLETE, wrap-up, as after a blind transfer) and seat 2
        is on the call; the call stays connected, now in the consult's skill."""
        call = self._call(call_id)
        if call.state is not EntryState.CONNECTED or call.consult_seat is None:
            raise IllegalTransition(f"call {call_id} is not consulting")
        seat2 = self._seats[call.consult_seat]
        if seat2.status is not S.RESERVED or seat2.call_id != call.id:
            raise IllegalTransition(f"seat {seat2.id} is {seat2.status.value}, not reserved for {call_id}")
        seat1 = self._seats[call.seat_id]  # type: ignore[index]
        out: list[Event] = []
        self._seat_part_ends(call, seat1, now, out, ended_by="transfer", to_seat=seat2.id)
        call.skill = call.consult_skill or call.skill
        call.seat_id, call.answered_at = seat2.id, now
        call.consult_seat = call.consult_skill = None
        seat2.consecutive_rona = 0
        seat2.calls_taken += 1
        out.append(seat2.move(S.ON_CALL, now, call_id=call.id, skill=call.skill, transferred_from=seat1.id))
        return self._done(out)

    def seat_lost(self, call_id: str, now: float, reason: str) -> list[Event]:
        """The seat's leg was lost mid-conversation (``reason``: ``seat_media_timeout`` when its
        network vanished, ``seat_leg_failed`` on a SIP failure): the seat's part of the call ends
        (COMPLETE with ``ended_by`` ``seat_lost``) and the seat goes ``not_ready`` with ``reason``
        at once (through wrap-up, the only way out of ``on_call``), so no caller is offered to a
        phone that is gone until the agent says it is back.  Not a ring-no-answer: no RONA is
        counted.  The caller, still on the line, is enqueued again by its journey (``enqueue`` with
        ``place_at``: the head of its priority)."""
        call = self._call(call_id)
        if call.state is not EntryState.CONNECTED:
            raise IllegalTransition(f"call {call_id} is {call.state.value}; only a connected call loses its seat")
        seat = self._seats[call.seat_id]  # type: ignore[index]
        talk_s = now - (call.answered_at or now)
        out = [Event(EventKind.COMPLETE, now, call_id=call.id, seat_id=seat.id, skill=call.skill,
                     data={"talk_s": talk_s, "ended_by": "seat_lost", "reason": reason,
                           "wait_s": (call.answered_at or now) - call.enqueued_at})]
        if call.consult_seat is not None:  # a consult under way ends with seat 1's line: seat 2 is free again
            self._release_consult(call, now, reason, out)
        del self._calls[call_id]
        out.append(seat.move(S.WRAP_UP, now, call_id=call.id, skill=call.skill, wrap_up_s=0.0, lost=reason))
        seat.wrap_skill, seat.wrap_talk_s, seat.call_ended_at = call.skill, talk_s, now
        self._end_wrap(seat, now, S.NOT_READY, reason, out)
        return self._done(out)

    # -- callbacks -----------------------------------------------------------------------------
    def take_callback(self, seat_id: str, now: float) -> list[Event]:
        """An intake seat takes the oldest pending callback (CALLBACK action=taken); [] if none."""
        seat = self._seat(seat_id)
        if INTAKE_SKILL not in seat.skills:
            raise IllegalTransition(f"seat {seat_id} has no {INTAKE_SKILL} skill; callbacks are theirs")
        entry = self.callbacks.take(seat_id, now)
        if entry is None:
            return []
        return self._done([Event(EventKind.CALLBACK, now, call_id=entry.call_id, seat_id=seat_id, skill=entry.skill,
                                 data={"action": "taken", **entry.to_dict()})])

    def complete_callback(self, callback_id: str, now: float) -> list[Event]:
        entry = self.callbacks.complete(callback_id, now)
        return self._done([Event(EventKind.CALLBACK, now, call_id=entry.call_id, seat_id=entry.seat_id,
                                 skill=entry.skill, data={"action": "completed", "callback_id": entry.id})])

    # -- lost calls (issue 13) ---------------------------------------------------------------------
    def call_lost(self, call_id: str, now: float, reason: str, caller: str | None = None,
                  info: dict[str, Any] | None = None, enqueued_at: float | None = None,
                  skill: str | None = None, priority: int | None = None) -> list[Event]:
        """A call whose media died (a media worker or the whole node): the caller is no longer on
        the line, through no fault of theirs or of a seat.

        It leaves the queue without counting as abandoned, a seat ringing for it goes straight back
        to available (no ring-no-answer penalty), a seat talking to it goes to wrap-up, and the
        caller always joins the callback list (whatever the wait), with ``reason`` in its info.  A
        call the ACD never saw (lost during the IVR) gets its callback from ``caller``/``info``.
        """
        out: list[Event] = []
        call = self._calls.pop(call_id, None)
        skill = skill if skill in SKILLS else INTAKE_SKILL
        priority = 3 if priority is None else int(priority)
        if call is not None:
            skill, priority, caller = call.skill, call.priority, call.caller if call.caller is not None else caller
            enqueued_at = call.enqueued_at
            info = {**call.info, **(info or {})}
            seat = self._seats.get(call.seat_id) if call.seat_id else None
            state = call.state
            self._release_consult(call, now, reason, out)
            call.state = EntryState.CONNECTED  # gone: any timer left for it is stale
            if state is EntryState.WAITING:
                self._queues[call.skill].remove(call)
            elif state is EntryState.RINGING and seat is not None:
                self._ringing[call.skill] -= 1
                out.append(seat.move(S.AVAILABLE, now, call_id=call.id, skill=call.skill, lost=reason))
                seat.call_id = None
                self._make_offerable(seat, now, out)
            elif state is EntryState.CONNECTED and seat is not None:
                talk_s = now - (call.answered_at or now)
                wrap_s = self.policy(call.skill).wrap_up_s
                out.append(seat.move(S.WRAP_UP, now, call_id=call.id, skill=call.skill, wrap_up_s=wrap_s, lost=reason))
                seat.wrap_skill, seat.wrap_talk_s, seat.call_ended_at = call.skill, talk_s, now
                if wrap_s <= 0:
                    self._end_wrap(seat, now, S.AVAILABLE, None, out)
                else:
                    self._arm(now + wrap_s, _WRAP, seat.id, seat.version)
        cb_id = f"cb-{call_id}"
        if not any(e.id == cb_id for e in self.callbacks.active()):
            enq = now if enqueued_at is None else enqueued_at
            cb_info = {**(info or {}), "lost": reason}
            entry = self.callbacks.add(call_id, caller, skill, priority, enq, now, cb_info, cb_id)
            out.insert(0, Event(EventKind.CALLBACK, now, call_id=call_id, skill=skill,
                                data={"action": "queued", "callback_id": entry.id, "caller": caller,
                                      "wait_s": now - enq, "enqueued_at": enq, "for_skill": INTAKE_SKILL,
                                      "reason": reason, "info": cb_info}))
        return self._done(out)

    # -- time ----------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Event]:
        out: list[Event] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            deadline, _, kind, key, token = heapq.heappop(timers)
            if not self._timer_valid(kind, key, token):
                continue
            if kind == _RING:
                call = self._calls[key]
                self._ring_no_answer(call, self._seats[call.seat_id], now, out)  # type: ignore[index]
            elif kind == _WRAP:
                self._end_wrap(self._seats[key], deadline, S.AVAILABLE, None, out)
            elif kind == _HOLD:
                seat = self._seats[key]
                seat.hold_until = None
                self._make_offerable(seat, now, out)
            elif kind == _ESCALATE:
                self._escalate(self._calls[key], now, out)
        return self._done(out)

    def next_deadline(self) -> float | None:
        timers = self._timers
        while timers and not self._timer_valid(timers[0][2], timers[0][3], timers[0][4]):
            heapq.heappop(timers)
        return timers[0][0] if timers else None

    # -- restart -------------------------------------------------------------------------------
    def restore(self, seats: list[RestoredSeat], waiting: list[RestoredEntry], now: float,
                connected: list[RestoredConnected] | None = None) -> list[Event]:
        """Rebuild after a restart.  A seat that was reserved or on a call comes back ``not_ready``
        with reason ``restart``: its call leg died with the node and nobody should be routed to a
        phone we cannot vouch for until the agent says so.  Wrap-up resumes with what is left of it.
        ``connected``: conversations whose media lived through a restart of the control process:
        their seats stay ``on_call`` bound to them (a seat that was still ringing then is now
        ``on_call``, with the ``CONNECT`` the restart kept from being told).
        """
        self._reset()
        self.callbacks = CallbackList()
        out: list[Event] = []
        talking = {c.seat_id: c for c in connected or ()}
        for rs in seats:
            spec = rs.spec
            for skill in spec.skills:
                _check_skill(skill)
            self._seat_seq += 1
            seat = Seat(id=spec.id, name=spec.name, contact=spec.contact, skills=dict(spec.skills),
                        status=SeatStatus(rs.status), since=rs.since, order=self._seat_seq,
                        reason=rs.reason if rs.status is S.NOT_READY else None, idle_since=rs.since)
            self._seats[seat.id] = seat
            bound = talking.get(seat.id)
            if bound is not None:
                self._restore_connected(seat, bound, now, out)
            elif seat.status in (S.RESERVED, S.ON_CALL):
                out.append(seat.move(S.NOT_READY if seat.status is S.RESERVED else S.WRAP_UP, now, "restart"))
                if seat.status is S.WRAP_UP:  # on_call -> wrap_up -> not_ready("restart")
                    out.append(seat.move(S.NOT_READY, now, "restart"))
            elif seat.status is S.WRAP_UP:
                wrap_s = max((self.policy(s).wrap_up_s for s in seat.skills), default=_DEFAULT_POLICY.wrap_up_s)
                seat.call_ended_at = rs.since
                seat.idle_since = rs.since
                self._arm(max(now, rs.since + wrap_s), _WRAP, seat.id, seat.version)
        for entry in sorted(waiting, key=lambda e: (e.enqueued_at, e.priority, e.call_id)):
            _check_skill(entry.skill)
            self._call_seq += 1
            call = QueuedCall(id=entry.call_id, skill=entry.skill, priority=entry.priority,
                              enqueued_at=entry.enqueued_at, seq=self._call_seq, caller=entry.caller,
                              info=dict(entry.info), skill_entered_at=entry.enqueued_at, visited={entry.skill})
            self._calls[call.id] = call
            self._queues[call.skill].push(call)
            self._arm_escalation(call, now)
        for seat in sorted(self._seats.values(), key=lambda s: s.order):
            if seat.status is S.AVAILABLE:
                self._index(seat)
        for call in sorted(self._calls.values(), key=lambda c: c.key):
            self._offer_for_call(call, now, out)
        return self._done(out)

    def _restore_connected(self, seat: Seat, c: RestoredConnected, now: float, out: list[Event]) -> None:
        self._call_seq += 1
        call = QueuedCall(id=c.call_id, skill=c.skill, priority=c.priority, enqueued_at=c.enqueued_at,
                          seq=self._call_seq, caller=c.caller, info=dict(c.info), skill_entered_at=c.enqueued_at,
                          visited={c.skill}, state=EntryState.CONNECTED, seat_id=seat.id, attempt=1,
                          answered_at=c.answered_at)
        self._calls[call.id] = call
        if seat.status is not S.ON_CALL:
            previous = seat.status
            seat.status, seat.since, seat.reason = S.ON_CALL, now, None
            seat.version += 1
            out.append(Event(EventKind.CONNECT, now, call_id=call.id, seat_id=seat.id, skill=call.skill,
                             data={"wait_s": c.answered_at - c.enqueued_at, "attempt": 1, "ring_s": 0.0,
                                   "priority": call.priority, "restored": True}))
            out.append(Event(EventKind.SEATSTATUS, now, call_id=call.id, seat_id=seat.id, skill=call.skill,
                             data={"status": S.ON_CALL.value, "previous": previous.value, "reason": None,
                                   "restored": True}))
        seat.call_id = call.id

    # -- reads ---------------------------------------------------------------------------------
    def queue_position(self, call_id: str) -> int | None:
        """1 = next to be offered; None when the call is not waiting (ringing, connected, unknown)."""
        call = self._calls.get(call_id)
        if call is None or call.state is not EntryState.WAITING:
            return None
        return self._queues[call.skill].position(call)

    def call_state(self, call_id: str) -> str | None:
        call = self._calls.get(call_id)
        return call.state.value if call else None

    def call_view(self, call_id: str) -> dict[str, Any] | None:
        """A call the ACD holds (waiting, offered or connected); ``info`` carries its screen pop."""
        call = self._calls.get(call_id)
        if call is None:
            return None
        return {"id": call.id, "call_id": call.id, "skill": call.skill, "priority": call.priority,
                "enqueued_at": call.enqueued_at, "state": call.state.value, "seat_id": call.seat_id,
                "attempt": call.attempt, "caller": call.caller, "position": self.queue_position(call_id),
                "offered_at": call.offered_at, "info": dict(call.info), "consult_seat": call.consult_seat}

    def seat_view(self, seat_id: str, now: float) -> dict[str, Any]:
        return self._seat(seat_id).view(now)

    def seats_view(self, now: float) -> list[dict[str, Any]]:
        return [seat.view(now) for seat in self._seats.values()]

    def waiting_entries(self) -> list[RestoredEntry]:
        """Calls not yet connected (waiting or ringing), as they would be restored after a restart."""
        return [RestoredEntry(c.id, c.skill, c.priority, c.enqueued_at, c.caller, dict(c.info))
                for c in self._calls.values() if c.state is not EntryState.CONNECTED]

    def queues_view(self, now: float) -> list[dict[str, Any]]:
        by_status: dict[str, dict[str, int]] = {s: dict.fromkeys((st.value for st in SeatStatus), 0) for s in SKILLS}
        for seat in self._seats.values():
            for skill in seat.skills:
                by_status[skill][seat.status.value] += 1
        views = []
        for skill in SKILLS:
            queue = self._queues[skill]
            oldest = queue.oldest_enqueued_at()
            c = self.metrics.cumulative(skill)
            views.append({
                "skill": skill,
                "waiting": len(queue),
                "ringing": self._ringing[skill],
                "longest_wait_s": max(0.0, now - oldest) if oldest is not None else 0.0,
                "seats_by_status": by_status[skill],
                "offered": c.offered,
                "answered": c.answered,
                "abandoned": c.abandoned,
                "answered_within_sl": c.answered_within_sl,
                "service_level": c.service_level,
                "asa_s": c.asa_s,
                "aht_s": c.aht_s,
                "rona": c.rona,
                "callbacks": c.callbacks,
                "escalated_out": c.escalated_out,
                "escalated_in": c.escalated_in,
                "policy": self.policy(skill).view(self.config),
            })
        return views

    # -- internals -----------------------------------------------------------------------------
    def _done(self, out: list[Event]) -> list[Event]:
        self.metrics.observe_all(out)
        return out

    def _seat(self, seat_id: str) -> Seat:
        seat = self._seats.get(seat_id)
        if seat is None:
            raise UnknownSeat(seat_id)
        return seat

    def _call(self, call_id: str) -> QueuedCall:
        call = self._calls.get(call_id)
        if call is None:
            raise UnknownCall(call_id)
        return call

    def _ringing_call(self, call_id: str, seat_id: str | None) -> tuple[QueuedCall, Seat]:
        call = self._call(call_id)
        if call.state is not EntryState.RINGING:
            raise IllegalTransition(f"call {call_id} is {call.state.value}, not ringing")
        if seat_id is not None and seat_id != call.seat_id:
            raise IllegalTransition(f"call {call_id} rings seat {call.seat_id}, not {seat_id}")
        return call, self._seats[call.seat_id]  # type: ignore[index]

    def _index(self, seat: Seat) -> None:
        for skill, penalty in seat.skills.items():
            key = self._strategies.get(skill, self.strategy).key(seat, penalty)
            seat.index_keys[skill] = key
            self._available[skill].add(key)

    def _unindex(self, seat: Seat) -> None:
        for skill, key in seat.index_keys.items():
            self._available[skill].discard(key)
        seat.index_keys.clear()

    def _make_offerable(self, seat: Seat, now: float, out: list[Event]) -> None:
        """An available seat with no reject delay pending joins the indexes and takes the best call."""
        if seat.status is not S.AVAILABLE or seat.index_keys:
            return
        if not seat.contact:
            return  # a seat phone that is not registered: nothing to ring (gateway.registrations)
        if seat.hold_until is not None and seat.hold_until > now:
            return
        seat.hold_until = None
        if not self._offer_for_seat(seat, now, out):
            self._index(seat)

    def _offer_for_seat(self, seat: Seat, now: float, out: list[Event]) -> bool:
        """Give a free seat the call it should take: lowest penalty skill first, then priority, then age."""
        best: tuple | None = None
        best_call: QueuedCall | None = None
        calls = self._calls
        for skill, penalty in seat.skills.items():
            for call_id in self._queues[skill].call_ids():
                call = calls[call_id]
                if seat.id in call.excluded or (call.only_seat is not None and call.only_seat != seat.id):
                    continue
                rank = (penalty, call.priority, call.key[1], call.seq)
                if best is None or rank < best:
                    best, best_call = rank, call
                break
        if best_call is None:
            return False
        self._offer(best_call, seat, now, out)
        return True

    def _offer_for_call(self, call: QueuedCall, now: float, out: list[Event]) -> bool:
        """Offer a waiting call to the best free seat of its skill, if there is one."""
        if call.state is not EntryState.WAITING:
            return False
        for skill in call.skills:  # its own skill's seats first, then those escalation added
            for seat_id in self._available[skill].seat_ids():
                if seat_id in call.excluded or (call.only_seat is not None and call.only_seat != seat_id):
                    continue
                self._offer(call, self._seats[seat_id], now, out)
                return True
        return False

    def _offer(self, call: QueuedCall, seat: Seat, now: float, out: list[Event]) -> None:
        for skill in call.skills:
            self._queues[skill].remove(call)
        self._unindex(seat)
        call.state = EntryState.RINGING
        call.seat_id = seat.id
        call.attempt += 1
        call.offered_at = now
        self._ringing[call.skill] += 1
        self._offer_seq += 1
        seat.last_offer = self._offer_seq
        seat.call_id = call.id
        expires_at = now + self.config.ring_timeout_s
        out.append(Event(EventKind.OFFER, now, call_id=call.id, seat_id=seat.id, skill=call.skill,
                         data={"contact": seat.contact, "ring_timeout_s": self.config.ring_timeout_s,
                               "attempt": call.attempt, "priority": call.priority, "caller": call.caller,
                               "info": call.info, "wait_s": now - call.enqueued_at, "expires_at": expires_at}))
        out.append(seat.move(S.RESERVED, now, call_id=call.id, skill=call.skill))
        self._arm(expires_at, _RING, call.id, call.attempt)

    def _release_seat(self, seat: Seat, call: QueuedCall, now: float, out: list[Event],
                      not_ready: str | None = None, hold: bool = False) -> None:
        """After a failed ring: the call goes back first (and is offered to another seat), then the seat."""
        if not_ready:
            out.append(seat.move(S.NOT_READY, now, not_ready, call_id=call.id, skill=call.skill))
        else:
            out.append(seat.move(S.AVAILABLE, now, call_id=call.id, skill=call.skill))
        seat.call_id = None
        self._ringing[call.skill] -= 1
        call.only_seat = None  # the named seat did not take it: any seat of the skill now
        self._requeue(call, now)
        self._offer_for_call(call, now, out)
        if not not_ready:
            if hold and self.config.reject_delay_s > 0:
                seat.hold_until = now + self.config.reject_delay_s
                self._arm(seat.hold_until, _HOLD, seat.id, seat.version)
            else:
                self._make_offerable(seat, now, out)

    def _requeue(self, call: QueuedCall, now: float) -> None:
        call.state = EntryState.WAITING
        call.seat_id = None
        for skill in call.skills:
            self._queues[skill].push(call)
        self._arm_escalation(call, now)

    def _end_wrap(self, seat: Seat, now: float, status: SeatStatus, reason: str | None, out: list[Event]) -> None:
        data: dict[str, Any] = {}
        if seat.wrap_skill is not None:
            wrap_s = now - seat.since
            data = {"handle_s": seat.wrap_talk_s + wrap_s, "talk_s": seat.wrap_talk_s, "wrap_s": wrap_s}
        out.append(seat.move(status, now, reason, call_id=seat.call_id, skill=seat.wrap_skill, **data))
        seat.call_id = None
        seat.wrap_skill = None
        if status is S.AVAILABLE:
            seat.idle_since = seat.call_ended_at
            seat.consecutive_rona = 0
            self._make_offerable(seat, now, out)

    def _arm(self, deadline: float, kind: int, key: str, token: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (deadline, self._timer_seq, kind, key, token))

    def _arm_escalation(self, call: QueuedCall, now: float) -> None:
        policy = self.policy(call.skill)
        if policy.escalate:
            if call.escalation_step < len(policy.escalate):
                rule = policy.escalate[call.escalation_step]
                self._arm(max(now, call.skill_entered_at + rule.after_s), _ESCALATE, call.id, call.skill_version)
            return
        if policy.escalate_to is None or policy.escalate_to in call.visited or policy.escalate_after_s is None:
            return
        self._arm(max(now, call.skill_entered_at + policy.escalate_after_s), _ESCALATE, call.id, call.skill_version)

    def _timer_valid(self, kind: int, key: str, token: int) -> bool:
        if kind == _RING:
            call = self._calls.get(key)
            return call is not None and call.state is EntryState.RINGING and call.attempt == token
        if kind == _ESCALATE:
            call = self._calls.get(key)
            return call is not None and call.state is EntryState.WAITING and call.skill_version == token
        seat = self._seats.get(key)
        if seat is None or seat.version != token:
            return False
        if kind == _WRAP:
            return seat.status is S.WRAP_UP
        return seat.status is S.AVAILABLE and seat.hold_until is not None

    def _escalate(self, call: QueuedCall, now: float, out: list[Event]) -> None:
        source = call.skill
        if self.policy(source).escalate:
            self._escalate_by_rules(call, now, out)
            return
        target = self.policy(source).escalate_to
        if target is None or target in call.visited:
            return
        for skill in call.skills:
            self._queues[skill].remove(call)
        call.skill = target
        call.also = [s for s in call.also if s != target]
        for extra in call.also:
            self._queues[extra].push(call)
        call.skill_version += 1
        call.escalation_step = 0
        call.skill_entered_at = now
        call.visited.add(target)
        position = self._queues[target].push(call)
        out.append(Event(EventKind.ESCALATE, now, call_id=call.id, skill=target,
                         data={"from": source, "to": target, "wait_s": now - call.enqueued_at,
                               "position": position, "priority": call.priority}))
        self._arm_escalation(call, now)
        self._offer_for_call(call, now, out)


    def _escalate_by_rules(self, call: QueuedCall, now: float, out: list[Event]) -> None:
        """Apply every rule of the call's queue that is due: also offer it to another skill's seats
        (it keeps its place in its own queue), or raise its priority (it moves up, keeping its age)."""
        rules = self.policy(call.skill).escalate
        waited = now - call.skill_entered_at
        while call.escalation_step < len(rules) and rules[call.escalation_step].after_s <= waited:
            rule = rules[call.escalation_step]
            call.escalation_step += 1
            data: dict[str, Any] = {"from": call.skill, "wait_s": now - call.enqueued_at}
            if rule.also is not None:
                if rule.also in call.skills:
                    continue
                call.also.append(rule.also)
                data["also"] = rule.also
                data["position"] = self._queues[rule.also].push(call)
            elif rule.priority is not None:
                if rule.priority >= call.priority:
                    continue
                for skill in call.skills:
                    self._queues[skill].remove(call)
                data["previous_priority"] = call.priority
                call.priority = rule.priority
                for skill in call.skills:
                    self._queues[skill].push(call)
            data["priority"] = call.priority
            out.append(Event(EventKind.ESCALATE, now, call_id=call.id, skill=call.skill, data=data))
        call.skill_version += 1
        self._arm_escalation(call, now)
        self._offer_for_call(call, now, out)


def _check_skill(skill: str) -> None:
    if skill not in SKILLS:
        raise UnknownSkill(f"unknown skill {skill!r}")
