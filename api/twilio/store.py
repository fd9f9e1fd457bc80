"""A Twilio call's journey as a JSON snapshot, and back (issue 13: Twilio calls survive a restart).

The snapshot holds what the next webhook needs: phase, step, the pending seat offer, the replay
cache of recent answers, and the inputs the IVR interpreter was given (the interpreter is pure,
so replaying them rebuilds its session exactly).  Saved in ``routing.store.journeys`` before each
webhook is answered; loaded for a CallSid a restarted node does not know.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from api.twilio.calls import GatherStep, PendingOffer, Phase, TwilioCall
from ivr.flow import Flow
from ivr.interpreter import IvrSession, Play

log = logging.getLogger("api.twilio.store")

#: Answers kept for replays: a replay is of a recent step; older ones only grow every save.
REPLAY_KEPT = 16
VERSION = 1


def snapshot(call: TwilioCall) -> dict[str, Any]:
    answers = list(call.answers.items())[-REPLAY_KEPT:]
    return {
        "v": VERSION, "call_id": call.call_id, "sid": call.sid, "caller": call.caller, "callee": call.callee,
        "started_at": call.started_at, "phase": call.phase.value, "step": call.step, "skill": call.skill,
        "gather": None if call.gather is None else {
            "issued_at": call.gather.issued_at,
            "plays": [[p.prompt_id, str(p.path), p.token] for p in call.gather.plays]},
        "offer": None if call.offer is None else {
            "seat_id": call.offer.seat_id, "contact": call.offer.contact, "skill": call.offer.skill,
            "ring_timeout_s": call.offer.ring_timeout_s, "dialed": call.offer.dialed},
        "dialed_seat": call.dialed_seat, "hold_segments": call.hold_segments,
        "journal": [[event, list(args)] for event, args in call.journal],
        "answers": [[webhook, step, twiml] for (webhook, step), twiml in answers],
    }


def restore(state: dict[str, Any], flow: Flow) -> TwilioCall:
    """The call as it stood at its last saved webhook; the IVR session rebuilt by replaying it."""
    session = IvrSession(flow, state["call_id"])
    journal: list[tuple[str, tuple[Any, ...]]] = []
    for event, args in state.get("journal") or []:
        getattr(session, event)(*args)
        journal.append((event, tuple(args)))
    g, o = state.get("gather"), state.get("offer")
    return TwilioCall(
        call_id=state["call_id"], sid=state["sid"], caller=state.get("caller") or "", callee=state.get("callee") or "",
        started_at=float(state["started_at"]), flow=flow, session=session, phase=Phase(state["phase"]),
        step=int(state["step"]), skill=state.get("skill"), dialed_seat=state.get("dialed_seat"),
        hold_segments=int(state.get("hold_segments") or 0), journal=journal,
        gather=None if g is None else GatherStep(plays=[Play(pid, Path(path), int(tok)) for pid, path, tok in g["plays"]],
                                                 issued_at=float(g["issued_at"])),
        offer=None if o is None else PendingOffer(seat_id=o["seat_id"], contact=o["contact"], skill=o["skill"],
                                                  ring_timeout_s=float(o["ring_timeout_s"]), dialed=bool(o["dialed"])),
        answers={(w, int(s)): twiml for w, s, twiml in state.get("answers") or []},
    )


async def adopt(calls: Any, sid: str) -> TwilioCall | None:
    """A CallSid this node does not know: the call as the node before a restart saved it, matched
    with what the routing service restored (its queue place, or a seat it is being offered), and
    registered in ``calls``.  None if nothing was saved for it."""
    from api.twilio.calls import call_id_for

    journeys = getattr(calls, "journeys", None)
    if journeys is None:
        return None
    state = await journeys.load(call_id_for(sid))
    if state is None or state.get("v") != VERSION:
        return None
    call = restore(state, calls.ctx.flow())
    acd = calls.routing.acd
    view = acd.call_view(call.call_id)
    if call.phase in (Phase.QUEUED, Phase.RINGING):
        call.offer, call.dialed_seat = None, None
        if view is None:  # its place was not kept (the restart took longer than its webhooks wait)
            await _maybe_await(calls.routing.enqueue(call.call_id, call.skill or "intake_guidance", 1,
                                                     caller=call.caller, info={"requeued_after": "restart"}))
            view = acd.call_view(call.call_id)
        call.phase = Phase.QUEUED
        if view is not None and view["state"] == "ringing" and view["seat_id"]:
            seat = acd.seat_view(view["seat_id"], calls.ctx.clock())
            call.offer = PendingOffer(seat_id=view["seat_id"], contact=str(seat["contact"]), skill=view["skill"],
                                      ring_timeout_s=calls.ctx.ring_timeout_s)
            call.phase = Phase.RINGING
    if call.phase is Phase.ENDED:
        calls.ended[sid] = call
    else:
        calls.live[sid] = call
        calls._by_call_id[call.call_id] = call
    log.warning("twilio_call_adopted", extra={"call_id": call.call_id, "phase": call.phase.value, "step": call.step})
    return call


async def save(calls: Any, call: TwilioCall) -> None:
    """Keep the journey before its answer goes out; a failure is logged, never raised to Twilio."""
    journeys = getattr(calls, "journeys", None)
    if journeys is None:
        return
    try:
        await journeys.save(call.call_id, calls.ctx.node_id, "twilio", snapshot(call),
                            ended=call.phase is Phase.ENDED)
    except Exception as e:
        log.error("twilio_journey_not_saved", extra={"call_id": call.call_id, "error": str(e)[:200]})


async def _maybe_await(result: Any) -> Any:
    import inspect

    return await result if inspect.isawaitable(result) else result


__all__ = ["adopt", "restore", "save", "snapshot"]
