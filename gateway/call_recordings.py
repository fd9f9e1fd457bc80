"""Binds a call's recording to the catalog: opened at answer, sealed (hash) when the call ends.

The recording id is the call id: one recording per call, from answer to end.  Finalisation reads
and hashes the whole file, so it runs in a thread, never on the control loop.  A recording that
cannot be made or sealed (disk full, unwritable dir) never affects the call: the failure is
logged, kept in the catalog and flagged on the call record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from recordings.catalog import Catalog, RecordingRow, RecordingStatus
from recordings.closing import close_recording
from routing.store.calls import CallRecords

log = logging.getLogger("gateway.recordings")


class CallRecordings:
    def __init__(self, catalog: Catalog, calls: CallRecords) -> None:
        self.catalog = catalog
        self.calls = calls
        self.started: dict[str, float] = {}
        self._opening: dict[str, asyncio.Task[None]] = {}
        self._retrying: set[asyncio.Task[None]] = set()

    @property
    def partial_dir(self) -> Path:
        return self.catalog.layout.partial_dir

    async def call_started(self, call_id: str, partial_path: str | None, started_at: float,
                           error: str | None) -> str | None:
        self.started[call_id] = started_at
        task = asyncio.ensure_future(self._open(call_id, partial_path, started_at, error))
        self._opening[call_id] = task
        await asyncio.shield(task)
        return call_id

    async def _open(self, call_id: str, partial_path: str | None, started_at: float, error: str | None) -> None:
        try:
            await self.catalog.opened(call_id, call_id, started_at)
            if error or not partial_path:
                await self.catalog.failed(call_id, error or "recorder not started")
                await self.calls.set_flags(call_id, recording_failed=error or "recorder not started")
        except Exception as e:
            log.error("recording_catalog_failed", extra={"call_id": call_id, "error": str(e)[:300]})

    async def adopted(self, call_id: str, partial_path: str | None, started_at: float, error: str | None) -> None:
        """A call a worker kept recording through a restart of the control process: sealed at its
        end like any other (its catalog row is opened now if the crash came before it was)."""
        try:
            known = await self.catalog.get(call_id) is not None
        except Exception:
            known = False
        if known:
            self.started[call_id] = started_at
        else:
            await self.call_started(call_id, partial_path, started_at, error)

    async def call_ended(self, call_id: str, partial_path: str | None, error: str | None) -> str | None:
        # A short call can end before its "opened" row is written: seal only after it.
        opening = self._opening.pop(call_id, None)
        if opening is not None:
            await opening
        started_at = self.started.pop(call_id, None)
        if not partial_path or started_at is None:
            return call_id
        # With an error too: a media worker that died cannot seal its own file, so the control
        # process does (``finalize`` repairs the header the worker never wrote).  A recorder that
        # never started already has a failed row, which ``close_recording`` leaves as it is.
        _ = error
        try:
            row = await close_recording(self.catalog, call_id, call_id, started_at, time.time())
        except Exception as e:  # the database is away: the file waits in .partial, sealed when it is back
            log.error("recording_seal_deferred", extra={"call_id": call_id, "error": str(e)[:300]})
            task = asyncio.ensure_future(self._seal_when_back(call_id, started_at))
            self._retrying.add(task)
            task.add_done_callback(self._retrying.discard)
            return call_id
        await self._report(call_id, row)
        return call_id

    async def _seal_when_back(self, call_id: str, started_at: float, give_up_after_s: float = 86400) -> None:
        """Retry a seal the database refused (an outage), with backoff; a restart also finds it."""
        delay, deadline = 0.5, time.monotonic() + give_up_after_s
        while time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            try:
                row = await close_recording(self.catalog, call_id, call_id, started_at, time.time())
            except Exception:
                continue
            await self._report(call_id, row)
            return

    async def _report(self, call_id: str, row: RecordingRow) -> None:
        if row.status is RecordingStatus.FAILED:
            await self.calls.set_flags(call_id, recording_failed=row.error or "not sealed")
        else:
            log.info("recording_sealed", extra={"call_id": call_id, "size": row.size,
                                                "duration_s": row.duration_s, "sha256": row.sha256})
