"""The batched event writer: the ACD's decisions never wait on the database.

``append`` only puts events into memory.  A background task takes what arrived within one batch
window (``batch_window_s``) and writes it in one transaction: the log rows in order and their net
effect on the projections (``routing.store.projection``).  A crash therefore loses at most what was
appended in the last window plus the batch being written; ``stats()['max_batch_latency_s']``
measures that worst case (first append of a batch -> its commit) on the running system.

When the database is away, the batch is kept and retried with backoff while appends go on
(bounded by ``max_buffered``; beyond it the oldest events are dropped, counted and logged,
because a node that runs out of memory loses every call, not just a log line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from routing.events import Event
from routing.store.projection import BatchChanges, apply, event_row, fold

log = logging.getLogger("routing.store.writer")

#: Failed attempts of one batch, with the database answering, before the batch is salvaged event by event.
POISON_AFTER = 3


class Fenced(Exception):
    """Raised by a writer's ``fence`` inside the batch's transaction: this writer may no longer
    write (its routing authority was deposed); the batch and everything queued are dropped."""


@dataclass
class WriterStats:
    batches: int = 0
    events_written: int = 0
    max_batch: int = 0
    max_batch_latency_s: float = 0.0  # first append of a batch -> commit: the crash-loss window
    max_write_s: float = 0.0          # one transaction
    failures: int = 0
    dropped: int = 0
    poisoned: int = 0                 # events the database refused on their own (logged, dropped)


class EventWriter:
    def __init__(self, engine: AsyncEngine, node_id: str, batch_window_s: float = 0.05, max_batch: int = 500,
                 max_buffered: int = 500_000, clock: Any = time.time,
                 fence: Callable[[AsyncConnection], Awaitable[None]] | None = None) -> None:
        self.engine = engine
        #: Run first in every batch's transaction (the routing authority's epoch check, issue 14):
        #: raising ``Fenced`` there means nothing of this writer lands in the log any more.
        self.fence = fence
        self.node_id = node_id
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.max_buffered = max_buffered
        self.clock = clock
        self._pending: deque[tuple[float, Event]] = deque()
        self._inflight: list[tuple[float, Event]] = []
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._hurry = False
        #: events appended so far, and events whose fate is settled (written, or dropped): in the
        #: order they were appended, so ``flush`` can wait for exactly what came before it
        self._appended = 0
        self._settled = 0
        self._down_since: float | None = None
        self._stats = WriterStats()

    # -- the call path --------------------------------------------------------------------------
    def append(self, events: list[Event]) -> None:
        """Queue events for the log; never blocks, never raises (safe from another thread too)."""
        if not events:
            return
        t = time.monotonic()
        for ev in events:
            self._pending.append((t, ev))
        self._appended += len(events)
        over = len(self._pending) - self.max_buffered
        if over > 0:
            for _ in range(over):
                self._pending.popleft()
            self._stats.dropped += over
            self._settled += over
            log.error("event log buffer full, dropped oldest events",
                      extra={"dropped": over, "dropped_total": self._stats.dropped})
        self._poke()

    def _poke(self) -> None:
        wake, loop = self._wake, self._loop
        if wake is None or loop is None or wake.is_set():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="event-writer")
        if self._pending:
            self._wake.set()

    async def stop(self, timeout: float = 10.0) -> None:
        """Write everything still queued, then end the task (gives up after ``timeout`` if the DB is away)."""
        if self._task is None:
            return
        self._stopping = True
        self._hurry = True
        self._poke()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            lost = len(self._pending) + len(self._inflight)
            log.error("event writer stopped with unwritten events", extra={"count": lost})
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    async def flush(self) -> None:
        """Wait until everything appended so far is committed (tests, shutdown, benchmarks, the
        routing authority before it moves its command cursor).  Only what was appended before the
        call: waiting for an empty queue instead does not end while events keep coming (a busy
        leader), so the leader's next commands would wait for a lull."""
        target = self._appended
        self._hurry = True
        self._poke()
        while self._settled < target:
            if self._task is None or self._task.done():
                raise RuntimeError("event writer is not running")
            await asyncio.sleep(0.002)
        self._hurry = False

    def drop_pending(self) -> int:
        """Forget what is not yet being written; returns how many events.  A deposed routing
        authority calls it: its unwritten decisions must not land after the next leader restored
        (the next leader replays the commands that led to them).  A batch already in flight is
        not stopped."""
        n = len(self._pending)
        self._pending.clear()
        self._settled += n
        return n

    @property
    def buffered(self) -> int:
        return len(self._pending) + len(self._inflight)

    def stats(self) -> dict[str, Any]:
        s = self._stats
        return {
            "batches": s.batches, "events_written": s.events_written, "max_batch": s.max_batch,
            "mean_batch": (s.events_written / s.batches) if s.batches else 0.0,
            "max_batch_latency_s": s.max_batch_latency_s, "max_write_s": s.max_write_s,
            "buffered": self.buffered, "failures": s.failures, "dropped": s.dropped,
            "poisoned": s.poisoned,
            "batch_window_s": self.batch_window_s, "database_down": self._down_since is not None,
        }

    # -- the background task --------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            if not self._pending:
                if self._stopping:
                    return
                self._wake.clear()
                if self._pending:
                    continue
                await self._wake.wait()
                continue
            if not self._hurry and len(self._pending) < self.max_batch:
                # let the window fill: the oldest event waits at most batch_window_s
                left = self.batch_window_s - (time.monotonic() - self._pending[0][0])
                if left > 0:
                    await asyncio.sleep(left)
            n = min(self.max_batch, len(self._pending))
            self._inflight = [self._pending.popleft() for _ in range(n)]
            await self._write_until_done()
            self._inflight = []
            self._settled += n  # written, salvaged or dropped: settled either way

    async def _write_until_done(self) -> None:
        delay = 0.05
        failures = 0
        while True:
            try:
                await self._write(self._inflight)
            except asyncio.CancelledError:
                raise
            except Fenced as e:
                dropped = len(self._inflight) + len(self._pending)
                self._inflight = []
                self._settled += len(self._pending)  # the batch in flight is counted by ``_run``
                self._pending.clear()
                self._stats.dropped += dropped
                log.warning("event writer fenced, events dropped", extra={"count": dropped, "error": str(e)})
                return
            except Exception as e:
                failures += 1
                self._stats.failures += 1
                if self._down_since is None:
                    self._down_since = time.monotonic()
                log.error("event log write failed, keeping the batch and retrying",
                          extra={"count": self.buffered, "retry_in_s": round(delay, 3),
                                 "error": f"{e.__class__.__name__}: {str(e)[:200]}"})
                # the database answers but refuses this batch: one bad event must not stop the log
                if ((failures >= POISON_AFTER or refused_data(e)) and await self._database_reachable()
                        and await self._salvage(self._inflight)):
                    self._down_since = None
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if self._down_since is not None:
                log.warning("event log writes resumed", extra={
                    "down_s": round(time.monotonic() - self._down_since, 3), "count": len(self._inflight)})
                self._down_since = None
            return

    async def _database_reachable(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def _salvage(self, batch: list[tuple[float, Event]]) -> bool:
        """Keep what can be kept of a batch the database refuses: each event alone with its
        projections, else its log row alone, dropping (and logging) only what is refused outright.
        Written events leave ``batch`` at once, so an outage half-way never writes one twice."""
        now = self.clock()
        while batch:
            ev = batch[0][1]
            error = ""
            for log_only in (False, True):
                changes = (BatchChanges(event_rows=[event_row(ev, self.node_id)]) if log_only
                           else None)
                try:
                    if changes is None:
                        changes = fold([ev], self.node_id, now)
                    async with self.engine.begin() as conn:
                        if self.fence is not None:
                            await self.fence(conn)
                        await apply(conn, changes, now)
                    self._stats.events_written += 1
                    break
                except Exception as e:
                    error = f"{e.__class__.__name__}: {str(e)[:200]}"
            else:
                if not await self._database_reachable():
                    return False  # an outage after all: retry what is left later
                self._stats.poisoned += 1
                log.error("event refused by the database, dropped", extra={
                    "kind": ev.kind.value, "call_id": ev.call_id, "seat_id": ev.seat_id, "error": error})
            batch.pop(0)
        self._stats.batches += 1
        return True

    async def _write(self, batch: list[tuple[float, Event]]) -> None:
        t0 = time.monotonic()
        now = self.clock()
        changes = fold([ev for _, ev in batch], self.node_id, now)
        async with self.engine.begin() as conn:
            if self.fence is not None:
                await self.fence(conn)
            await apply(conn, changes, now)
        done = time.monotonic()
        s = self._stats
        s.batches += 1
        s.events_written += len(batch)
        s.max_batch = max(s.max_batch, len(batch))
        s.max_write_s = max(s.max_write_s, done - t0)
        s.max_batch_latency_s = max(s.max_batch_latency_s, done - batch[0][0])


def refused_data(e: BaseException) -> bool:
    """The database (or the fold) refused this batch's *content*, as opposed to being away: no
    point retrying it whole, salvage it event by event at once so the good events are not delayed."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

    if isinstance(e, OperationalError | InterfaceError | DisconnectionError | OSError | TimeoutError):
        return False
    if isinstance(e, DBAPIError):
        return not e.connection_invalidated
    return isinstance(e, ValueError | TypeError | KeyError)


__all__ = ["EventWriter", "Fenced", "WriterStats", "refused_data"]
