"""Seats: the board for supervisors, and a seat's own status (ready, not ready, end wrap-up).

A status change made by anyone but the seat itself (a supervisor, an admin) goes to the audit log
with who made it and the statuses from and to.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request

from api.audit import SEAT_STATUS
from api.auth import client_ip, get_ctx, may_act_on_seat, principal, supervisor
from api.context import ApiContext
from api.schemas import SEAT_ID_PATTERN, SeatOffer, SeatStatusChange, SeatView
from api.tokens import Principal
from api.views import seat_rows
from routing.status import SeatStatus

router = APIRouter(prefix="/api/v1/seats", tags=["seats"])
log = logging.getLogger(__name__)

SeatId = Path(pattern=SEAT_ID_PATTERN, description="seat id, [a-z0-9_-]{1,32}")


async def current_seat(ctx: ApiContext, seat_id: str) -> dict[str, Any]:
    for seat in await seat_rows(ctx):
        if seat["id"] == seat_id:
            return seat
    raise HTTPException(404, detail=f"unknown seat {seat_id!r}")


async def _audit_if_other(ctx: ApiContext, request: Request, who: Principal, seat_id: str,
                          before: dict[str, Any], after: dict[str, Any], reason: str | None) -> None:
    """Record a change made to a seat by someone other than that seat (the change is already made)."""
    if ctx.audit is None or who.seat_id == seat_id:
        return
    detail = {"from": before["status"], "to": after["status"], "reason": reason}
    try:
        await ctx.on_control(ctx.audit.record, SEAT_STATUS, who, seat_id, detail, client_ip(request))
    except Exception as e:  # the change is made: say so, and leave the record in the node's log at least
        log.error("audit_write_failed", extra={"action": SEAT_STATUS, "target": seat_id, "detail": detail,
                                               "token_id": who.token_id, "error": str(e)[:200]})


@router.get("", response_model=list[SeatView], dependencies=[Depends(supervisor)])
async def list_seats(ctx: ApiContext = Depends(get_ctx)) -> list[dict[str, Any]]:
    return await seat_rows(ctx)


@router.get("/{seat_id}", response_model=SeatView)
async def get_seat(seat_id: str = SeatId, who: Principal = Depends(principal),
                   ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    may_act_on_seat(who, seat_id)
    return await current_seat(ctx, seat_id)


@router.get("/{seat_id}/offer", response_model=SeatOffer,
            responses={404: {"description": "unknown seat, or no call offered to or connected with it"}})
async def current_offer(seat_id: str = SeatId, who: Principal = Depends(principal),
                        ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    """The call this seat is being offered or is talking to, with its screen pop.

    A console that (re)connects asks here first, so it shows the offer even when the OFFER event
    went out while it was offline: the screen never depends on having been connected at the moment.
    """
    may_act_on_seat(who, seat_id)
    seat = await current_seat(ctx, seat_id)
    call_id = seat.get("call_id")
    view = await ctx.read_control(ctx.routing.acd.call_view, call_id) if call_id else None
    if view is None:
        raise HTTPException(404, detail=f"seat {seat_id!r} has no call")
    return view


@router.put("/{seat_id}/status", response_model=SeatView,
            responses={404: {"description": "unknown seat"}, 409: {"description": "illegal transition"}})
async def set_status(request: Request, body: SeatStatusChange, seat_id: str = SeatId,
                     who: Principal = Depends(principal), ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    may_act_on_seat(who, seat_id)
    before = await current_seat(ctx, seat_id)
    await ctx.on_control(ctx.routing.set_status, seat_id, SeatStatus(body.status), body.reason)
    after = await current_seat(ctx, seat_id)
    await _audit_if_other(ctx, request, who, seat_id, before, after, body.reason)
    return after


@router.post("/{seat_id}/wrap-up/end", response_model=SeatView,
             responses={404: {"description": "unknown seat"}, 409: {"description": "not in wrap-up"}})
async def end_wrap_up(request: Request, seat_id: str = SeatId, who: Principal = Depends(principal),
                      ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    may_act_on_seat(who, seat_id)
    before = await current_seat(ctx, seat_id)
    await ctx.on_control(ctx.routing.end_wrap_up, seat_id)
    after = await current_seat(ctx, seat_id)
    await _audit_if_other(ctx, request, who, seat_id, before, after, "end wrap-up")
    return after
