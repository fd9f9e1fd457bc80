"""``WS /api/v1/events``: live events, filtered by who is listening.

A supervisor (or admin) gets every event; a seat token gets only the events about its own seat
(status changes, the offers that ring it, its connects and completions), which is what its
console needs for a screen pop and nothing it should not see.  The first message the server sends
is a ``HELLO``, once the subscription is in place, so a client knows nothing after it will be missed.

Authentication, never in the URL (a URL ends up in proxy and access logs, and browser history):

- the first message: ``{"type": "auth", "token": "h122_..."}`` within ``api_ws_auth_timeout_s``
  of the upgrade (what the dashboard and the seat console do); a missing, bad or late one closes
  the socket with code 4401 (4429 when the address is being slowed down for bad tokens);
- or, before the upgrade, the subprotocols ``handoff122.v1, bearer.<token>`` (the server answers
  ``handoff122.v1``, never the token) or an ``Authorization: Bearer`` header: a bad token is
  then refused with an HTTP 401 (or 429) instead of an upgrade.

``?token=`` is refused with 401, even for a good token, so that nobody keeps a client that puts
tokens in URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from api.auth import authenticate
from api.context import ApiContext
from api.tokens import Principal

router = APIRouter(tags=["events"])
log = logging.getLogger(__name__)

SUBPROTOCOL = "handoff122.v1"
TOKEN_SUBPROTOCOL_PREFIX = "bearer."
CLOSE_UNAUTHORIZED = 4401
CLOSE_THROTTLED = 4429
MAX_AUTH_MESSAGE = 1024


def event_dict(ev: Any) -> dict[str, Any]:
    if isinstance(ev, dict):
        return ev
    return ev.to_dict()


def visible_to(who: Principal, ev: dict[str, Any]) -> bool:
    if who.is_supervisor():
        return True
    return who.seat_id is not None and ev.get("seat_id") == who.seat_id


def _offered_protocols(ws: WebSocket) -> list[str]:
    return [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]


def _token_before_upgrade(ws: WebSocket) -> str | None:
    for proto in _offered_protocols(ws):
        if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
            return proto[len(TOKEN_SUBPROTOCOL_PREFIX):]
    auth = ws.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _deny(ws: WebSocket, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    try:
        await ws.send_denial_response(JSONResponse({"detail": detail}, status_code=status,
                                                   headers=headers or {"WWW-Authenticate": "Bearer"}))
    except RuntimeError:  # the server lacks the denial-response extension: a policy close instead
        await ws.close(code=1008, reason=detail)


def _token_of(message: str) -> str | None:
    try:
        data = json.loads(message)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("type") != "auth" or not isinstance(data.get("token"), str):
        return None
    return data["token"]


async def _first_message_auth(ws: WebSocket, timeout_s: float) -> Principal | None:
    """Accept, then wait for the auth message; on failure close with a reason and return None."""
    await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in _offered_protocols(ws) else None)
    try:
        async with asyncio.timeout(timeout_s):
            message = await ws.receive_text()
    except TimeoutError:
        await ws.close(CLOSE_UNAUTHORIZED, f"no auth message within {timeout_s:g} s")
        return None
    except (WebSocketDisconnect, RuntimeError, KeyError):  # gone, or a binary frame
        with contextlib.suppress(RuntimeError):
            await ws.close(CLOSE_UNAUTHORIZED, 'the first message must be {"type":"auth","token":...}')
        return None
    token = _token_of(message) if len(message) <= MAX_AUTH_MESSAGE else None
    if token is None:
        await ws.close(CLOSE_UNAUTHORIZED, 'the first message must be {"type":"auth","token":...}')
        return None
    try:
        return await authenticate(ws, token)
    except HTTPException as e:
        code = CLOSE_THROTTLED if e.status_code == 429 else CLOSE_UNAUTHORIZED
        await ws.close(code, str(e.detail)[:120])
        return None


async def _until_closed(ws: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()


@router.websocket("/api/v1/events")
async def events(ws: WebSocket) -> None:
    ctx: ApiContext = ws.app.state.ctx
    if "token" in ws.query_params:
        await _deny(ws, 401, "a token in the URL is refused: send it in the first message "
                             '({"type":"auth","token":...}) or as the subprotocol bearer.<token>')
        return
    early = _token_before_upgrade(ws)
    if early is not None:
        try:
            who: Principal | None = await authenticate(ws, early)
        except HTTPException as e:
            await _deny(ws, e.status_code, str(e.detail), e.headers)
            return
        await ws.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in _offered_protocols(ws) else None)
    else:
        who = await _first_message_auth(ws, ctx.limits.ws_auth_timeout_s)
        if who is None:
            return
    assert who is not None
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
