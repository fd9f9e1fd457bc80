"""``WS /api/v1/events``: live events, filtered by who is listening.

A supervisor (or admin) gets every event; a seat token gets only the events about its own seat
(status changes, the offers that ring it, its connects and completions), which is what its
console needs for a screen pop and nothing it should not see.  The first message the server sends
is a ``HELLO``, then a ``SNAPSHOT`` of the seats and queues it may see (``api.readmodel``), then
deltas (``SEATS``, ``QUEUES``) and the ACD events; nothing after the snapshot is missed.  A client
too slow to follow gets ``RESYNC`` and a fresh ``SNAPSHOT``; one that stays too slow is closed
with 4408.

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
import time
from typing import Any

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from api.auth import authenticate
from api.context import ApiContext
from api.readmodel import LiveClient, LiveViews, Viewer, encode
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


#: A socket that does not take one message within this long is closed (its TCP window is full).
SEND_TIMEOUT_S = 10.0
CLOSE_TOO_SLOW = 4408


async def _send_loop(ws: WebSocket, live: LiveViews, client: LiveClient, viewer: Viewer) -> None:
    """Drain this client's outbox; after an overflow, ``RESYNC`` and a fresh ``SNAPSHOT``."""
    while True:
        await client.wake.wait()
        client.wake.clear()
        if client.resync:
            client.resync = False
            live.resyncs += 1
            if client.too_slow(time.monotonic()):
                await ws.close(CLOSE_TOO_SLOW, "too slow to follow the live events")
                return
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await ws.send_text(encode({"kind": "RESYNC", "dropped": client.dropped}))
                await ws.send_text(encode(live.snapshot_for(viewer)))
        while client.outbox and not client.resync:
            text = client.outbox.popleft()
            async with asyncio.timeout(SEND_TIMEOUT_S):
                await ws.send_text(text)


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
    live = await ctx.live_views()
    viewer = Viewer(supervisor=who.is_supervisor(), seat_id=who.seat_id)
    client = live.join(viewer, limit=ctx.limits.ws_queue)  # joined before the snapshot: nothing after it is missed
    closed = asyncio.create_task(_until_closed(ws))
    sender: asyncio.Task[None] | None = None
    try:
        await ws.send_text(json.dumps({"kind": "HELLO", "role": who.role.value, "seat_id": who.seat_id,
                                       "node_id": ctx.node_id, "at": ctx.clock()}))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await live.ready.wait()
        await ws.send_text(encode(live.snapshot_for(viewer)))
        sender = asyncio.create_task(_send_loop(ws, live, client, viewer))
        await asyncio.wait({sender, closed}, return_when=asyncio.FIRST_COMPLETED)
    except (WebSocketDisconnect, RuntimeError, TimeoutError):
        pass
    finally:
        live.leave(client)
        closed.cancel()
        if sender is not None:
            sender.cancel()
        if sender is not None and sender.done() and not sender.cancelled() and sender.exception() is not None:
            with contextlib.suppress(RuntimeError):  # it timed out sending: the socket is stuck
                await ws.close(CLOSE_TOO_SLOW, "too slow to follow the live events")
