"""``handoff122 bench api``: read latency of the API under concurrent load.

A real routing service on SQLite (many seats, many waiting and ringing calls, a call history),
the API on its own uvicorn thread as in ``serve``, and concurrent clients on ``/api/v1/queues``,
``/api/v1/calls`` and ``/metrics``.  Goal: reads p99 <= 50 ms.

Hook for the gateway: ``live_sip_calls`` (an async context manager factory taking the node's
``ApiContext``) may be set by ``gateway.bench`` to keep 100 simulated SIP calls up during the
measurement and report whether any was delayed; its result dict is merged into the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from api.app import create_app
from api.context import ApiContext
from api.server import ApiServer, ControlLoopBridge
from api.tokens import TokenStore

#: Set by the gateway bench: ``live_sip_calls(ctx) -> async context manager yielding a dict``.
live_sip_calls: Callable[[ApiContext], contextlib.AbstractAsyncContextManager[dict[str, Any]]] | None = None

PATHS = ("/api/v1/queues", "/api/v1/calls?limit=50", "/metrics")


async def _prepare(data_dir: Path, seats: int, calls: int, history: int) -> tuple[Any, ApiContext]:
    from gateway.settings import Settings
    from routing.acd import SeatSpec
    from routing.skills import SKILLS
    from routing.status import SeatStatus
    from routing.store.calls import CallRecords
    from routing.store.database import create_schema, make_engine

    # imported by name: the bench is the one place the API needs the concrete service
    RoutingService = importlib.import_module("routing.service").RoutingService
    settings = Settings(data_dir=data_dir)
    engine = make_engine(settings.database_url)
    await create_schema(engine)
    specs = [SeatSpec(id=f"b{i}", contact=f"sip:b{i}@127.0.0.1:{20000 + i}", skills={SKILLS[i % len(SKILLS)]: 0},
                      name=f"seat {i}", status=SeatStatus.AVAILABLE) for i in range(seats)]
    routing = RoutingService.from_settings(settings, engine, node_id="bench")
    await routing.start(specs)
    records = CallRecords(engine)
    now = time.time()
    for i in range(history):
        await records.upsert_call(f"h{i}", caller=f"138{i:08d}", started_at=now - 3600 + i, skill=SKILLS[i % 8],
                                  seat_id=f"b{i % max(1, seats)}", ended_at=now - 3000 + i, end_reason="completed",
                                  ivr={"answers": [], "skill": SKILLS[i % 8], "priority": 3})
    for i in range(calls):
        await routing.enqueue(f"q{i}", SKILLS[i % 8], 3, caller=f"139{i:08d}", info={"answers": []})
    tokens = TokenStore(engine)
    await tokens.create_schema()
    ctx = ApiContext(routing=routing, calls=records, tokens=tokens, node_id="bench",
                     bridge=ControlLoopBridge(asyncio.get_running_loop()))
    return routing, ctx


async def _load(url: str, token: str, concurrency: int, requests: int) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        async def worker() -> None:
            nonlocal errors
            for i in counter:
                t0 = time.perf_counter()
                r = await client.get(PATHS[i % len(PATHS)])
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return latencies, elapsed, errors


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else 0.0


async def run(quick: bool) -> dict[str, Any]:
    seats, calls, history = (50, 100, 200) if quick else (400, 1000, 2000)
    concurrency, requests = (10, 300) if quick else (32, 3000)
    with tempfile.TemporaryDirectory(prefix="h122-bench-api-") as tmp:
        routing, ctx = await _prepare(Path(tmp), seats, calls, history)
        server = ApiServer(create_app(ctx), "127.0.0.1", 0)
        await server.start_async()
        try:
            token = await ctx.tokens.create("supervisor")
            # the clients run on their own thread and loop, so they do not compete with the control loop
            await asyncio.to_thread(asyncio.run, _load(server.url, token, 4, 40))  # warm up
            sip = live_sip_calls(ctx) if live_sip_calls else contextlib.nullcontext({})
            async with sip as sip_result:
                lat, elapsed, errors = await asyncio.to_thread(
                    asyncio.run, _load(server.url, token, concurrency, requests))
        finally:
            await server.stop_async()
            await routing.stop()
            await ctx.tokens.engine.dispose()
    result = {
        "bench": "api", "seats": seats, "waiting_calls": calls, "history": history,
        "concurrency": concurrency, "requests": len(lat), "errors": errors,
        "p50_ms": round(_pct(lat, 0.50) * 1000, 2), "p99_ms": round(_pct(lat, 0.99) * 1000, 2),
        "mean_ms": round(statistics.fmean(lat) * 1000, 2) if lat else 0.0,
        "requests_per_s": round(len(lat) / elapsed, 1) if elapsed else 0.0,
        "goal_p99_ms": 50.0,
    }
    result["goal_met"] = result["p99_ms"] <= 50.0 and errors == 0
    result.update(dict(sip_result or {}))
    return result


def main(as_json: bool = False, quick: bool = False) -> int:
    try:
        result = asyncio.run(run(quick))
    except ImportError as e:
        print(f"handoff122: bench api needs the routing service: {e}")
        return 2
    print(f"api reads: {result['requests']} requests, concurrency {result['concurrency']}, "
          f"{result['seats']} seats, {result['waiting_calls']} calls in routing")
    print(f"  p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms  {result['requests_per_s']} req/s  "
          f"errors {result['errors']}  goal p99 <= 50 ms: {'met' if result['goal_met'] else 'NOT met'}")
    if "sip_delayed" in result:
        print(f"  SIP calls delayed: {result['sip_delayed']}")
    if as_json:
        print(json.dumps(result))
    return 0 if result["errors"] == 0 else 1
