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
from recordings.finalize import RecordingError, finalize

log = logging.getLogger(__name__)


async def close_recording(catalog: Catalog, recording_id: str, call_id: str, started_at: float,
                          now: float) -> RecordingRow:
    """Finalise (in a thread) and catalogue one recording; returns its row, ``closed`` or ``failed``.

    ``call_id`` and ``started_at`` let the row be created here if ``opened`` never reached the
    database (it was down when the call was answered): the recording is still catalogued.
    """
    row = await catalog.get(recording_id)
    if row is None:
        await catalog.opened(recording_id, call_id, started_at)
    elif row.status is not RecordingStatus.RECORDING:
        return row
    else:
        started_at = row.started_at
    partial = catalog.layout.partial_path(recording_id)
    final = catalog.layout.final_path(recording_id, started_at)
    try:
        info = await asyncio.to_thread(finalize, partial, final)
    except RecordingError as e:
        log.error("recording failed", extra={"recording_id": recording_id, "call_id": call_id, "error": str(e)})
        await catalog.failed(recording_id, str(e), at=now)
    else:
        await catalog.closed(recording_id, info, final, at=now)
    closed = await catalog.get(recording_id)
    assert closed is not None
    return closed


async def recover_unclosed(catalog: Catalog, open_call_ids: Iterable[str], now: float) -> list[RecordingRow]:
    """Seal every recording still marked ``recording`` whose call is not open (start-up after a crash).

    A worker killed mid-call leaves a partial file with a wrong header; ``finalize`` repairs it.
    """
    open_calls = set(open_call_ids)
    rows = await catalog.list(status=RecordingStatus.RECORDING)
    return [
        await close_recording(catalog, r.id, r.call_id, r.started_at, now)
        for r in rows
        if r.call_id not in open_calls
    ]
