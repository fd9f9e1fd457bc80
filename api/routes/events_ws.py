"""``WS /api/v1/events``: live events, filtered by who is listening.

A supervisor (or admin) gets every event; a seat token gets only the events about its own seat
(status changes, the offers that ring it, its connects and completions), which is what its
console needs for a screen pop and nothing it should not see.  The first message is a ``HELLO``
sent once the subscription is in place, so a client knows nothing after it will be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from api.auth import resolve_token
from api.context import ApiContext
from api.tokens import Principal

router = APIRouter(tags=["events"])
log = logging.getLogger(__name__)


def event_dict(ev: Any) -> dict[str, Any]:
    if isinstance(ev, dict):
        return ev
    return ev.to_dict()


def visible_to(who: Principal, ev: dict[str, Any]) -> bool:
    if who.is_supervisor():
        return True
    return who.seat_id is not None and ev.get("seat_id") == who.seat_id


def _token_from(ws: WebSocket, query_token: str | None) -> str | None:
    if query_token:
        return query_token
    auth = ws.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _deny(ws: WebSocket, status: int, detail: str) -> None:
    try:
        await ws.send_denial_response(JSONResponse({"detail": detail}, status_code=status,
                                                   headers={"WWW-Authenticate": "Bearer"}))
    except RuntimeError:  # the server lacks the denial-response extension: a policy close instead
        await ws.close(code=1008, reason=detail)


async def _until_closed(ws: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()


@router.websocket("/api/v1/events")
async def events(ws: WebSocket, token: str | None = Query(None, max_length=200)) -> None:
    ctx: ApiContext = ws.app.state.ctx
    who = await resolve_token(ctx, _token_from(ws, token))
    if who is None:
        await _deny(ws, 401, "missing, unknown or revoked token")
        return
    await ws.accept()
    q = await ctx.read_control(ctx.routing.subscribe)
    closed = asyncio.create_task(_until_closed(ws))
    try:
        await ws.send_text(json.dumps({"kind": "HELLO", "role": who.role.value, "seat_id": who.seat_id,
                                       "node_id": ctx.node_id, "at": ctx.clock()}))
        while True:
            getter = asyncio.ensure_future(ctx.on_control(q.get))
            done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
            if closed in done:
                getter.cancel()
                break
            ev = event_dict(getter.result())
            if visible_to(who, ev):
                await ws.send_text(json.dumps(ev, ensure_ascii=False, separators=(",", ":"), default=str))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        closed.cancel()
        try:
            await ctx.read_control(ctx.routing.unsubscribe, q)
        except Exception:  # the control loop may already be stopping
            log.debug("unsubscribe failed", exc_info=True)
