"""``CallJourney``: one call walked through ``journey.stages``, whatever media carries it.

The media adapters (the SIP call director, the Twilio webhook handler) translate the wire into
the methods below and the methods' answers back into media (prompts, seat dialling, TwiML).
Everything the two have in common lives here, once:

* the stage and every move of it, through the transition table (an event the table does not have
  for the current stage is logged as an error with the call id and changes nothing);
* the reports to the ACD (enqueue, seat answered / not taken, abandoned, completed) in the order
  that keeps the ACD and the journey in step: the journey moves first, then reports, so an
  ``OFFER`` the report causes finds the call already back in ``queued``;
* the call record's lifecycle events (CALLSTART, IVRDONE, CALLEND), built in one place;
* the metrics of a call (IVR outcome, ring time, hand-off latency, end reason).

The routing service's reports are synchronous (``Emitted`` lists); a report the ACD refuses
because it already moved on (its own ring timer fired first) is logged, not raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from journey import metrics
from journey.failures import RONA, SeatOutcome, seat_lost_reason
from journey.notifier import JourneyNotifier
from journey.stages import CONVERSATION, WAITING, Cause, Stage, UnexpectedEvent, next_stage
from routing.errors import RoutingError
from routing.events import Event, EventKind

log = logging.getLogger("journey")

#: A caller re-queued without a known priority (a Twilio journey back after a restart) waits at
#: this one (the most urgent).
REQUEUE_PRIORITY = 1


class RoutingPort(Protocol):
    """The routing service as a journey uses it (``routing.service.RoutingService``)."""

    acd: Any

    def record(self, events: list[Event]) -> Any: ...
    def enqueue(self, call_id: str, skill: str, priority: int, caller: str | None = None,
                info: dict[str, Any] | None = None, place_at: float | None = None,
                only_seat: str | None = None) -> Any: ...
    def seat_answered(self, call_id: str, seat_id: str | None = None) -> Any: ...
    def ring_no_answer(self, call_id: str, seat_id: str | None = None) -> Any: ...
    def seat_failed(self, call_id: str, reason: str, seat_id: str | None = None) -> Any: ...
    def caller_abandoned(self, call_id: str) -> Any: ...
    def call_completed(self, call_id: str, ended_by: str) -> Any: ...
    def seat_lost(self, call_id: str, reason: str) -> Any: ...
    def call_lost(self, call_id: str, reason: str, caller: str | None = None,
                  info: dict[str, Any] | None = None, enqueued_at: float | None = None) -> Any: ...
    def consult_reserve(self, call_id: str, seat_id: str | None = None, skill: str | None = None,
                        info: dict[str, Any] | None = None) -> Any: ...
    def consult_release(self, call_id: str, reason: str) -> Any: ...
    def consult_complete(self, call_id: str) -> Any: ...


@dataclass(slots=True)
class Offer:
    """A seat the ACD reserved for this call."""

    seat_id: str
    contact: str
    skill: str
    ring_timeout_s: float
    attempt: int
    offered_at: float
    rang_at: float | None = None
    #: the routing epoch of the leader that made the offer (cluster mode; None on a single node)
    epoch: int | None = None


@dataclass(slots=True)
class Consult:
    """A warm transfer under way: seat 2, reserved for this call by the ACD, is being called."""

    seat_id: str
    contact: str
    skill: str
    note: str | None
    by: str
    from_seat: str | None
    started: bool = False          # the worker is dialling (the journey is in ``consulting``)
    answered: bool = False         # seat 2 answered and talks with seat 1


@dataclass
class CallJourney:
    call_id: str
    caller: str
    ingress: str                       # sip | twilio
    node_id: str
    started_at: float
    routing: RoutingPort
    notifier: JourneyNotifier
    stage: Stage = Stage.ANSWERED
    skill: str | None = None
    priority: int | None = None
    offer: Offer | None = None
    seat_id: str | None = None         # the seat talking to the caller
    recording_id: str | None = None
    outcome: str | None = None         # end reason, once the line is closed
    ended_by: str | None = None
    ivr_record: dict[str, Any] = field(default_factory=dict)  # the IVR's decision, for every screen pop
    queue_info: dict[str, Any] = field(default_factory=dict)  # what the queue entry carries to a seat
    history: list[tuple[Stage, Cause, Stage]] = field(default_factory=list)
    queued_at: float | None = None     # when the IVR first queued the call (its place after a transfer)
    consult: Consult | None = None     # a warm transfer under way

    # -- the table ------------------------------------------------------------------------------
    def _move(self, cause: Cause, at: float, detail: str = "", seat_id: str | None = None) -> bool:
        try:
            dst = next_stage(self.stage, cause)
        except UnexpectedEvent:
            self.notifier.unexpected(self.call_id, self.stage, cause, detail)
            return False
        src, self.stage = self.stage, dst
        self.history.append((src, cause, dst))
        if seat_id is None:
            self.notifier.transition(self.call_id, src, dst, cause, at, detail)
        else:
            self.notifier.transition(self.call_id, src, dst, cause, at, detail, seat_id=seat_id)
        return True

    def _report(self, command: str, *args: Any, **kw: Any) -> None:
        try:
            getattr(self.routing, command)(self.call_id, *args, **kw)
        except RoutingError as e:
            log.info("routing_report_refused", extra={"call_id": self.call_id, "command": command, "error": str(e)})

    @property
    def waiting(self) -> bool:
        return self.stage in WAITING

    @property
    def live(self) -> bool:
        return self.stage not in (Stage.WRAP_UP, Stage.ENDED)

    # -- answer and IVR -------------------------------------------------------------------------
    def answered(self, at: float, callee: str, **wire: Any) -> None:
        """The line is open: CALLSTART (with what the ingress knows of the wire), then the IVR."""
        self.notifier.record([Event(EventKind.CALLSTART, at, call_id=self.call_id, data={
            "caller": self.caller, "callee": callee, "ingress": self.ingress, "node_id": self.node_id,
            "answered_at": at, **wire})])
        self._move(Cause.IVR_STARTED, at)

    def routed(self, skill: str, priority: int, reason: str, record: dict[str, Any], at: float,
               screen_pop: dict[str, Any] | None = None) -> bool:
        """The IVR decided.  The caller is queued before anything is played to them.

        ``screen_pop`` is the record in words (``ivr.screen_pop.describe``): the adapter has the flow.
        """
        if not self._move(Cause.IVR_ROUTED, at, f"{skill} p{priority} ({reason})"):
            return False
        self.skill, self.priority, self.ivr_record = skill, priority, record
        self.queued_at = at
        metrics.count_ivr_outcome(skill, reason)
        self.notifier.record([Event(EventKind.IVRDONE, at, call_id=self.call_id, skill=skill,
                                    data={"record": record, "priority": priority, "reason": reason})])
        info = {"ivr": record, "caller": self.caller, "started_at": self.started_at, "node_id": self.node_id,
                "recording_id": self.recording_id, "ingress": self.ingress, "screen_pop": screen_pop or {}}
        self.queue_info = info
        self._report("enqueue", skill, priority, caller=self.caller, info=info)
        return True

    # -- routing decisions ----------------------------------------------------------------------
    def routing_event(self, ev: Event, now: float) -> Offer | bool | None:
        """An ACD decision about this call.  Returns the new ``Offer`` for an OFFER, True when the
        ACD itself released the seat being rung (its ring timer: the adapter hangs up that leg)."""
        if ev.kind is EventKind.OFFER and ev.seat_id:
            if not self._move(Cause.OFFERED, now, f"seat {ev.seat_id}"):
                return None
            self.offer = Offer(seat_id=ev.seat_id, contact=str(ev.data.get("contact") or ""),
                               skill=str(ev.skill or self.skill), attempt=int(ev.data.get("attempt") or 0),
                               ring_timeout_s=float(ev.data.get("ring_timeout_s") or 20.0), offered_at=now,
                               epoch=int(ev.data["epoch"]) if ev.data.get("epoch") is not None else None)
            return self.offer
        if ev.kind in (EventKind.RINGNOANSWER, EventKind.SEATFAILED):
            if self.offer is None or self.offer.seat_id != ev.seat_id:
                return None  # the echo of our own report: the journey already moved on
            self._seat_released(RONA if ev.kind is EventKind.RINGNOANSWER else str(ev.data.get("reason")), now)
            return True
        if ev.kind is EventKind.ESCALATE:
            d = ev.data
            to = str(d.get("to") or self.skill)
            detail = (f"also offered to {d['also']}" if d.get("also") else
                      f"priority {d.get('previous_priority')} -> {d['priority']}" if "previous_priority" in d else
                      f"{d.get('from')} -> {to}")
            if self._move(Cause.ESCALATED, now, detail):
                self.skill = to
        return None

    def _seat_released(self, kind: str, now: float) -> None:
        """The ACD gave up on the seat being rung on its own (ring timer): no report back."""
        assert self.offer is not None
        if self._move(Cause.SEAT_NOT_TAKEN, now, f"seat {self.offer.seat_id}: {kind} (routing)"):
            self._count_ring(now, kind)
            self.offer = None

    # -- the seat leg ---------------------------------------------------------------------------
    def seat_ringing(self, seat_id: str, at: float) -> bool:
        if self.offer is None or self.offer.seat_id != seat_id:
            log.info("journey_stale_report", extra={"call_id": self.call_id, "report": "seat_ringing",
                                                    "seat_id": seat_id})
            return False
        if self._move(Cause.SEAT_RINGING, at, f"seat {seat_id}"):
            self.offer.rang_at = at
            return True
        return False

    def seat_answered(self, seat_id: str, answered_at: float, bridged_at: float | None) -> bool:
        """The seat answered (its 200 OK at ``answered_at``) and is bridged at ``bridged_at``
        (``None`` when the ingress cannot see the bridge: Twilio)."""
        offer = self.offer
        if offer is None or offer.seat_id != seat_id:
            log.info("journey_stale_report", extra={"call_id": self.call_id, "report": "seat_answered",
                                                    "seat_id": seat_id})
            return False
        if not self._move(Cause.SEAT_ANSWERED, bridged_at or answered_at, f"seat {seat_id}"):
            return False
        skill = offer.skill or self.skill or ""
        metrics.observe_ring_time(answered_at - offer.offered_at, skill, "answered")
        if bridged_at is not None:
            metrics.observe_handoff_latency(bridged_at - answered_at, skill)
        self.offer, self.seat_id = None, seat_id
        self._report("seat_answered", seat_id=seat_id)
        return True

    def seat_not_taken(self, seat_id: str, outcome: SeatOutcome, now: float) -> bool:
        """The seat leg ended before a conversation.  False (and nothing changes) when it is about
        a seat this call no longer waits for (the ACD's ring timer already moved on)."""
        if self.offer is None or self.offer.seat_id != seat_id or not self.waiting:
            log.info("journey_stale_report", extra={"call_id": self.call_id, "report": "seat_not_taken",
                                                    "seat_id": seat_id, "kind": outcome.kind})
            return False
        if not self._move(Cause.SEAT_NOT_TAKEN, now, f"seat {seat_id}: {outcome.kind} ({outcome.detail})"):
            return False
        self._count_ring(now, outcome.kind)
        if outcome.is_sip_error:
            metrics.count_sip_error(outcome.sip_code, leg="seat")
        self.offer = None
        if outcome.kind == RONA:
            self._report("ring_no_answer", seat_id=seat_id)
        else:
            self._report("seat_failed", outcome.kind, seat_id=seat_id, detail=outcome.detail or None)
        return True

    def seat_leg_lost(self, code: int, reason: str, now: float) -> bool:
        """The seat leg failed mid-conversation (no BYE: the seat's network vanished, or a SIP
        failure).  The seat's part is over and it goes ``not_ready`` with the reason (never a
        ring-no-answer); the caller, still on the line and never hung up, waits again in the same
        skill at the head of their priority (their place is their first queueing time, as after a
        blind transfer), carrying the IVR record, the screen pop and a note that the previous
        seat's line was lost."""
        from_seat = self.seat_id
        kind = seat_lost_reason(reason)
        detail = f"seat {from_seat}: " + (reason if reason.startswith(kind) else f"{kind} ({code} {reason})")
        if not self._move(Cause.SEAT_LEG_LOST, now, detail):
            return False
        self.seat_id = None
        self._report("seat_lost", kind)
        lost = {"seat": from_seat, "reason": kind, "detail": reason[:200], "at": now}
        self.queue_info = {**self.queue_info, "seat_lost": [*self.queue_info.get("seat_lost", []), lost],
                           "lost_seat": from_seat, "requeued_after": kind}
        self._report("enqueue", self.skill or "intake_guidance", self.priority or REQUEUE_PRIORITY,
                     caller=self.caller, info=self.queue_info, place_at=self.queued_at)
        return True

    def transferred(self, to_skill: str, note: str | None, by: str, now: float, mode: str = "blind",
                    to_seat: str | None = None) -> bool:
        """A blind transfer: the seat's part is over (wrap-up), the caller, never hung up, waits
        for ``to_skill`` at the head of their priority (their place is their first queueing
        time), carrying the IVR record, the screen pop and every transfer note so far."""
        from_seat = self.seat_id
        target = f"seat {to_seat} ({to_skill})" if to_seat else to_skill
        if not self._move(Cause.TRANSFERRED, now, f"seat {from_seat} -> {target} ({mode}, by {by})"):
            return False
        self.seat_id = None
        self._report("call_completed", "transfer")
        hop = {"from_seat": from_seat, "to_skill": to_skill, "to_seat": to_seat, "note": note, "by": by, "mode": mode,
               "at": now}
        self.queue_info = {**self.queue_info, "transfers": [*self.queue_info.get("transfers", []), hop],
                           "transfer_note": note, "transferred_from": from_seat}
        self.skill = to_skill
        self._report("enqueue", to_skill, self.priority or REQUEUE_PRIORITY, caller=self.caller,
                     info=self.queue_info, place_at=self.queued_at, only_seat=to_seat)
        return True

    # -- warm (consult) transfer ------------------------------------------------------------------
    def consult_reserve(self, to_seat: str | None, to_skill: str | None, note: str | None, by: str,
                        now: float) -> Consult:
        """Ask the ACD for seat 2 (the named seat if available now, else a free seat of the skill),
        reserved for this call; its screen pop gets seat 1's note.  ``TransferRefused`` (409) when
        none can take it.  The journey does not move until the worker is dialling."""
        from journey.transfer import TransferRefused

        if self.consult is not None:
            raise TransferRefused(409, f"call {self.call_id} is already consulting seat {self.consult.seat_id}")
        from_seat = self.seat_id
        hop = {"from_seat": from_seat, "to_skill": to_skill, "to_seat": to_seat, "note": note, "by": by,
               "mode": "warm", "at": now}
        info = {"transfers": [*self.queue_info.get("transfers", []), hop], "transfer_note": note,
                "transferred_from": from_seat}
        try:
            events = self.routing.consult_reserve(self.call_id, seat_id=to_seat, skill=to_skill, info=info)
        except RoutingError as e:
            raise TransferRefused(409, str(e)) from None
        ev = next(e for e in events if e.seat_id)
        view = self.routing.acd.seat_view(ev.seat_id, now)
        self.queue_info = {**self.queue_info, **info}
        self.consult = Consult(seat_id=str(ev.seat_id), contact=str(view.get("contact") or ""),
                               skill=str(ev.skill or to_skill or self.skill), note=note, by=by, from_seat=from_seat)
        return self.consult

    def consult_unreserve(self, reason: str) -> None:
        """The consult never started (the worker had no free call): seat 2 is free again, no move."""
        if self.consult is not None and not self.consult.started:
            self.consult = None
            self._report("consult_release", reason)

    def consult_started(self, now: float) -> bool:
        c = self.consult
        if c is None or not self._move(Cause.CONSULT_STARTED, now,
                                       f"seat {c.from_seat} -> seat {c.seat_id} ({c.skill}) (warm, by {c.by})",
                                       seat_id=c.from_seat):
            return False
        c.started = True
        return True

    def consult_completed(self, now: float, reason: str) -> bool:
        """Seat 2 has the caller: seat 1 to wrap-up (as after a blind transfer), seat 2 on the call."""
        c = self.consult
        if c is None or not self._move(Cause.CONSULT_COMPLETED, now,
                                       f"seat {c.from_seat} -> seat {c.seat_id} ({c.skill}): {reason}",
                                       seat_id=c.from_seat):
            return False
        self.consult, self.seat_id, self.skill = None, c.seat_id, c.skill
        self._report("consult_complete")
        return True

    def consult_cancelled(self, now: float, reason: str) -> bool:
        """The caller is back with seat 1; seat 2 is released without any penalty."""
        c = self.consult
        if c is None or not self._move(Cause.CONSULT_CANCELLED, now, f"seat {c.seat_id}: {reason}",
                                       seat_id=c.from_seat):
            return False
        self.consult = None
        self._report("consult_release", reason)
        return True

    def consult_seat_left(self, now: float) -> bool:
        """Seat 1 left before seat 2 answered: the consult becomes a blind transfer to seat 2 (its
        reservation is given back and the caller queues for that seat first, then its skill)."""
        c = self.consult
        if c is None:
            return False
        self.consult = None
        self._report("consult_release", "seat 1 left before seat 2 answered")
        hops = self.queue_info.get("transfers", [])
        self.queue_info = {**self.queue_info, "transfers": hops[:-1]}  # transferred() writes this hop again
        return self.transferred(c.skill, c.note, c.by, now, mode="warm", to_seat=c.seat_id)

    def held(self, by: str, now: float) -> bool:
        """The seat put the caller on hold (the caller hears hold audio, the seat stays on the line)."""
        return self._move(Cause.HELD, now, f"seat {self.seat_id} (by {by})")

    def resumed(self, by: str, now: float) -> bool:
        return self._move(Cause.RESUMED, now, f"seat {self.seat_id} (by {by})")

    def _count_ring(self, now: float, kind: str) -> None:
        if self.offer is not None:
            metrics.observe_ring_time(now - self.offer.offered_at, self.offer.skill or self.skill or "", kind)

    # -- the end --------------------------------------------------------------------------------
    def hung_up(self, by: str, now: float, record: dict[str, Any] | None = None) -> str | None:
        """The line closed (``by`` caller | seat | gateway | error).  Tells the ACD, returns the end
        reason; ``record`` is the IVR's decision record, written when the call ends in the IVR."""
        stage = self.stage
        cause = Cause.SEAT_HUNG_UP if by == "seat" and stage in CONVERSATION else Cause.CALLER_HUNG_UP
        if not self._move(cause, now, f"by {by}"):
            return None
        self.ended_by = by
        self.consult = None  # the ACD frees a reserved seat 2 with the call (call_completed / call_lost)
        if stage in (Stage.ANSWERED, Stage.IN_IVR):
            outcome = "caller_hangup_in_ivr"
            self._ivr_ended(now, outcome, "caller_hangup", record)
        elif stage in WAITING:
            outcome = "abandoned"
            if self.offer is not None:
                self._count_ring(now, "abandoned")
            self._report("caller_abandoned")
        else:
            outcome = "completed"
            self._report("call_completed", by)
        self.offer = None
        self.outcome = outcome
        return outcome

    def line_lost(self, reason: str, now: float, record: dict[str, Any] | None = None) -> str | None:
        """The media carrying the caller died (``reason``: ``lost_worker_failure``): neither the
        caller's choice nor a seat's fault, and the caller may not be lost with it.

        The ACD is told ``call_lost``: the call leaves the queue without counting as abandoned, a
        seat being rung goes straight back to available (no ring-no-answer penalty), a seat
        talking to it goes to wrap-up, and the caller joins the callback list with their number,
        the IVR's answers (``record``: the interpreter's record, partial while in the IVR) and the
        stage the line was lost in.  Returns the end reason (None if the call had already ended).
        """
        stage = self.stage
        if not self._move(Cause.LINE_LOST, now, reason):
            return None
        self.ended_by = "error"
        self.consult = None
        record = record or self.ivr_record
        if stage in (Stage.ANSWERED, Stage.IN_IVR):
            self._ivr_ended(now, reason, "line_lost", record)
        elif self.offer is not None:
            self._count_ring(now, "line_lost")
        info: dict[str, Any] = {**self.queue_info, "caller": self.caller, "lost_in": stage.value,
                                "ingress": self.ingress, "node_id": self.node_id}
        if record:
            info["ivr"] = record
        self._report("call_lost", reason, caller=self.caller, info=info, enqueued_at=self.started_at)
        self.offer = None
        self.outcome = reason
        return reason

    def _ivr_ended(self, now: float, outcome: str, counted_as: str, record: dict[str, Any] | None) -> None:
        """The call ended before the IVR decided: its (partial) record is still written."""
        metrics.count_ivr_outcome("", counted_as)
        self.notifier.record([Event(EventKind.IVRDONE, now, call_id=self.call_id,
                                    data={"record": record or {}, "reason": outcome})])

    def closed(self, now: float, recording_id: str | None = None) -> bool:
        """The record is sealed: CALLEND is the call's last event."""
        if not self._move(Cause.CLOSED, now):
            return False
        if recording_id is not None:
            self.recording_id = recording_id
        metrics.count_call_ended(self.outcome or "ended")
        self.notifier.record([Event(EventKind.CALLEND, now, call_id=self.call_id, data={
            "reason": self.outcome, "ended_by": self.ended_by, "recording_id": self.recording_id})])
        return True
