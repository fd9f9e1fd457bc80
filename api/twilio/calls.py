"""Twilio calls in flight: the same IVR interpreter and the same ACD as a SIP call, driven by webhooks.

The journey (stages, reports to the ACD, the call record's events, metrics) is
``journey.call.CallJourney``, shared with SIP calls; this is its Twilio media adapter.

Twilio asks "what next?" at every step; each answer is a TwiML document.  The decisions are not
made here: ``ivr.IvrSession`` decides what the caller hears and where the call goes, the routing
service decides which seat takes it.  This module translates webhooks into their events and their
actions into TwiML, with three rules:

* Steps.  Every document that leads back to us carries ``step=N``.  The answer to a step is kept, so
  a replayed webhook (same CallSid, same step) gets the same TwiML and changes nothing; a step that
  was never issued, or is already superseded, is refused (``StaleStep``).
* Barge-in.  ``<Gather>`` stops its ``<Play>`` at the first key, as the SIP media does; Twilio does
  not say whether the key came during the prompt or in the silence after it, so the time since the
  ``<Gather>`` was issued is compared with the prompts' lengths and the interpreter is told
  ``prompt_finished`` for the prompts that did end.  Decisions do not depend on that (a key means
  the same during or after a prompt); the decision record's timestamps and ``barge_in`` do.
* Holding.  Twilio cannot be told to leave a ``<Play>`` early without its REST API, so the caller
  hears one short hold segment at a time (the hold message, then the queue position, like SIP) and
  is redirected back; the poll after the routing service's ``OFFER`` dials the seat.

Seat dialling: the ``<Dial>`` going out is the journey's ``seat_ringing``; the ``<Sip>``
``answered`` status callback is ``seat_answered``; the ``<Dial>`` action's ``DialCallStatus`` is
mapped by ``journey.failures.from_twilio`` (``no-answer`` a RONA, ``busy``, ``failed`` unreachable,
``canceled``), the same mapping SIP failures take; ``completed``/``answered`` means the seat talked
and hung up (if the answered callback was lost, ``seat_answered`` first).  The number's call status
callback is the caller hanging up.  Every end writes ``CALLEND`` (``CallJourney.closed``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

from api.twilio.context import TwilioContext
from api.twilio.inflight import GatherStep, TwilioCall, call_id_for
from api.twilio.store import adopt, save
from api.twilio.twiml import Prompt, TwimlBuilder, flow_texts, queue_position_ids, shipped_prompt
from ivr.interpreter import Action, IvrSession, Play, Route, StartTimer
from ivr.screen_pop import describe
from journey.call import CallJourney, Offer
from journey.failures import from_twilio
from journey.notifier import JourneyNotifier
from journey.stages import Stage
from routing.events import Event

log = logging.getLogger("api.twilio")

#: Call statuses after which the caller is gone (Twilio's terminal ``CallStatus`` values).
TERMINAL_STATUSES = frozenset({"completed", "canceled", "no-answer", "busy", "failed"})
#: ``DialCallStatus`` values meaning the seat picked up (and the bridge has now ended).
TALKED_STATUSES = frozenset({"completed", "answered"})
#: Ended calls kept so that late or replayed webhooks are still answered idempotently.
ENDED_KEPT = 10_000
#: Twilio stops ringing this much before the ACD's ring timer, so its no-answer report wins the race.
RING_MARGIN_S = 2
MIN_RING_S = 5


class UnknownTwilioCall(LookupError):
    """A webhook about a CallSid this node does not know (never started here, or long ended)."""


class StaleStep(ValueError):
    """A step that was never issued or is already superseded (not a replay of an answered one)."""


class TwilioCalls:
    """Registry and translator of this node's Twilio calls; runs on the routing service's loop."""

    def __init__(self, ctx: TwilioContext) -> None:
        self.ctx = ctx
        self.routing = ctx.routing
        self.twiml = TwimlBuilder(ctx.public_base_url)
        self.notifier = JourneyNotifier(ctx.routing, ingress="twilio")
        self.live: dict[str, TwilioCall] = {}
        self.ended: OrderedDict[str, TwilioCall] = OrderedDict()
        self._by_call_id: dict[str, TwilioCall] = {}
        self.journeys = ctx.journeys  # issue 13: journeys kept across a restart (``api.twilio.store``)

    def listen(self) -> None:
        """Follow the routing service's decisions (OFFER, RONA by its own timer, escalation)."""
        self.routing.on_event(self.routing_event)

    def register(self, call: TwilioCall) -> None:
        """Keep ``call`` for its webhooks: live ones also follow the routing service's decisions."""
        if call.journey.live:
            self.live[call.sid] = call
            self._by_call_id[call.call_id] = call
        else:
            self.ended[call.sid] = call

    def get(self, sid: str) -> TwilioCall:
        call = self.live.get(sid) or self.ended.get(sid)
        if call is None:
            raise UnknownTwilioCall(sid)
        return call

    async def _get(self, sid: str) -> TwilioCall:
        """``get``, or the call as the node saved it before a restart (issue 13, ``api.twilio.store``)."""
        call = self.live.get(sid) or self.ended.get(sid) or await adopt(self, sid)
        if call is None:
            raise UnknownTwilioCall(sid)
        return call

    async def _keep(self, call: TwilioCall, key: tuple[str, int], answer: str) -> None:
        """Remember an answer for replays, and save the journey before the answer goes out."""
        call.answers[key] = answer
        await self._save(call)

    async def _save(self, call: TwilioCall) -> None:
        await save(self, call)

    # ---- webhooks -----------------------------------------------------------------------------

    async def voice(self, sid: str, caller: str, callee: str) -> str:
        """A new call reached the centre's number: open its record and ask the first question."""
        call = self.live.get(sid) or self.ended.get(sid)
        if call is None:
            now = self.ctx.clock()
            flow = self.ctx.flow()
            call_id = call_id_for(sid)
            journey = CallJourney(call_id=call_id, caller=caller, ingress="twilio", node_id=self.ctx.node_id,
                                  started_at=now, routing=self.routing, notifier=self.notifier)
            call = TwilioCall(journey=journey, sid=sid, callee=callee, flow=flow, session=IvrSession(flow, call_id))
            self.register(call)
            async with call.lock:
                journey.answered(now, callee, twilio_call_sid=sid)
                answer = self._after_ivr(call, call.feed("start", now), now)
                await self._keep(call, ("voice", 0), answer)
                return answer
        async with call.lock:
            return call.answers[("voice", 0)]

    async def gather_result(self, sid: str, step: int, digits: str) -> str:
        call = await self._get(sid)
        async with call.lock:
            replay = call.answers.get(("gather", step))
            if replay is not None:
                return replay
            if call.stage is not Stage.IN_IVR or step != call.step or call.gather is None:
                raise StaleStep(f"gather step {step} of {call.call_id} is not current")
            now = self.ctx.clock()
            actions = self._translate_gather(call, call.gather, digits, now)
            answer = self._after_ivr(call, actions, now)
            await self._keep(call, ("gather", step), answer)
            return answer

    async def hold_poll(self, sid: str, step: int) -> str:
        call = await self._get(sid)
        async with call.lock:
            replay = call.answers.get(("hold", step))
            if replay is not None:
                return replay
            if not call.journey.waiting or step != call.step:
                raise StaleStep(f"hold step {step} of {call.call_id} is not current")
            answer = self._next_while_waiting(call, self.ctx.clock())
            await self._keep(call, ("hold", step), answer)
            return answer

    async def seat_status(self, sid: str, step: int, seat_id: str, status: str) -> str:
        """The ``<Sip>`` leg's status callback: ``answered`` is the moment the seat is bridged."""
        call = await self._get(sid)
        async with call.lock:
            replay = call.answers.get(("seat-status", step))
            if replay is not None:
                return replay
            if step > call.step:
                raise StaleStep(f"seat-status step {step} of {call.call_id} was never issued")
            if status in ("in-progress", "answered") and call.stage is Stage.RINGING_SEAT \
                    and call.dialed_seat == seat_id:
                self._seat_answered(call, seat_id)
            answer = self.twiml.empty()
            await self._keep(call, ("seat-status", step), answer)
            return answer

    async def dial_result(self, sid: str, step: int, seat_id: str, dial_status: str) -> str:
        """The ``<Dial>`` ended: the seat talked and hung up, or never took the call (RONA)."""
        call = await self._get(sid)
        async with call.lock:
            replay = call.answers.get(("dial-status", step))
            if replay is not None:
                return replay
            if step != call.step and call.journey.live:
                raise StaleStep(f"dial-status step {step} of {call.call_id} is not current")
            now = self.ctx.clock()
            if not call.journey.live:
                answer = self.twiml.hangup()
            elif dial_status in TALKED_STATUSES and call.dialed_seat == seat_id:
                if call.stage is Stage.RINGING_SEAT:
                    self._seat_answered(call, seat_id)  # the answered callback never came
                self._finish(call, "seat")
                answer = self.twiml.hangup()
            else:
                log.warning("twilio_seat_not_taken", extra={"call_id": call.call_id, "seat_id": seat_id,
                                                            "dial_status": dial_status})
                if call.dialed_seat == seat_id:
                    call.journey.seat_not_taken(seat_id, from_twilio(dial_status), now)
                call.dialed_seat = None
                answer = self._next_while_waiting(call, now)
            await self._keep(call, ("dial-status", step), answer)
            return answer

    async def call_status(self, sid: str, status: str) -> str:
        """The number's status callback: the caller's leg ended (hung up, or failed)."""
        if status not in TERMINAL_STATUSES:
            return self.twiml.empty()
        try:
            call: TwilioCall | None = await self._get(sid)
        except UnknownTwilioCall:
            call = None
        if call is None or not call.journey.live:
            return self.twiml.empty()
        async with call.lock:
            if call.journey.live:
                self._finish(call, "caller")
                await self._save(call)  # issue 13: an ended journey is never adopted as alive
            return self.twiml.empty()

    # ---- routing decisions --------------------------------------------------------------------

    def routing_event(self, ev: Event) -> None:
        call = self._by_call_id.get(ev.call_id or "")
        if call is None or not call.journey.live:
            return
        # An OFFER waits for the caller's next hold poll, which dials the seat.
        call.journey.routing_event(ev, self.ctx.clock())

    # ---- translation --------------------------------------------------------------------------
    def _translate_gather(self, call: TwilioCall, step: GatherStep, digits: str, now: float) -> list[Action]:
        """Tell the interpreter what happened during one ``<Gather>``, in the order it happened."""
        elapsed = now - step.issued_at
        ended_at = 0.0
        timer: int | None = None
        texts = flow_texts(call.flow)
        for play in step.plays:
            ended_at += Prompt(play.prompt_id, play.path, texts.get(play.prompt_id, "")).seconds
            if digits and elapsed < ended_at:
                break  # the key came while this prompt played: barge-in
            for a in call.feed("prompt_finished", play.token, min(step.issued_at + ended_at, now)):
                if isinstance(a, StartTimer):
                    timer = a.token
        if digits:
            return call.feed("digit", digits[0], now)
        if timer is None:  # cannot happen: with no key, every prompt ended and the timer started
            return []
        return call.feed("timeout", timer, now)

    def _look_ahead(self, call: TwilioCall, first: Play) -> tuple[list[Play], float]:
        """The prompts the interpreter will play in a row, and the silence it then waits.

        Found on a copy rebuilt by replaying the call's events (the interpreter is pure), so the
        live session only ever hears what really happened.
        """
        probe = IvrSession(call.flow, call.call_id)
        for event, args in call.journal:
            getattr(probe, event)(*args)
        plays, token = [first], first.token
        for _ in range(len(call.flow.nodes) + 8):
            nxt = probe.prompt_finished(token, 0.0)
            timer = next((a for a in nxt if isinstance(a, StartTimer)), None)
            if timer is not None:
                return plays, timer.seconds
            play = next((a for a in nxt if isinstance(a, Play)), None)
            if play is None:
                break
            plays.append(play)
            token = play.token
        return plays, 6.0

    def _after_ivr(self, call: TwilioCall, actions: list[Action], now: float) -> str:
        route = next((a for a in actions if isinstance(a, Route)), None)
        if route is not None:
            return self._routed(call, route, now)
        first = next((a for a in actions if isinstance(a, Play)), None)
        if first is None:  # the interpreter ignored the event (stale): ask the same question again
            assert call.gather is not None
            return self._gather_twiml(call, call.gather.plays, 6.0)
        plays, timeout_s = self._look_ahead(call, first)
        call.gather = GatherStep(plays=plays, issued_at=now)
        return self._gather_twiml(call, plays, timeout_s)

    def _gather_twiml(self, call: TwilioCall, plays: list[Play], timeout_s: float) -> str:
        texts = flow_texts(call.flow)
        prompts = [Prompt(p.prompt_id, p.path, texts.get(p.prompt_id, "")) for p in plays]
        call.step += 1
        return self.twiml.gather(prompts, timeout_s, call.step)

    def _routed(self, call: TwilioCall, route: Route, now: float) -> str:
        o = route.outcome
        call.gather = None
        record = call.session.record.to_dict()
        call.journey.routed(o.skill, o.priority, o.reason, record, now, screen_pop=describe(call.flow, record))
        return self._next_while_waiting(call, now, before=[shipped_prompt("transfer_human")])

    def _announce_interval(self, skill: str | None) -> float:
        policy = self.routing.acd.policy(skill) if skill else None
        every = getattr(policy, "announce_every_s", None)
        return float(every) if every else self.ctx.announce_every_s

    def _next_while_waiting(self, call: TwilioCall, now: float, before: list[Prompt] | None = None) -> str:
        journey = call.journey
        call.step += 1
        offer = journey.offer
        if journey.stage is Stage.OFFERED and offer is not None:
            return self._dial(call, offer, now, before or [])
        # right after the IVR: "connecting you" + the hold message; the position from the next
        # segment on, then every announce interval
        if not before and now - call.last_position_at >= self._announce_interval(journey.skill) \
                and (position := self.routing.acd.queue_position(call.call_id)):
            call.last_position_at = now
            segment = [shipped_prompt(p) for p in queue_position_ids(position)]
        else:
            segment = [shipped_prompt("hold")]
        return self.twiml.hold([*(before or []), *segment], call.step)

    def _dial(self, call: TwilioCall, offer: Offer, now: float, before: list[Prompt]) -> str:
        call.journey.seat_ringing(offer.seat_id, now)
        call.dialed_seat = offer.seat_id
        ring_s = max(MIN_RING_S, int(offer.ring_timeout_s or self.ctx.ring_timeout_s) - RING_MARGIN_S)
        log.info("twilio_dial_seat", extra={"call_id": call.call_id, "seat_id": offer.seat_id,
                                            "contact": offer.contact, "ring_s": ring_s})
        return self.twiml.dial(offer.contact, call.call_id, offer.skill, offer.seat_id, ring_s, call.step, before)

    def _seat_answered(self, call: TwilioCall, seat_id: str) -> None:
        now = self.ctx.clock()
        call.journey.seat_answered(seat_id, now, None)  # Twilio does not show us the bridge itself

    def _finish(self, call: TwilioCall, ended_by: str) -> None:
        journey = call.journey
        journey.hung_up(ended_by, self.ctx.clock(), record=call.session.record.to_dict())
        journey.closed(self.ctx.clock())  # after the routing report: CALLEND is the call's last event
        self.live.pop(call.sid, None)
        self._by_call_id.pop(call.call_id, None)
        self.ended[call.sid] = call
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
