"""Call history: newest first, with filters; one call with its event timeline and IVR record."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query

from api.auth import get_ctx, supervisor
from api.context import ApiContext
from api.schemas import CallRecord

router = APIRouter(prefix="/api/v1/calls", tags=["calls"], dependencies=[Depends(supervisor)])


@router.get("", response_model=list[CallRecord])
async def list_calls(
    limit: int = Query(50, ge=1, le=500),
    before: float | None = Query(None, ge=0, le=1e11, description="started before (unix s), for paging"),
    skill: str | None = Query(None, max_length=64),
    outcome: str | None = Query(None, max_length=64, description="end reason, e.g. completed, abandoned"),
    seat_id: str | None = Query(None, max_length=32),
    caller: str | None = Query(None, max_length=128),
    since: float | None = Query(None, ge=0, le=1e11),
    until: float | None = Query(None, ge=0, le=1e11),
    ctx: ApiContext = Depends(get_ctx),
) -> list[dict[str, Any]]:
    return await ctx.on_control(ctx.calls.list, limit=limit, before=before, skill=skill, outcome=outcome,
                                seat_id=seat_id, caller=caller, since=since, until=until)


@router.get("/{call_id}", response_model=CallRecord, responses={404: {"description": "unknown call"}})
async def get_call(call_id: str = Path(max_length=128), ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    record = await ctx.on_control(ctx.calls.get, call_id)
    if record is None:
        raise HTTPException(404, detail=f"unknown call {call_id!r}")
    return record
