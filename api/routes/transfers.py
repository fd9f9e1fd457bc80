"""``POST /api/v1/calls/{id}/transfer``: send a talking caller on without ever hanging up on them.

Open to the seat on the call and to supervisors.  The node decides (``gateway.callflow``): the
journey moves ``talking -> queued`` (cause ``transferred``), seat 1 goes to wrap-up, the caller hears
hold audio and waits for the target skill at the head of their priority with the IVR record, the
screen pop and the note; the recording runs on.  A warm transfer (``mode: "warm"``) is a consult:
the caller hears hold audio while seat 1 talks to seat 2 (a third leg in the caller's media
worker), then ``.../transfer/complete`` hands the caller to seat 2 or ``.../transfer/cancel`` takes
them back.  See docs/SEATS.md.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.auth import get_ctx, principal
from api.context import ApiContext
from api.schemas import SEAT_ID_PATTERN
from api.tokens import Principal
from api.views import seat_rows
from journey.transfer import TransferRefused, TransferRequest
from routing.skills import SKILLS

router = APIRouter(prefix="/api/v1/calls", tags=["transfers"])


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to_skill: str | None = Field(None, max_length=32)
    to_seat: str | None = Field(None, pattern=SEAT_ID_PATTERN)
    mode: Literal["blind", "warm"] = "blind"
    note: str | None = Field(None, max_length=2000)

    @model_validator(mode="after")
    def _one_target(self) -> TransferIn:
        if (self.to_skill is None) == (self.to_seat is None):
            raise ValueError("give exactly one of to_skill and to_seat")
        if self.to_skill is not None and self.to_skill not in SKILLS:
            raise ValueError(f"unknown skill {self.to_skill!r}; one of: {', '.join(SKILLS)}")
        return self


async def _caller_of_this_seat(ctx: ApiContext, who: Principal, call_id: str) -> str:
    """Who asks, as the journey logs it; a seat token must be the seat in this conversation."""
    if not who.is_supervisor():
        mine = next((s for s in await seat_rows(ctx) if s["id"] == who.seat_id), None)
        if mine is None or mine.get("call_id") != call_id or mine.get("status") != "on_call":
            raise HTTPException(403, detail="only the seat talking to this caller, or a supervisor, may do this")
        return f"seat:{who.seat_id}"
    return f"{who.role.value}:{who.token_id}"


async def _act_on_live_call(ctx: ApiContext, who: Principal, call_id: str, action: Any,
                            *args: Any) -> dict[str, Any]:
    """One way for every act on a live call (hold, transfer, consult): only its seat or a
    supervisor, carried out by the control process, its refusal answered with its own status.
    ``args`` go before ``by`` (who asks)."""
    if action is None:
        raise HTTPException(409, detail="this node carries no calls")
    by = await _caller_of_this_seat(ctx, who, call_id)
    try:
        return await ctx.on_control(action, *args, by)
    except TransferRefused as e:
        raise HTTPException(e.status, detail=e.detail) from None


async def _hold(ctx: ApiContext, who: Principal, call_id: str, on: bool) -> dict[str, Any]:
    return await _act_on_live_call(ctx, who, call_id, ctx.hold, call_id, on)


@router.post("/{call_id}/hold", responses={403: {"description": "not this call's seat"},
                                           404: {"description": "no such live call"},
                                           409: {"description": "not talking (or already on hold)"}})
async def hold(call_id: str = Path(max_length=128), who: Principal = Depends(principal),
               ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    """The caller hears hold audio; the seat stays on the line and hears nothing."""
    return await _hold(ctx, who, call_id, True)


@router.post("/{call_id}/resume", responses={403: {"description": "not this call's seat"},
                                             404: {"description": "no such live call"},
                                             409: {"description": "not on hold"}})
async def resume(call_id: str = Path(max_length=128), who: Principal = Depends(principal),
                 ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    return await _hold(ctx, who, call_id, False)


@router.post("/{call_id}/transfer",
             responses={403: {"description": "not this call's seat"}, 404: {"description": "no such live call"},
                        409: {"description": "the call cannot be transferred now"}})
async def transfer(body: TransferIn, call_id: str = Path(max_length=128), who: Principal = Depends(principal),
                   ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    if ctx.transfer is None:
        raise HTTPException(409, detail="this node carries no calls")
    by = await _caller_of_this_seat(ctx, who, call_id)
    note = (body.note or "").strip() or None
    req = TransferRequest(call_id=call_id, to_skill=body.to_skill, to_seat=body.to_seat, mode=body.mode,
                          note=note, by=by)
    try:
        return await ctx.on_control(ctx.transfer, req)
    except TransferRefused as e:
        raise HTTPException(e.status, detail=e.detail) from None


async def _end_consult(ctx: ApiContext, who: Principal, call_id: str, complete: bool) -> dict[str, Any]:
    return await _act_on_live_call(ctx, who, call_id, ctx.consult, call_id, complete)


@router.post("/{call_id}/transfer/complete",
             responses={403: {"description": "not this call's seat"}, 404: {"description": "no such live call"},
                        409: {"description": "no consult under way, or seat 2 has not answered"}})
async def complete_transfer(call_id: str = Path(max_length=128), who: Principal = Depends(principal),
                            ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    """Warm transfer: seat 2 keeps the caller, seat 1's leg is released (it goes to wrap-up)."""
    return await _end_consult(ctx, who, call_id, True)


@router.post("/{call_id}/transfer/cancel",
             responses={403: {"description": "not this call's seat"}, 404: {"description": "no such live call"},
                        409: {"description": "no consult under way"}})
async def cancel_transfer(call_id: str = Path(max_length=128), who: Principal = Depends(principal),
                          ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    """Warm transfer: the consult ends, the caller is back with seat 1, seat 2 is free again."""
    return await _end_consult(ctx, who, call_id, False)
