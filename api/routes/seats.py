"""Seats: the board for supervisors, a seat's own status (ready, not ready, end wrap-up), and the
credentials its phone registers with (admins).

A status change made by anyone but the seat itself (a supervisor, an admin) goes to the audit log
with who made it and the statuses from and to.  Credentials are hashed here into the HA1
(``md5(username:realm:password)``): the password goes no further than this process, and neither
it nor the HA1 is ever shown or written to the audit log.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.audit import SEAT_CREDENTIALS, SEAT_STATUS
from api.auth import admin, client_ip, get_ctx, may_act_on_seat, principal, supervisor
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


# ------------------------------------------------------------------------------------------------
# the seat phone's registration credentials (admin)
# ------------------------------------------------------------------------------------------------
HA1 = re.compile(r"^[0-9a-fA-F]{32}$")


class CredentialsIn(BaseModel):
    """``username`` and exactly one of ``password`` (hashed here) and ``ha1``."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    username: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the phone's digest user (its To user)")
    password: str | None = Field(None, min_length=8, max_length=128)
    ha1: str | None = Field(None, description="md5(username:realm:password), 32 hex digits")

    @model_validator(mode="after")
    def _one_secret(self) -> CredentialsIn:
        if (self.password is None) == (self.ha1 is None):
            raise ValueError("give exactly one of password and ha1")
        if self.ha1 is not None and not HA1.match(self.ha1):
            raise ValueError("ha1 must be 32 hex digits: md5(username:realm:password)")
        return self


async def _audit_first(ctx: ApiContext, request: Request, who: Principal, seat_id: str,
                       detail: dict[str, Any]) -> None:
    """Credentials change only once the change is accounted for (503 otherwise)."""
    if ctx.audit is None:
        return
    try:
        await ctx.on_control(ctx.audit.record, SEAT_CREDENTIALS, who, seat_id, detail, client_ip(request))
    except Exception as e:
        log.error("audit_write_failed", extra={"action": SEAT_CREDENTIALS, "target": seat_id, "error": str(e)[:200]})
        raise HTTPException(503, detail="the change could not be audited; credentials unchanged") from None


def _door(ctx: ApiContext) -> Any:
    if ctx.credentials is None:
        raise HTTPException(409, detail="this node has no front door for seat phones")
    return ctx.credentials


@router.put("/{seat_id}/credentials", response_model=SeatView,
            responses={404: {"description": "unknown seat"},
                       409: {"description": "the username is another seat's"},
                       503: {"description": "the change could not be written to the audit log"}})
async def set_credentials(request: Request, body: CredentialsIn, seat_id: str = SeatId,
                          who: Principal = Depends(admin), ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    """The seat's phone registers with these from now on (and after a restart), whatever the seats
    file says; a phone registered under the seat's previous username loses its registration."""
    door = _door(ctx)
    await current_seat(ctx, seat_id)
    owner = next((row["id"] for row in await seat_rows(ctx) if row["id"] != seat_id
                  and (row.get("register") or {}).get("username") == body.username), None)
    if owner is not None:  # refused before the audit log: it records changes, not refusals
        raise HTTPException(409, detail=f"username {body.username!r} is seat {owner}'s")
    if body.password is not None:
        ha1 = hashlib.md5(f"{body.username}:{door.realm}:{body.password}".encode()).hexdigest()
    else:
        ha1 = str(body.ha1).lower()
    await _audit_first(ctx, request, who, seat_id,
                       {"op": "set", "username": body.username, "given": "password" if body.password else "ha1"})
    await ctx.on_control(door.set, seat_id, body.username, ha1)
    return await current_seat(ctx, seat_id)


@router.delete("/{seat_id}/credentials", response_model=SeatView,
               responses={404: {"description": "unknown seat"},
                          503: {"description": "the change could not be written to the audit log"}})
async def remove_credentials(request: Request, seat_id: str = SeatId, who: Principal = Depends(admin),
                             ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    """The seat's phone can no longer register (the seats file's credentials too, if any); a
    current registration is removed and the seat is logged out with the reason."""
    door = _door(ctx)
    before = await current_seat(ctx, seat_id)
    await _audit_first(ctx, request, who, seat_id,
                       {"op": "remove", "username": (before.get("register") or {}).get("username")})
    await ctx.on_control(door.remove, seat_id)
    return await current_seat(ctx, seat_id)
