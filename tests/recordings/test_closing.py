from __future__ import annotations

import hashlib
import struct

from recordings.catalog import Catalog, RecordingStatus
from recordings.closing import close_recording, recover_unclosed
from tests.recordings.conftest import tone, write_wav

T0 = 1_714_550_400.0


async def test_a_call_end_seals_its_recording(catalog: Catalog):
    rid = catalog.layout.new_recording_id("call-a")
    await catalog.opened(rid, "call-a", T0)
    write_wav(catalog.layout.partial_path(rid), tone(440, 0.3))

    row = await close_recording(catalog, rid, "call-a", T0, now=T0 + 40)

    assert row.status is RecordingStatus.CLOSED and row.closed_at == T0 + 40
    final = catalog.file_of(row)
    assert final == catalog.layout.final_path(rid, T0)
    assert row.sha256 == hashlib.sha256(final.read_bytes()).hexdigest()
    assert not catalog.layout.partial_path(rid).exists()
    # a second call-end report changes nothing
    assert await close_recording(catalog, rid, "call-a", T0, now=T0 + 99) == row


async def test_a_missing_file_flags_the_recording_instead_of_raising(catalog: Catalog):
    rid = catalog.layout.new_recording_id("call-b")
    await catalog.opened(rid, "call-b", T0)
    row = await close_recording(catalog, rid, "call-b", T0, now=T0 + 5)
    assert row.status is RecordingStatus.FAILED
    assert row.error is not None and "missing" in row.error


async def test_a_recording_the_catalog_never_saw_is_still_catalogued(catalog: Catalog):
    rid = catalog.layout.new_recording_id("call-c")
    write_wav(catalog.layout.partial_path(rid), tone(1000, 0.2))
    row = await close_recording(catalog, rid, "call-c", T0, now=T0 + 5)
    assert (row.status, row.call_id, row.started_at) == (RecordingStatus.CLOSED, "call-c", T0)


async def test_after_a_crash_unclosed_recordings_of_ended_calls_are_sealed(catalog: Catalog):
    ended, still_open = catalog.layout.new_recording_id("ended"), catalog.layout.new_recording_id("open")
    for rid, call in ((ended, "ended"), (still_open, "open")):
        await catalog.opened(rid, call, T0)
        path = write_wav(catalog.layout.partial_path(rid), tone(440, 0.5))
        raw = bytearray(path.read_bytes())
        struct.pack_into("<I", raw, 4, 0)
        struct.pack_into("<I", raw, 40, 0)             # killed worker: lengths never fixed
        path.write_bytes(bytes(raw))

    rows = await recover_unclosed(catalog, open_call_ids={"open"}, now=T0 + 3600)

    assert [(r.id, r.status) for r in rows] == [(ended, RecordingStatus.CLOSED)]
    assert rows[0].duration_s == 0.5
    assert (await catalog.get(still_open)).status is RecordingStatus.RECORDING
    assert catalog.layout.partial_path(still_open).exists()
