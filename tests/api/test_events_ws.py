"""``WS /api/v1/events``: a supervisor sees everything, a seat only its own seat and offers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.api.conftest import Node


async def _next(ws: Any, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            ev = json.loads(await ws.recv())
            if ev["kind"] == kind:
                return ev


async def _hello(ws: Any) -> dict[str, Any]:
    return await _next(ws, "HELLO")


async def test_supervisor_receives_a_seat_status_change(node: Node, client: httpx.AsyncClient) -> None:
    async with websockets.connect(f"{node.ws_url}?token={node.tokens['supervisor']}") as ws:
        hello = await _hello(ws)
        assert hello["role"] == "supervisor"
        r = await client.put("/api/v1/seats/s2/status", json={"status": "not_ready", "reason": "meeting"},
                             headers=node.auth("seat_s2"))
        assert r.status_code == 200
        ev = await _next(ws, "SEATSTATUS")
        assert ev["seat_id"] == "s2" and ev["data"]["status"] == "not_ready" and ev["data"]["reason"] == "meeting"


async def test_seat_sees_only_its_own_events(node: Node, client: httpx.AsyncClient) -> None:
    headers = {"Authorization": f"Bearer {node.tokens['seat_s2']}"}
    async with websockets.connect(node.ws_url, additional_headers=headers) as ws2, \
            websockets.connect(f"{node.ws_url}?token={node.tokens['seat_s1']}") as ws1:
        assert (await _hello(ws2))["seat_id"] == "s2"
        assert (await _hello(ws1))["seat_id"] == "s1"
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


@pytest.mark.parametrize("token", [None, "h122_unknown", "nonsense"])
async def test_events_refuse_a_missing_or_unknown_token(node: Node, token: str | None) -> None:
    url = node.ws_url + (f"?token={token}" if token else "")
    with pytest.raises(InvalidStatus) as e:
        async with websockets.connect(url):
            pass
    assert e.value.response.status_code == 401
