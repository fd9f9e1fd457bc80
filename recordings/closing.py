"""What the control process calls when a call ends, and after a restart.

``close_recording`` is the one place that turns "the call is over" into a sealed catalog row or a
flagged failure, so the gateway does not repeat the error handling: a recording failure (disk
full, a file the worker never wrote) is logged and returned as a ``failed`` row for the call
record, never raised into the call handling.  ``recover_unclosed`` seals what a crash left behind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from recordings.catalog import Catalog, RecordingRow, RecordingStatus
from recordings.finalize import RecordingError, place, prepare

log = logging.getLogger(__name__)


async def close_recording(catalog: Catalog, recording_id: str, call_id: str, started_at: float,
                          now: float) -> RecordingRow:
    """Seal one recording, exactly once; returns its row, ``closed`` or ``failed``.

    Idempotent and crash-safe.  The writes come in this order, so that a crash between any two
    leaves something recovery (this same function, at the next start) finishes:

    1. the partial file's header is repaired, its bytes fsynced and hashed;
    2. the seal (size, duration, SHA-256) is written on the catalog row, status unchanged;
    3. the file is renamed to its final name and the directory fsynced;
    4. the row becomes ``closed`` with the final path.

    Recovery looks at both names: only the partial file -> start again at 1; only the final file
    -> the rename happened, so the file is hashed and must match the seal of step 2 (if written)
    before the row is closed.  A recording already closed (or purged) is returned as it is; a
    failed one is tried again only if a file is there.  ``call_id`` and ``started_at`` let the row
    be created here if ``opened`` never reached the database (it was down when the call was
    answered): the recording is still catalogued.
    """
    async with catalog.sealing_turn(recording_id):
        return await _seal(catalog, recording_id, call_id, started_at, now)


async def _seal(catalog: Catalog, recording_id: str, call_id: str, started_at: float, now: float) -> RecordingRow:
    row = await catalog.get(recording_id)
    if row is None:
        await catalog.opened(recording_id, call_id, started_at)
        row = await catalog.get(recording_id)
        assert row is not None
    if row.status in (RecordingStatus.CLOSED, RecordingStatus.PURGED):
        return row
    partial = catalog.layout.partial_path(recording_id)
    final = catalog.layout.final_path(recording_id, row.started_at)
    has_partial, has_final = await asyncio.to_thread(lambda: (partial.is_file(), final.is_file()))
    if row.status is RecordingStatus.FAILED and not (has_partial or has_final):
        return row
    try:
        if has_final and has_partial:
            raise RecordingError(f"both {partial} and {final} exist: a recording is never sealed over another")
        if has_final:  # moved before the crash: it must be what the seal (if written) says
            info = await asyncio.to_thread(prepare, final)
            if row.sha256 is not None and (info.sha256, info.size) != (row.sha256, row.size):
                raise RecordingError(f"{final} differs from the seal written before it was moved "
                                     f"(sha256 {info.sha256} != {row.sha256})")
            log.warning("recording seal finished after a crash", extra={"recording_id": recording_id,
                                                                        "path": str(final)})
        else:
            info = await asyncio.to_thread(prepare, partial)
            await catalog.sealing(recording_id, info)
            await asyncio.to_thread(place, partial, final)
        await catalog.closed(recording_id, info, final, at=now)
    except RecordingError as e:
        log.error("recording failed", extra={"recording_id": recording_id, "call_id": call_id, "error": str(e)})
        await catalog.failed(recording_id, str(e), at=now)
    closed = await catalog.get(recording_id)
    assert closed is not None
    return closed


async def recover_unclosed(catalog: Catalog, open_call_ids: Iterable[str], now: float) -> list[RecordingRow]:
    """Seal what a crash left behind: every recording of this node (``catalog.node_id``; every
    node's when it is None) still ``recording`` whose call is not open, and every ``failed`` one
    whose file is on disk after all (a seal interrupted after the rename, a disk that was full).

    The live recordings of other nodes sharing the database are not touched.  A worker killed
    mid-call leaves a partial file with a wrong header; ``prepare`` repairs it.
    """
    open_calls = set(open_call_ids)
    rows = await catalog.list(status=(RecordingStatus.RECORDING, RecordingStatus.FAILED), owned_by=catalog.node_id)
    out: list[RecordingRow] = []
    for r in rows:
        if r.call_id in open_calls:
            continue
        if r.status is RecordingStatus.FAILED and not await asyncio.to_thread(_on_disk, catalog, r):
            continue
        out.append(await close_recording(catalog, r.id, r.call_id, r.started_at, now))
    return out


def _on_disk(catalog: Catalog, row: RecordingRow) -> bool:
    return (catalog.layout.partial_path(row.id).is_file()
            or catalog.layout.final_path(row.id, row.started_at).is_file())
