"""Dispositions: how a conversation ended for the business, picked by the seat from a list.

``PUT /api/v1/calls/{id}/disposition`` is open to the seat that had the call and to supervisors.
The disposition is an event in the call's log (``DISPOSITION``: persisted with the call, published
on MQTT and the WebSocket, folded into the daily report); the last one recorded wins, so a seat
can correct itself.  Saving it while the seat is in wrap-up for that call ends the wrap-up: the
seat is offered the next call at once instead of waiting out the wrap-up timer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field

from api.auth import get_ctx, principal
from api.context import ApiContext
from api.errors import unprocessable
from api.tokens import Principal
from api.views import seat_rows
from routing.errors import RoutingError
from routing.events import Event, EventKind

router = APIRouter(prefix="/api/v1", tags=["dispositions"])


class DispositionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(min_length=1, max_length=48)
    note: str | None = Field(None, max_length=2000)


@router.get("/dispositions")
async def list_codes(who: Principal = Depends(principal), ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    """The configured outcome codes, in the order a console shows them."""
    p = ctx.outcomes
    return {"codes": list(p.codes), "fast_handled": sorted(p.fast_handled), "not_accident": sorted(p.not_accident)}


@router.put("/calls/{call_id}/disposition",
            responses={403: {"description": "not this call's seat"}, 404: {"description": "unknown call"},
                       422: {"description": "code not in the configured list"}})
async def set_disposition(body: DispositionIn, call_id: str = Path(max_length=128),
                          who: Principal = Depends(principal), ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    if body.code not in ctx.outcomes.codes:
        raise unprocessable(("body", "code"), f"unknown disposition {body.code!r}; one of: {', '.join(ctx.outcomes.codes)}")
    live = next((s for s in await seat_rows(ctx) if s.get("call_id") == call_id), None)
    record = await ctx.on_control(ctx.calls.get, call_id)
    if live is None and record is None:
        raise HTTPException(404, detail=f"unknown call {call_id!r}")
    seat_id = live["id"] if live else (record or {}).get("seat_id")
    if not who.is_supervisor() and (seat_id is None or who.seat_id != seat_id):
        raise HTTPException(403, detail="only the seat that had this call, or a supervisor, sets its disposition")
    now = ctx.clock()
    note = (body.note or "").strip() or None
    ev = Event(EventKind.DISPOSITION, now, call_id=call_id, seat_id=seat_id, skill=(record or {}).get("skill"),
               data={"code": body.code, "note": note, "by_role": who.role.value, "by_seat": who.seat_id})
    await ctx.on_control(ctx.routing.record, [ev])
    wrap_ended = False
    if live is not None and live.get("status") == "wrap_up":
        try:
            await ctx.on_control(ctx.routing.end_wrap_up, live["id"])
            wrap_ended = True
        except RoutingError:  # the wrap-up timer ended it a moment earlier: the disposition stands
            pass
    return {"call_id": call_id, "code": body.code, "note": note, "seat_id": seat_id, "at": now,
            "wrap_up_ended": wrap_ended}
