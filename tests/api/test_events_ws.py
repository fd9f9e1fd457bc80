"""``WS /api/v1/events``: a supervisor sees everything, a seat only its own seat and offers.

The token travels in the first message (what the dashboard and seat console do), in the
``bearer.<token>`` subprotocol or an ``Authorization`` header; never in the URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.api.conftest import Node


async def _next(ws: Any, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            ev = json.loads(await ws.recv())
            if ev["kind"] == kind:
                return ev


async def _hello(ws: Any) -> dict[str, Any]:
    return await _next(ws, "HELLO")


async def _authed(ws: Any, token: str) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "auth", "token": token}))
    return await _hello(ws)


async def _closed_with(ws: Any, timeout: float = 5.0) -> tuple[int | None, str]:
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


async def test_supervisor_receives_a_seat_status_change(node: Node, client: httpx.AsyncClient) -> None:
    async with websockets.connect(node.ws_url, subprotocols=["handoff122.v1"]) as ws:
        assert ws.subprotocol == "handoff122.v1"
        hello = await _authed(ws, node.tokens["supervisor"])
        assert hello["role"] == "supervisor"
        r = await client.put("/api/v1/seats/s2/status", json={"status": "not_ready", "reason": "meeting"},
                             headers=node.auth("seat_s2"))
        assert r.status_code == 200
        ev = await _next(ws, "SEATSTATUS")
        assert ev["seat_id"] == "s2" and ev["data"]["status"] == "not_ready" and ev["data"]["reason"] == "meeting"


async def test_seat_sees_only_its_own_events(node: Node, client: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {node.tokens['seat_s2']}"}
    async with websockets.connect(node.ws_url, additional_headers=headers) as ws2, \
            websockets.connect(node.ws_url) as ws1:
        assert (await _hello(ws2))["seat_id"] == "s2"
        assert (await _authed(ws1, node.tokens["seat_s1"]))["seat_id"] == "s1"
        # s1 is rung for a rescue call, then s2 logs in: s2 must see its own change only
        await node.routing.enqueue("c-ws", "rescue", 2, caller="13900000000",
                                   info={"answers": [{"node": "movable", "key": "2"}], "skill": "rescue"})
        offer = await _next(ws1, "OFFER")
        assert offer["call_id"] == "c-ws" and offer["data"]["info"]["answers"] == [{"node": "movable", "key": "2"}]
        await client.put("/api/v1/seats/s2/status", json={"status": "available"}, headers=node.auth("seat_s2"))
        ev = await _next(ws2, "SEATSTATUS")
        assert ev["seat_id"] == "s2"
        # everything s2 got so far, and in a short window after, is about s2
        seen = [ev]
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                while True:
                    seen.append(json.loads(await ws2.recv()))
        assert all(e.get("seat_id") == "s2" for e in seen), seen
        # of the other seats, only the transfer targets: available ones, their id, name and skills
        targets = [e for e in seen if e["kind"] == "TARGETS"]
        assert targets and all(set(row) == {"id", "name", "skills"} for e in targets for row in e["added"]), seen
        # a delta: s2 became available, so it is among the targets added; nobody else changed
        assert [row["id"] for e in targets for row in e["added"]] == ["s2"], seen


async def test_the_subprotocol_carries_the_token_and_is_never_echoed(node: Node) -> None:
    token = node.tokens["seat_s1"]
    async with websockets.connect(node.ws_url, subprotocols=["handoff122.v1", f"bearer.{token}"]) as ws:
        assert ws.subprotocol == "handoff122.v1"
        assert token not in str(ws.response.headers)
        assert (await _hello(ws))["seat_id"] == "s1"
    with pytest.raises(InvalidStatus) as e:
        async with websockets.connect(node.ws_url, subprotocols=["handoff122.v1", "bearer.h122_nope"]):
            pass
    assert e.value.response.status_code == 401


@pytest.mark.parametrize("who", ["supervisor", "bad", "nonsense"])
async def test_a_token_in_the_url_is_refused_even_a_good_one(node: Node, who: str) -> None:
    token = node.tokens.get(who, who)
    with pytest.raises(InvalidStatus) as e:
        async with websockets.connect(f"{node.ws_url}?token={token}"):
            pass
    assert e.value.response.status_code == 401
    assert b"first message" in e.value.response.body


@pytest.mark.parametrize("first", [
    json.dumps({"type": "auth", "token": "h122_unknown"}),
    json.dumps({"type": "auth", "token": "nonsense"}),
    json.dumps({"type": "hello"}),
    "not json",
    json.dumps({"type": "auth", "token": "h122_" + "x" * 5000}),
])
async def test_a_bad_first_message_closes_with_4401(node: Node, first: str) -> None:
    async with websockets.connect(node.ws_url) as ws:
        await ws.send(first)
        code, reason = await _closed_with(ws)
    assert code == 4401 and reason


async def test_no_auth_message_in_time_closes_with_4401(node: Node) -> None:
    node.ctx.limits = dataclasses.replace(node.ctx.limits, ws_auth_timeout_s=0.3)
    async with websockets.connect(node.ws_url) as ws:
        t0 = time.monotonic()
        code, reason = await _closed_with(ws)
    assert code == 4401 and "0.3" in reason
    assert 0.25 < time.monotonic() - t0 < 3
