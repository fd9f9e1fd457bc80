"""Queues per skill: who waits, how long, which seats are free, and the day's figures."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from api.auth import get_ctx, supervisor
from api.context import ApiContext
from api.errors import unprocessable
from api.schemas import QueueRow
from api.views import queue_rows

router = APIRouter(prefix="/api/v1/queues", tags=["queues"])


@router.get("", response_model=list[QueueRow], dependencies=[Depends(supervisor)])
async def list_queues(
    since: float | None = Query(None, ge=0, le=1e11, description="cumulative figures from (unix s)"),
    until: float | None = Query(None, ge=0, le=1e11, description="cumulative figures until (unix s)"),
    ctx: ApiContext = Depends(get_ctx),
) -> list[dict[str, Any]]:
    if since is not None and until is not None and until < since:
        raise unprocessable(("query", "until"), "until is before since")
    return await queue_rows(ctx, since, until)
