"""``GET /api/v1/audit``: the audit log for supervisors, newest first, with filters."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query

from api.auth import get_ctx, supervisor
from api.context import ApiContext
from api.errors import unprocessable
from api.schemas import AuditEntry

router = APIRouter(prefix="/api/v1/audit", tags=["audit"], dependencies=[Depends(supervisor)])


@router.get("", response_model=list[AuditEntry], responses={404: {"description": "no audit log on this node"}})
async def list_audit(
    kind: str | None = Query(None, max_length=32, pattern=r"^[a-z_.]+$",
                             description="the action, e.g. recording.download or seat.status"),
    since: float | None = Query(None, ge=0, le=1e11, description="at or after (unix s)"),
    until: float | None = Query(None, ge=0, le=1e11, description="before (unix s), for paging"),
    target: str | None = Query(None, max_length=200, description="a recording or seat id"),
    limit: int = Query(100, ge=1, le=1000),
    ctx: ApiContext = Depends(get_ctx),
) -> list[dict[str, Any]]:
    if ctx.audit is None:
        raise HTTPException(404, detail="no audit log on this node")
    if since is not None and until is not None and until < since:
        raise unprocessable(("query", "until"), "until is before since")
    return await ctx.on_control(ctx.audit.list, action=kind, since=since, until=until, target=target, limit=limit)
