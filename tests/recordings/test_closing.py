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


# -- issue 13: sealed exactly once, whatever the crash -------------------------------------------

async def _open_with_audio(catalog: Catalog, call: str, seconds: float = 0.3) -> str:
    rid = catalog.layout.new_recording_id(call)
    await catalog.opened(rid, call, T0)
    write_wav(catalog.layout.partial_path(rid), tone(440, seconds))
    return rid


async def test_a_crash_after_the_seal_and_before_the_rename_is_finished_by_recovery(catalog: Catalog):
    from recordings.finalize import prepare

    rid = await _open_with_audio(catalog, "c1")
    info = prepare(catalog.layout.partial_path(rid))
    await catalog.sealing(rid, info)           # step 2 done; the node dies before the rename
    assert (await catalog.get(rid)).sealing

    [row] = await recover_unclosed(catalog, [], now=T0 + 60)
    assert row.status is RecordingStatus.CLOSED and row.sha256 == info.sha256
    assert catalog.file_of(row) == catalog.layout.final_path(rid, T0)
    assert hashlib.sha256(catalog.file_of(row).read_bytes()).hexdigest() == info.sha256


async def test_a_crash_after_the_rename_is_finished_by_recovery_not_failed(catalog: Catalog):
    """The old order's hole: the file was renamed, the catalog write never happened.  Recovery
    finds the file at its final name and seals it there (no failed row pointing at a partial)."""
    from recordings.finalize import place, prepare

    rid = await _open_with_audio(catalog, "c2")
    partial, final = catalog.layout.partial_path(rid), catalog.layout.final_path(rid, T0)
    info = prepare(partial)
    await catalog.sealing(rid, info)
    place(partial, final)                      # step 3 done; the node dies before "closed"
    [row] = await recover_unclosed(catalog, [], now=T0 + 60)
    assert (row.status, row.path, row.sha256) == (RecordingStatus.CLOSED, catalog.layout.relative(final), info.sha256)

    legacy = await _open_with_audio(catalog, "c3")   # renamed with no seal written at all
    place(catalog.layout.partial_path(legacy), catalog.layout.final_path(legacy, T0))
    [row] = await recover_unclosed(catalog, [], now=T0 + 60)
    assert row.id == legacy and row.status is RecordingStatus.CLOSED and row.sha256


async def test_a_file_changed_between_seal_and_recovery_is_not_sealed(catalog: Catalog):
    from recordings.finalize import place, prepare

    rid = await _open_with_audio(catalog, "c4")
    partial, final = catalog.layout.partial_path(rid), catalog.layout.final_path(rid, T0)
    await catalog.sealing(rid, prepare(partial))
    place(partial, final)
    final.write_bytes(final.read_bytes()[:-2] + b"\x01\x02")
    [row] = await recover_unclosed(catalog, [], now=T0 + 60)
    assert row.status is RecordingStatus.FAILED and "differs from the seal" in (row.error or "")


async def test_two_concurrent_closes_seal_once(catalog: Catalog):
    import asyncio

    rid = await _open_with_audio(catalog, "c5", seconds=1.0)
    a, b = await asyncio.gather(close_recording(catalog, rid, "c5", T0, T0 + 1),
                                close_recording(catalog, rid, "c5", T0, T0 + 2))
    assert a == b and a.status is RecordingStatus.CLOSED and a.closed_at == T0 + 1


async def test_a_node_recovers_only_its_own_recordings(catalog: Catalog):
    mine = Catalog(catalog.engine, catalog.layout.root, node_id="host:5060")
    theirs = Catalog(catalog.engine, catalog.layout.root, node_id="host:5070")
    own = await _open_with_audio(mine, "own")
    live_elsewhere = await _open_with_audio(theirs, "theirs")
    rows = await recover_unclosed(mine, [], now=T0 + 60)
    assert [r.id for r in rows] == [own]
    assert (await catalog.get(live_elsewhere)).status is RecordingStatus.RECORDING
    assert catalog.layout.partial_path(live_elsewhere).exists()
