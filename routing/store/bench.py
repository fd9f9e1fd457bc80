"""Persistence figures for ``handoff122 bench routing``.

Two runs over the same event stream:

* **throughput**: events appended as fast as the ACD produces them (one decision's events per
  ``append``, the loop yielding between decisions as in the node), until the last one is committed.
  Gives end-to-end events/s, the batch sizes, and what ``append`` costs the decision (it must stay
  in microseconds: the decision never waits on the database).
* **paced**: the same stream at a steady rate well below that throughput, as in production.  Here
  the worst time from an event's ``append`` to its commit is the crash-loss window: a crash loses
  at most the events of that window.  It is bounded by ``batch_window_s`` plus one transaction.

On PostgreSQL the bench runs in a database of its own, created and dropped here, so it never
writes into the database the URL names.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from routing.events import Event
from routing.store.database import create_schema, make_engine
from routing.store.models import events as events_table
from routing.store.writer import EventWriter

DECISION_EVENTS = 3  # a typical decision returns 1-4 events (ENTERQUEUE + OFFER + SEATSTATUS)


def _pct(values: list[int], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] / 1000.0 if s else 0.0  # ns -> us


async def _run(url: str, evs: list[Event], batch_window_s: float, max_batch: int,
               rate: float | None, sqlite_synchronous: str = "full") -> dict[str, Any]:
    engine = make_engine(url, sqlite_synchronous=sqlite_synchronous)
    try:
        await create_schema(engine)
        async with engine.connect() as conn:
            before = (await conn.execute(select(func.count()).select_from(events_table))).scalar_one()
        writer = EventWriter(engine, "bench", batch_window_s=batch_window_s, max_batch=max_batch)
        await writer.start()
        append_ns: list[int] = []
        t0 = time.perf_counter()
        for i in range(0, len(evs), DECISION_EVENTS):
            chunk = evs[i:i + DECISION_EVENTS]
            a = time.perf_counter_ns()
            writer.append(chunk)
            append_ns.append(time.perf_counter_ns() - a)
            if rate is not None:
                ahead = t0 + (i + len(chunk)) / rate - time.perf_counter()
                if ahead > 0:
                    await asyncio.sleep(ahead)
            elif (i // DECISION_EVENTS) % 20 == 0:
                await asyncio.sleep(0)
        await writer.flush()
        elapsed = time.perf_counter() - t0
        stats = writer.stats()
        await writer.stop()
        async with engine.connect() as conn:
            after = (await conn.execute(select(func.count()).select_from(events_table))).scalar_one()
    finally:
        await engine.dispose()
    return {
        "events": len(evs), "persisted": after - before, "seconds": round(elapsed, 3),
        "events_per_s": round(len(evs) / elapsed) if elapsed else 0,
        "batches": stats["batches"], "mean_batch": round(stats["mean_batch"], 1), "max_batch": stats["max_batch"],
        "max_write_ms": round(stats["max_write_s"] * 1000, 2),
        "max_append_to_commit_ms": round(stats["max_batch_latency_s"] * 1000, 2),
        "append_p50_us": round(_pct(append_ns, 0.50), 2), "append_p99_us": round(_pct(append_ns, 0.99), 2),
    }


async def _pg_admin(url: str, sql: str) -> None:
    import asyncpg

    u = make_url(url)
    conn = await asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                                 database=u.database or "postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def persistence_bench(events: list[Event], url: str, batch_window_s: float = 0.05,
                            max_batch: int = 500, paced_rate: float | None = None,
                            sqlite_synchronous: str = "full") -> dict[str, Any]:
    """End-to-end events/s through ``EventWriter`` on ``url``, and the measured crash-loss window."""
    u = make_url(url)
    admin_url = url
    scratch: str | None = None
    if u.get_backend_name() == "postgresql":
        scratch = f"handoff_bench_{uuid.uuid4().hex[:10]}"
        await _pg_admin(admin_url, f'CREATE DATABASE "{scratch}"')
        url = u.set(database=scratch).render_as_string(hide_password=False)
    try:
        full = await _run(url, events, batch_window_s, max_batch, None, sqlite_synchronous)
        rate = paced_rate or max(500.0, min(5000.0, full["events_per_s"] * 0.5))
        sample = events[: int(rate * 2)]  # two seconds of steady traffic
        paced = await _run(url, sample, batch_window_s, max_batch, rate, sqlite_synchronous)
    finally:
        if scratch is not None:
            await _pg_admin(admin_url, f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    return {
        "backend": u.get_backend_name(), "batch_window_ms": round(batch_window_s * 1000, 1),
        "max_batch": max_batch, "throughput": full,
        "paced": {"rate_events_per_s": round(rate), **paced},
        # what a crash can lose at the paced rate: events appended but not yet committed
        "crash_loss_window_ms": paced["max_append_to_commit_ms"],
    }
