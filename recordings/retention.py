"""Retention: deleting old recordings without ever touching a call that is still going on.

The decision (``select_for_purge``) is pure so the safety rule can be tested exhaustively: a
recording is only deleted when it is closed or failed, older than the retention on both its
start and its close, and its call is not open.  The purge keeps every row and its hash.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from recordings.catalog import Catalog, RecordingRow, RecordingStatus
from recordings.finalize import RecordingError

log = logging.getLogger(__name__)

DAY_S = 86400.0
PURGEABLE = (RecordingStatus.CLOSED, RecordingStatus.FAILED)


def select_for_purge(rows: Iterable[RecordingRow], now: float, retention_days: int,
                     open_call_ids: Iterable[str]) -> list[str]:
    """The ids to delete now, in the order given.

    Age counts from the later of start and close, so a recording closed late (a long call, a
    finalisation retried after a restart) gets its full retention.
    """
    if retention_days < 1:
        raise ValueError("retention_days must be at least 1")
    cutoff = now - retention_days * DAY_S
    open_calls = set(open_call_ids)
    chosen: list[str] = []
    for row in rows:
        if row.status not in PURGEABLE or row.call_id in open_calls:
            continue
        age_from = max(row.started_at, row.closed_at if row.closed_at is not None else row.started_at)
        if age_from < cutoff:
            chosen.append(row.id)
    return chosen


@dataclass(slots=True)
class PurgeReport:
    purged: list[str] = field(default_factory=list)
    already_missing: list[str] = field(default_factory=list)   # purged, but the file was gone already
    errors: dict[str, str] = field(default_factory=dict)       # not purged: file could not be deleted
    bytes_freed: int = 0


def _delete(path: Path) -> int | None:
    """Delete and return the bytes freed, or None if the file was not there (blocking)."""
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return None
    return size


def _delete_everywhere(paths: list[Path]) -> int | None:
    """Delete the recording at every name it may have (the row's path, and the partial and final
    names: a seal interrupted by a crash leaves the file at the other one); None if none was there.
    Raises if any is still on disk afterwards, so nothing on disk is ever marked purged."""
    freed: int | None = None
    for path in dict.fromkeys(paths):
        got = _delete(path)
        if got is not None:
            freed = (freed or 0) + got
    left = [str(p) for p in paths if p.exists()]
    if left:
        raise OSError(f"still on disk after delete: {', '.join(left)}")
    return freed


async def purge(catalog: Catalog, now: float, retention_days: int, open_call_ids: Iterable[str]) -> PurgeReport:
    """Delete the files ``select_for_purge`` picks and mark their rows purged."""
    report = PurgeReport()
    cutoff = now - retention_days * DAY_S
    open_calls = set(open_call_ids)
    candidates = {r.id: r for r in await catalog.list(status=PURGEABLE, started_before=cutoff)}
    for rid in select_for_purge(candidates.values(), now, retention_days, open_calls):
        row = candidates[rid]
        paths = [catalog.file_of(row), catalog.layout.partial_path(rid), catalog.layout.final_path(rid, row.started_at)]
        try:
            freed = await asyncio.to_thread(_delete_everywhere, paths)
            await catalog.mark_purged(rid, now)
        except (OSError, RecordingError) as e:
            report.errors[rid] = str(e)
            log.error("recording purge failed", extra={"recording_id": rid, "path": row.path, "error": str(e)})
            continue
        report.purged.append(rid)
        if freed is None:
            report.already_missing.append(rid)
            log.warning("purged recording was already missing", extra={"recording_id": rid, "path": row.path})
        else:
            report.bytes_freed += freed
    log.info("recordings purged", extra={"purged": len(report.purged), "bytes_freed": report.bytes_freed,
                                          "errors": len(report.errors), "retention_days": retention_days})
    return report
