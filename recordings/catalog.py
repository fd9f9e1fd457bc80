"""The recordings catalog: one row per recording, the place its seal (SHA-256) is kept.

The table has its own ``MetaData`` (``recordings.catalog.metadata``) so the composition root can
run one Alembic environment over every package's tables without this package knowing the others.

A row is written when recording starts (status ``recording``), so a crash mid-call still leaves a
trace pointing at the partial file.  The seal is written once: ``closed`` refuses to overwrite the
hash of a recording already closed, and a purge keeps the row and its hash (the audit trail says
what existed and when it was deleted).  Times are unix seconds, like the routing events.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from recordings.finalize import RecordingError, RecordingInfo
from recordings.layout import RecordingLayout


class RecordingStatus(StrEnum):
    RECORDING = "recording"
    CLOSED = "closed"
    FAILED = "failed"
    PURGED = "purged"


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

recordings_table = Table(
    "recordings",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("call_id", String(255), nullable=False, index=True),
    Column("path", String(512), nullable=False),
    Column("size", BigInteger),
    Column("duration_s", Float),
    Column("sha256", String(64)),
    Column("sample_rate", Integer),
    Column("channels", Integer),
    Column("started_at", Float, nullable=False, index=True),
    Column("closed_at", Float),
    Column("status", String(16), nullable=False, index=True),
    Column("error", Text),
    Column("purged_at", Float),
    Column("node_id", String(64), index=True),  # the node that records it: a restart recovers only its own
    CheckConstraint("status IN ('recording', 'closed', 'failed', 'purged')", name="status"),
)


@dataclass(frozen=True, slots=True)
class RecordingRow:
    id: str
    call_id: str
    path: str                       # relative to the recordings root, POSIX separators
    status: RecordingStatus
    started_at: float
    size: int | None = None
    duration_s: float | None = None
    sha256: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    closed_at: float | None = None
    error: str | None = None
    purged_at: float | None = None
    node_id: str | None = None

    @property
    def sealing(self) -> bool:
        """The seal (hash) is written but the file may not have been moved yet: a crash between
        the two leaves this, and recovery finishes it."""
        return self.status is not RecordingStatus.CLOSED and self.sha256 is not None


def _row(m: object) -> RecordingRow:
    d = dict(m._mapping)  # type: ignore[attr-defined]
    d["status"] = RecordingStatus(d["status"])
    return RecordingRow(**d)


class Catalog:
    def __init__(self, engine: AsyncEngine, root: Path, node_id: str | None = None) -> None:
        self.engine = engine
        self.layout = RecordingLayout(root)
        self.node_id = node_id
        self._sealing: dict[str, list[Any]] = {}  # recording id -> [lock, callers using it]

    @contextlib.asynccontextmanager
    async def sealing_turn(self, recording_id: str) -> AsyncIterator[None]:
        """One seal at a time per recording in this process (a call end and a recovery may race);
        the lock is forgotten once nobody holds or waits for it."""
        entry = self._sealing.setdefault(recording_id, [asyncio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                self._sealing.pop(recording_id, None)

    async def create_schema(self) -> None:
        """Create the table if missing (tests, the single-node default); deployments use Alembic."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def schema_exists(self) -> bool:
        async with self.engine.connect() as conn:
            return await conn.run_sync(lambda sync: inspect(sync).has_table(recordings_table.name))

    def file_of(self, row: RecordingRow) -> Path:
        return self.layout.absolute(row.path)

    async def opened(self, recording_id: str, call_id: str, started_at: float) -> None:
        """Record that a worker started writing ``recording_id`` (at its partial path)."""
        path = self.layout.relative(self.layout.partial_path(recording_id))
        async with self.engine.begin() as conn:
            await conn.execute(recordings_table.insert().values(
                id=recording_id, call_id=call_id, path=path, started_at=started_at,
                status=RecordingStatus.RECORDING.value, node_id=self.node_id,
            ))

    async def sealing(self, recording_id: str, info: RecordingInfo) -> None:
        """The seal's intent, written *before* the file moves to its final name: size, duration
        and SHA-256 of the repaired partial file.  The status does not change; recovery of a row
        with a hash and no ``closed`` status looks for the file at both names and finishes."""
        t = recordings_table
        async with self.engine.begin() as conn:
            result = await conn.execute(update(t).where(
                t.c.id == recording_id,
                t.c.status.in_([RecordingStatus.RECORDING.value, RecordingStatus.FAILED.value])).values(
                size=info.size, duration_s=info.duration_s, sha256=info.sha256, sample_rate=info.sample_rate,
                channels=info.channels))
        if result.rowcount != 1:
            raise RecordingError(f"recording {recording_id} cannot be sealed (not open in the catalog)")

    async def closed(self, recording_id: str, info: RecordingInfo, final_path: Path,
                     at: float | None = None) -> None:
        """Seal the recording: final path, size, duration and SHA-256, written once."""
        values = dict(
            path=self.layout.relative(final_path), size=info.size, duration_s=info.duration_s,
            sha256=info.sha256, sample_rate=info.sample_rate, channels=info.channels,
            closed_at=time.time() if at is None else at, status=RecordingStatus.CLOSED.value, error=None,
        )
        await self._transition(recording_id, values, allowed=(RecordingStatus.RECORDING, RecordingStatus.FAILED))

    async def failed(self, recording_id: str, error: str, at: float | None = None) -> None:
        """The recording could not be finalised; the row keeps pointing at the partial file."""
        values = dict(error=error[:4000], closed_at=time.time() if at is None else at,
                      status=RecordingStatus.FAILED.value)
        await self._transition(recording_id, values, allowed=(RecordingStatus.RECORDING, RecordingStatus.FAILED))

    async def mark_purged(self, recording_id: str, at: float) -> None:
        """The file is gone by retention; the row, path and hash stay as the audit trail."""
        values = dict(purged_at=at, status=RecordingStatus.PURGED.value)
        await self._transition(recording_id, values, allowed=(RecordingStatus.CLOSED, RecordingStatus.FAILED))

    async def _transition(self, recording_id: str, values: dict[str, object],
                          allowed: tuple[RecordingStatus, ...]) -> None:
        t = recordings_table
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(t).where(t.c.id == recording_id, t.c.status.in_([s.value for s in allowed])).values(**values)
            )
            if result.rowcount == 1:
                return
            current = (await conn.execute(select(t.c.status).where(t.c.id == recording_id))).scalar()
        if current is None:
            raise RecordingError(f"recording {recording_id} is not in the catalog (never opened)")
        raise RecordingError(
            f"recording {recording_id} is {current}; cannot become {values['status']}"
        )

    async def get(self, recording_id: str) -> RecordingRow | None:
        async with self.engine.connect() as conn:
            m = (await conn.execute(select(recordings_table).where(recordings_table.c.id == recording_id))).first()
        return _row(m) if m is not None else None

    async def list(
        self,
        *,
        status: RecordingStatus | str | Iterable[RecordingStatus | str] | None = None,
        call_id: str | None = None,
        started_before: float | None = None,
        after_id: str | None = None,
        limit: int | None = None,
        owned_by: str | None = None,
    ) -> builtins.list[RecordingRow]:
        """Rows in id order; page with ``after_id`` = the last id of the previous page."""
        t = recordings_table
        q = select(t).order_by(t.c.id)
        if status is not None:
            statuses = [status] if isinstance(status, str) else builtins.list(status)
            q = q.where(t.c.status.in_([RecordingStatus(s).value for s in statuses]))
        if call_id is not None:
            q = q.where(t.c.call_id == call_id)
        if started_before is not None:
            q = q.where(t.c.started_at < started_before)
        if after_id is not None:
            q = q.where(t.c.id > after_id)
        if owned_by is not None:  # a node's own rows, and the rows of before owners were recorded
            q = q.where(or_(t.c.node_id == owned_by, t.c.node_id.is_(None)))
        if limit is not None:
            q = q.limit(limit)
        async with self.engine.connect() as conn:
            return [_row(m) for m in (await conn.execute(q)).all()]

    async def open_call_ids(self) -> set[str]:
        """Calls whose recording is still being written: the calls a purge must not touch."""
        t = recordings_table
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(t.c.call_id).where(t.c.status == RecordingStatus.RECORDING.value))
            return {r[0] for r in rows}
