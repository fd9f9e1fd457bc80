"""Repeated bad tokens from one address are slowed down: 429 with Retry-After, per source.

Sources are real loopback addresses: the attacker's client binds 127.0.0.2, the operator's
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api.limits import ApiLimits
from api.throttle import BadTokenThrottle
from tests.api.conftest import Node


def _from(node: Node, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=node.url, timeout=10,
                             transport=httpx.AsyncHTTPTransport(local_address=address))


async def test_bad_tokens_from_one_address_get_429_and_others_are_untouched(node: Node) -> None:
    limit = ApiLimits().auth_failures
    bad = {"Authorization": "Bearer h122_" + "g" * 43}
    async with _from(node, "127.0.0.2") as attacker, _from(node, "127.0.0.1") as operator:
        for _ in range(limit):
            r = await attacker.get("/api/v1/queues", headers=bad)
            assert r.status_code == 401
        r = await attacker.get("/api/v1/queues", headers=bad)
        assert r.status_code == 429, r.text
        assert "detail" in r.json() and 1 <= int(r.headers["retry-after"]) <= ApiLimits().auth_window_s
        # even a good token is not looked up from that address meanwhile: guessing gains nothing
        r = await attacker.get("/api/v1/queues", headers=node.auth("supervisor"))
        assert r.status_code == 429
        # requests without a token are not token guesses
        assert (await attacker.get("/healthz")).status_code == 200
        assert (await attacker.get("/api/v1/queues")).status_code == 401
        # another address is not affected
        r = await operator.get("/api/v1/queues", headers=node.auth("supervisor"))
        assert r.status_code == 200
        # nor is the WebSocket of another address, while the attacker's is refused
        async with websockets.connect(node.ws_url) as ws:
            await ws.send(json.dumps({"type": "auth", "token": node.tokens["seat_s1"]}))
            assert json.loads(await ws.recv())["kind"] == "HELLO"
    with pytest.raises(InvalidStatus) as e:
        async with websockets.connect(node.ws_url, subprotocols=["handoff122.v1", f"bearer.{node.tokens['admin']}"],
                                      local_addr=("127.0.0.2", 0)):
            pass
    assert e.value.response.status_code == 429
    async with websockets.connect(node.ws_url, local_addr=("127.0.0.2", 0)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": node.tokens["admin"]}))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4429


async def test_the_window_slides(node: Node) -> None:
    node.server.app.state.bad_tokens = BadTokenThrottle(max_failures=3, window_s=1.0)
    bad = {"Authorization": "Bearer h122_" + "h" * 43}
    async with _from(node, "127.0.0.3") as attacker:
        for _ in range(3):
            assert (await attacker.get("/api/v1/me", headers=bad)).status_code == 401
        blocked_at = time.monotonic()
        assert (await attacker.get("/api/v1/me", headers=node.auth("seat_s1"))).status_code == 429
        async with asyncio.timeout(5):
            while (r := await attacker.get("/api/v1/me", headers=node.auth("seat_s1"))).status_code == 429:
                await asyncio.sleep(0.1)
        assert r.status_code == 200 and 0.5 < time.monotonic() - blocked_at < 3


def test_memory_is_bounded() -> None:
    throttle = BadTokenThrottle(max_failures=5, window_s=60, max_sources=100)
    for i in range(10_000):
        for _ in range(7):
            throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100
    assert all(len(times) <= 5 for times in throttle._failures.values())
    assert throttle.retry_after("10.0.39.15") is not None  # the most recent ones are kept
    assert throttle.retry_after("10.0.0.1") is None
