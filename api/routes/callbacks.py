"""The callback list: callers who gave up after waiting long, called back by intake seats.

The list lives in the ACD (ordered by the callers' original enqueue time); a seat takes the oldest
pending one, calls the person back, then completes it.

An entry carries the caller's number and IVR answers, so a seat token sees only what its work
needs: the pending callbacks of skills the seat has, and those it took.  Intake seats are the ones
the ACD hands callbacks to (of any skill), so they see every pending one.  Supervisors see all.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from api.auth import get_ctx, principal
from api.context import ApiContext
from api.errors import unprocessable
from api.schemas import SEAT_ID_PATTERN, Callback
from api.tokens import Principal
from routing.acd import INTAKE_SKILL
from routing.events import EventKind

router = APIRouter(prefix="/api/v1/callbacks", tags=["callbacks"])


def _acting_seat(who: Principal, seat_id: str | None) -> str:
    if who.is_supervisor():
        if seat_id is None:
            raise unprocessable(("query", "seat_id"), "a supervisor takes a callback on behalf of a seat")
        return seat_id
    if seat_id is not None and seat_id != who.seat_id:
        raise HTTPException(403, detail="a seat token acts only on its own seat")
    return str(who.seat_id)


def _active(ctx: ApiContext) -> list[dict[str, Any]]:
    return [e.to_dict() for e in ctx.routing.acd.callbacks.active()]


def _seat_skills(ctx: ApiContext, seat_id: str | None) -> set[str]:
    for seat in ctx.routing.acd.seats_view(ctx.clock()):
        if seat.get("id") == seat_id:
            return set(seat.get("skills") or ())
    return set()  # an unknown seat (removed since its token was made) sees nothing pending


def _visible_to_seat(ctx: ApiContext, seat_id: str | None) -> list[dict[str, Any]]:
    """One read on the control loop: the entries and the seat's skills from the same moment."""
    skills = _seat_skills(ctx, seat_id)
    return [e for e in _active(ctx)
            if e["seat_id"] == seat_id
            or (e["status"] == "pending" and (e["skill"] in skills or INTAKE_SKILL in skills))]


@router.get("", response_model=list[Callback])
async def list_callbacks(who: Principal = Depends(principal), ctx: ApiContext = Depends(get_ctx)) -> list[dict[str, Any]]:
    """Pending and taken callbacks, oldest caller first.  A seat sees the pending ones of its skills
    (all pending ones if it is an intake seat, which takes callbacks of every skill) and its own."""
    if who.is_supervisor():
        entries = await ctx.read_control(_active, ctx)
    else:
        entries = await ctx.read_control(_visible_to_seat, ctx, who.seat_id)
    entries.sort(key=lambda e: (e["enqueued_at"], e["callback_id"]))
    return entries


@router.post("/take", response_model=Callback,
             responses={404: {"description": "no pending callback (or unknown seat)"},
                        409: {"description": "the seat does not handle callbacks"}})
async def take_callback(seat_id: str | None = Query(None, pattern=SEAT_ID_PATTERN),
                        who: Principal = Depends(principal), ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    seat = _acting_seat(who, seat_id)
    events = await ctx.on_control(ctx.routing.take_callback, seat)
    for ev in events or ():
        if ev.kind is EventKind.CALLBACK:
            return {k: v for k, v in ev.data.items() if k != "action"}
    raise HTTPException(404, detail="no pending callback")


@router.post("/{callback_id}/complete", response_model=Callback,
             responses={404: {"description": "unknown callback"}, 409: {"description": "not taken"}})
async def complete_callback(callback_id: str = Path(max_length=100), who: Principal = Depends(principal),
                            ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    entry = next((e for e in await ctx.read_control(_active, ctx) if e["callback_id"] == callback_id), None)
    if entry is None:
        raise HTTPException(404, detail=f"unknown callback {callback_id!r}")
    if not who.is_supervisor() and entry["seat_id"] != who.seat_id:
        raise HTTPException(403, detail="a seat completes only the callbacks it took")
    await ctx.on_control(ctx.routing.complete_callback, callback_id)
    entry["status"] = "done"
    return entry
