"""A Twilio call's journey as a JSON snapshot, and back (issue 13: Twilio calls survive a restart).

A Twilio caller's media is at Twilio, not in our workers: when the node restarts, the caller is
still on the line and Twilio's next webhook reaches the restarted node.  The snapshot holds what
that webhook needs: the journey (stage, skill, priority, IVR decision, what the queue entry
carries, the seat offered or talking), the webhook conversation (step, the ``<Gather>`` out, the
seat dialled, the replay cache of recent answers) and the inputs the IVR interpreter was given
(the interpreter is pure, so replaying them rebuilds its session exactly).  Saved in
``routing.store.journeys`` before each webhook is answered; loaded for a CallSid a restarted
node does not know, and matched with what the routing service restored.

A few keys sit at the top level because the node reads them without this module: ``stage``
(``routing.store.journeys.in_progress``: bridged calls make no webhook for a long time),
``caller``, ``started_at`` and ``ivr`` (``gateway.reconcile.expire_unclaimed``: the callback of a
caller who never came back carries their number and the IVR's answers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

from api.twilio.context import TwilioContext
from api.twilio.inflight import GatherStep, TwilioCall, call_id_for
from ivr.flow import Flow
from ivr.interpreter import IvrSession, Play
from journey.call import REQUEUE_PRIORITY, CallJourney, Offer, RoutingPort
from journey.notifier import JourneyNotifier
from journey.stages import WAITING, Cause, Stage
from routing.errors import RoutingError
from routing.events import Event, EventKind
from routing.store.journeys import JourneyStore

log = logging.getLogger("api.twilio.store")

#: Answers kept for replays: a replay is of a recent step; older ones only grow every save.
REPLAY_KEPT = 16
#: Journey moves kept in a snapshot (the event log has them all; this is for the logs of a restart).
HISTORY_KEPT = 64
#: 2: the journey (``journey.call.CallJourney``); 1 was the pre-journey ``phase`` shape, never
#: released, and is not adopted.
VERSION = 2


class CallRegistry(Protocol):
    """What saving and adopting need of the webhook handler (``api.twilio.calls.TwilioCalls``)."""

    ctx: TwilioContext
    routing: Any
    notifier: JourneyNotifier
    journeys: JourneyStore | None

    def register(self, call: TwilioCall) -> None: ...


class SnapshotError(ValueError):
    """A saved snapshot this code cannot continue (another version, or damaged)."""


def _offer(o: Offer | None) -> dict[str, Any] | None:
    if o is None:
        return None
    return {"seat_id": o.seat_id, "contact": o.contact, "skill": o.skill, "ring_timeout_s": o.ring_timeout_s,
            "attempt": o.attempt, "offered_at": o.offered_at, "rang_at": o.rang_at}


def snapshot(call: TwilioCall) -> dict[str, Any]:
    j = call.journey
    answers = list(call.answers.items())[-REPLAY_KEPT:]
    return {
        "v": VERSION, "call_id": j.call_id, "sid": call.sid, "caller": j.caller, "callee": call.callee,
        "started_at": j.started_at, "stage": j.stage.value, "ivr": call.session.record.to_dict(),
        "journey": {
            "ingress": j.ingress, "node_id": j.node_id, "skill": j.skill, "priority": j.priority,
            "offer": _offer(j.offer), "seat_id": j.seat_id, "recording_id": j.recording_id,
            "outcome": j.outcome, "ended_by": j.ended_by, "ivr_record": j.ivr_record, "queue_info": j.queue_info,
            "history": [[s.value, c.value, d.value] for s, c, d in j.history[-HISTORY_KEPT:]],
        },
        "step": call.step, "dialed_seat": call.dialed_seat, "last_position_at": call.last_position_at,
        "gather": None if call.gather is None else {
            "issued_at": call.gather.issued_at,
            "plays": [[p.prompt_id, str(p.path), p.token] for p in call.gather.plays]},
        "journal": [[event, list(args)] for event, args in call.journal],
        "answers": [[webhook, step, twiml] for (webhook, step), twiml in answers],
    }


def restore(state: dict[str, Any], flow: Flow, routing: RoutingPort, notifier: JourneyNotifier) -> TwilioCall:
    """The call as it stood at its last saved webhook.

    The journey is rebuilt at its saved stage, not walked there: its transitions were logged,
    stored and published when they happened, so nothing is emitted again.  The IVR session is
    rebuilt by replaying the interpreter's inputs.  ``SnapshotError`` for a snapshot of another
    version or one missing what a journey needs.
    """
    if state.get("v") != VERSION:
        raise SnapshotError(f"snapshot version {state.get('v')!r}, this node reads {VERSION}")
    try:
        call_id = str(state["call_id"])
        session = IvrSession(flow, call_id)
        journal: list[tuple[str, tuple[Any, ...]]] = []
        for event, args in state.get("journal") or []:
            getattr(session, event)(*args)
            journal.append((event, tuple(args)))
        js = state["journey"]
        o = js.get("offer")
        journey = CallJourney(
            call_id=call_id, caller=str(state.get("caller") or ""), ingress=str(js.get("ingress") or "twilio"),
            node_id=str(js.get("node_id") or ""), started_at=float(state["started_at"]), routing=routing,
            notifier=notifier, stage=Stage(state["stage"]), skill=js.get("skill"), priority=js.get("priority"),
            offer=None if o is None else Offer(
                seat_id=o["seat_id"], contact=o["contact"], skill=o["skill"],
                ring_timeout_s=float(o["ring_timeout_s"]), attempt=int(o["attempt"]),
                offered_at=float(o["offered_at"]), rang_at=None if o.get("rang_at") is None else float(o["rang_at"])),
            seat_id=js.get("seat_id"), recording_id=js.get("recording_id"), outcome=js.get("outcome"),
            ended_by=js.get("ended_by"), ivr_record=dict(js.get("ivr_record") or {}),
            queue_info=dict(js.get("queue_info") or {}),
            history=[(Stage(s), Cause(c), Stage(d)) for s, c, d in js.get("history") or []])
        g = state.get("gather")
        return TwilioCall(
            journey=journey, sid=str(state["sid"]), callee=str(state.get("callee") or ""), flow=flow,
            session=session, step=int(state["step"]), dialed_seat=state.get("dialed_seat"),
            last_position_at=float(state.get("last_position_at") or 0.0), journal=journal,
            gather=None if g is None else GatherStep(
                plays=[Play(pid, Path(path), int(tok)) for pid, path, tok in g["plays"]],
                issued_at=float(g["issued_at"])),
            answers={(w, int(s)): twiml for w, s, twiml in state.get("answers") or []},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise SnapshotError(f"snapshot of {state.get('call_id')!r} unreadable: {e!r}") from e


def _match_routing(calls: CallRegistry, call: TwilioCall) -> None:
    """Make a waiting journey agree with the routing service restored by this node.

    The ACD restores a waiting or ringing call as waiting in its old place; it may have offered
    it a seat since (that ``OFFER`` found no journey to follow it).  So: a caller whose place was
    not kept (the restart took longer than their webhooks wait, or the expiry closed them) is
    queued again at the head; a seat being offered is followed as that ``OFFER`` (the journey's
    ``queued -> offered``, dialled by the next hold poll); otherwise the caller is queued.  A ``<Dial>`` still out for the very seat the
    ACD still rings for this call is kept: its status callback continues the call.
    """
    j = call.journey
    acd = calls.routing.acd
    now = calls.ctx.clock()
    view = acd.call_view(j.call_id)
    if view is None:
        try:
            calls.routing.enqueue(j.call_id, j.skill or "intake_guidance", REQUEUE_PRIORITY, caller=j.caller,
                                  info={**j.queue_info, "requeued_after": "restart"})
        except RoutingError as e:
            log.error("twilio_requeue_refused", extra={"call_id": j.call_id, "error": str(e)})
        view = acd.call_view(j.call_id)
    ringing = view is not None and view["state"] == "ringing" and view["seat_id"]
    if ringing and j.stage is Stage.RINGING_SEAT and j.offer is not None and j.offer.seat_id == view["seat_id"] \
            and call.dialed_seat == view["seat_id"]:
        return  # the <Dial> that went out before the restart is still the one the ACD waits for
    # the ACD put it back in its queue at the restart (not a move of the journey: no event)
    j.offer, call.dialed_seat, j.stage = None, None, Stage.QUEUED
    if view is not None:
        j.skill = view["skill"]
    if ringing:
        # the OFFER made since the restart, which found no journey: followed now, through the table
        seat = acd.seat_view(view["seat_id"], now)
        j.routing_event(Event(EventKind.OFFER, now, call_id=j.call_id, seat_id=view["seat_id"], skill=view["skill"],
                              data={"contact": seat["contact"], "attempt": view.get("attempt") or 0,
                                    "ring_timeout_s": calls.ctx.ring_timeout_s}), now)


async def adopt(calls: CallRegistry, sid: str) -> TwilioCall | None:
    """A CallSid this node does not know: the call as the node before a restart saved it, matched
    with what the routing service restored (its queue place, or a seat it is being offered), and
    registered in ``calls``.  None if nothing (readable) was saved for it."""
    journeys = calls.journeys
    if journeys is None:
        return None
    call_id = call_id_for(sid)
    state = await journeys.load(call_id)
    if state is None:
        return None
    try:
        call = restore(state, calls.ctx.flow(), calls.routing, calls.notifier)
    except SnapshotError as e:
        log.error("twilio_call_not_adopted", extra={"call_id": call_id, "error": str(e)[:300]})
        return None
    saved = call.journey.stage
    if saved in WAITING:
        _match_routing(calls, call)
    calls.register(call)
    log.warning("twilio_call_adopted", extra={"call_id": call.call_id, "saved_stage": saved.value,
                                              "stage": call.journey.stage.value, "step": call.step,
                                              "seat_id": call.journey.offer.seat_id if call.journey.offer else None})
    return call


async def save(calls: CallRegistry, call: TwilioCall) -> None:
    """Keep the journey before its answer goes out; a failure is logged, never raised to Twilio."""
    journeys = calls.journeys
    if journeys is None:
        return
    try:
        await journeys.save(call.call_id, calls.ctx.node_id, "twilio", snapshot(call), ended=not call.journey.live)
    except Exception as e:
        log.error("twilio_journey_not_saved", extra={"call_id": call.call_id, "error": str(e)[:200]})


__all__ = ["VERSION", "CallRegistry", "SnapshotError", "adopt", "restore", "save", "snapshot"]
