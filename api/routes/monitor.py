"""``POST /api/v1/calls/{id}/monitor``: a supervisor listens to, whispers to or barges into a call.

The gateway calls the supervisor's phone (a SIP URI, or a seat's contact by ``seat_id``) and joins
it to the conversation in the worker's bridge.  Every monitoring session is written to the audit
log *before* the phone is dialled: a session that could not be accounted for does not happen.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.audit import CALL_MONITOR
from api.auth import client_ip, get_ctx, supervisor
from api.context import ApiContext
from api.schemas import SEAT_ID_PATTERN
from api.tokens import Principal
from api.views import seat_rows
from journey.transfer import MonitorRequest, TransferRefused

router = APIRouter(prefix="/api/v1/calls", tags=["monitor"])
log = logging.getLogger(__name__)
SIP_URI = re.compile(r"^sips?:[^\s<>\"]{1,300}$")


class MonitorIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    mode: Literal["listen", "whisper", "barge"]
    contact: str | None = Field(None, max_length=300)
    seat_id: str | None = Field(None, pattern=SEAT_ID_PATTERN)

    @model_validator(mode="after")
    def _one_phone(self) -> MonitorIn:
        if (self.contact is None) == (self.seat_id is None):
            raise ValueError("give exactly one of contact and seat_id")
        if self.contact is not None and not SIP_URI.match(self.contact):
            raise ValueError("contact must be a sip: or sips: URI")
        return self


@router.post("/{call_id}/monitor",
             responses={404: {"description": "no such live call, or unknown seat"},
                        409: {"description": "the call is not in a conversation"},
                        503: {"description": "the session could not be written to the audit log"}})
async def monitor(request: Request, body: MonitorIn, call_id: str = Path(max_length=128),
                  who: Principal = Depends(supervisor), ctx: ApiContext = Depends(get_ctx)) -> dict[str, Any]:
    if ctx.monitor is None:
        raise HTTPException(409, detail="this node carries no calls")
    contact = body.contact
    if body.seat_id is not None:
        seat = next((s for s in await seat_rows(ctx) if s["id"] == body.seat_id), None)
        if seat is None or not seat.get("contact"):
            raise HTTPException(404, detail=f"unknown seat {body.seat_id!r}, or it has no phone to call")
        contact = str(seat["contact"])
    assert contact is not None
    detail = {"mode": body.mode, "contact": contact, "seat_id": body.seat_id}
    if ctx.audit is not None:
        try:
            await ctx.on_control(ctx.audit.record, CALL_MONITOR, who, call_id, detail, client_ip(request))
        except Exception as e:
            log.error("audit_write_failed", extra={"action": CALL_MONITOR, "target": call_id, "error": str(e)[:200]})
            raise HTTPException(503, detail="the monitoring session could not be audited; not started") from None
    req = MonitorRequest(call_id=call_id, mode=body.mode, contact=contact, by=f"{who.role.value}:{who.token_id}")
    try:
        return await ctx.on_control(ctx.monitor, req)
    except TransferRefused as e:
        raise HTTPException(e.status, detail=e.detail) from None
