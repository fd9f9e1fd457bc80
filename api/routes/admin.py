"""Administration: seats and skills, the IVR flow (hot install), API tokens.  Admin tokens only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request

from api.auth import admin, get_ctx
from api.context import ApiContext
from api.errors import unprocessable
from api.schemas import (
    SEAT_ID_PATTERN,
    FlowInstalled,
    FlowProblemOut,
    SeatConfig,
    SeatUpdate,
    SeatView,
    SkillInfo,
    TokenCreated,
    TokenInfo,
    TokenRequest,
)
from api.tokens import TokenError
from api.views import seat_rows
from routing.acd import SeatSpec
from routing.skills import SKILL_LABELS_ZH, SKILLS
from routing.status import SeatStatus

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(admin)])

SeatId = Path(pattern=SEAT_ID_PATTERN)


async def _seat(ctx: ApiContext, seat_id: str) -> dict[str, Any] | None:
    for seat in await seat_rows(ctx):
        if seat["id"] == seat_id:
            return seat
    return None


@router.get("/skills", response_model=list[SkillInfo])
async def list_skills() -> list[SkillInfo]:
    return [SkillInfo(id=s, label_zh=SKILL_LABELS_ZH.get(s, s)) for s in SKILLS]


@router.get("/seats", response_model=list[SeatView])
async def list_seats(ctx: ApiContext = Depends(get_ctx)) -> list[dict[str, Any]]:
    return await seat_rows(ctx)


@router.post("/seats", response_model=SeatView, status_code=201,
             responses={409: {"description": "a seat with this id exists"}})
async def add_seat(body: SeatConfig, ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    if await _seat(ctx, body.id) is not None:
        raise HTTPException(409, detail=f"seat {body.id!r} exists")
    spec = SeatSpec(id=body.id, contact=body.contact, skills=body.skill_penalties(), name=body.name,
                    status=SeatStatus(body.status))
    await ctx.on_control(ctx.routing.add_seat, spec)
    seat = await _seat(ctx, body.id)
    if seat is None:  # pragma: no cover - the routing service just added it
        raise HTTPException(409, detail=f"seat {body.id!r} was not added")
    return seat


@router.put("/seats/{seat_id}", response_model=SeatView, responses={404: {"description": "unknown seat"}})
async def update_seat(body: SeatUpdate, seat_id: str = SeatId, ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    current = await _seat(ctx, seat_id)
    if current is None:
        raise HTTPException(404, detail=f"unknown seat {seat_id!r}")
    spec = SeatSpec(id=seat_id, contact=body.contact, skills=body.skill_penalties(), name=body.name,
                    status=SeatStatus(current["status"]) if current["status"] in SeatStatus.__members__.values()
                    else SeatStatus.LOGGED_OUT,
                    # its phone's credentials change through PUT /api/v1/seats/{id}/credentials only
                    register_user=(current.get("register") or {}).get("username"))
    await ctx.on_control(ctx.routing.update_seat, spec)
    return await _seat(ctx, seat_id) or current


@router.delete("/seats/{seat_id}", status_code=204, responses={404: {"description": "unknown seat"},
                                                              409: {"description": "seat is busy"}})
async def remove_seat(seat_id: str = SeatId, ctx: ApiContext = Depends(get_ctx)) -> None:
    if await _seat(ctx, seat_id) is None:
        raise HTTPException(404, detail=f"unknown seat {seat_id!r}")
    await ctx.on_control(ctx.routing.remove_seat, seat_id)


@router.put(
    "/flow",
    response_model=FlowInstalled,
    responses={422: {"model": dict[str, list[FlowProblemOut]], "description": "the flow's problems, located"},
               413: {"description": "larger than api_max_flow_bytes"}},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/yaml": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}}}},
)
async def install_flow(request: Request, ctx: ApiContext = Depends(get_ctx)) -> FlowInstalled:
    if ctx.flow_admin is None:
        raise HTTPException(404, detail="flow administration is not enabled on this node")
    raw = await request.body()  # at most ``api_max_flow_bytes``: api.body_limit refuses larger bodies
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise HTTPException(422, detail=[{"location": "document", "message": f"not UTF-8: {e.reason}"}]) from e
    problems = await ctx.on_control(ctx.flow_admin.install_flow, text)
    if problems:
        raise HTTPException(422, detail=[{"location": str(p.location), "message": str(p.message)} for p in problems])
    return FlowInstalled()


@router.get("/tokens", response_model=list[TokenInfo])
async def list_tokens(include_dead: bool = Query(True, description="also revoked and expired tokens"),
                      ctx: ApiContext = Depends(get_ctx)) -> list[dict[str, Any]]:
    return await ctx.on_control(ctx.tokens.list, include_dead)


@router.post("/tokens", response_model=TokenCreated, status_code=201)
async def create_token(body: TokenRequest = Body(...), ctx: ApiContext = Depends(get_ctx)) -> TokenCreated:
    try:
        token = await ctx.on_control(ctx.tokens.create, body.role, body.seat_id, body.label, None, body.ttl_days)
    except TokenError as e:
        raise unprocessable(("body", "seat_id"), str(e)) from e
    who = await ctx.on_control(ctx.tokens.resolve, token)
    info = await ctx.on_control(ctx.tokens.info, who.token_id) if who is not None else None
    expires = info["expires_at"] if info else None
    return TokenCreated(id=who.token_id if who else None, token=token, role=body.role, seat_id=body.seat_id,
                        expires_at=expires)


@router.delete("/tokens/{token_id}", status_code=204, responses={404: {"description": "unknown or revoked"}})
async def revoke_token(token_id: int = Path(ge=1, le=2**31 - 1), ctx: ApiContext = Depends(get_ctx)) -> None:
    if not await ctx.on_control(ctx.tokens.revoke, token_id):
        raise HTTPException(404, detail=f"no live token {token_id}")
