from __future__ import annotations

import dataclasses
import hashlib

import pytest

from recordings.catalog import Catalog, RecordingStatus
from recordings.finalize import RecordingError, RecordingInfo, finalize
from tests.recordings.conftest import closed_recording, tone, write_wav

T0 = 1_714_550_400.0  # 2024-05-01 08:00 UTC


async def test_a_recording_round_trip(catalog: Catalog):
    rid = catalog.layout.new_recording_id("call-1")
    await catalog.opened(rid, "call-1", T0)
    row = await catalog.get(rid)
    assert row is not None
    assert (row.status, row.call_id, row.started_at, row.path) == (
        RecordingStatus.RECORDING, "call-1", T0, f".partial/{rid}.wav")
    assert catalog.file_of(row) == catalog.layout.partial_path(rid)
    assert await catalog.open_call_ids() == {"call-1"}

    partial = write_wav(catalog.layout.partial_path(rid), tone(440, 0.5))
    final = catalog.layout.final_path(rid, T0)
    info = finalize(partial, final)
    await catalog.closed(rid, info, final, at=T0 + 30)

    row = await catalog.get(rid)
    assert row is not None
    assert row.status is RecordingStatus.CLOSED
    assert row.path == f"2024/05/01/{rid}.wav"
    assert catalog.file_of(row) == final
    assert row.sha256 == hashlib.sha256(final.read_bytes()).hexdigest()
    assert (row.size, row.sample_rate, row.channels, row.closed_at) == (info.size, 8000, 1, T0 + 30)
    assert row.duration_s == pytest.approx(0.5)
    assert await catalog.open_call_ids() == set()
    assert await catalog.get("no-such-id") is None


async def test_the_seal_is_written_once(catalog: Catalog):
    rid = await closed_recording(catalog, "call-2", T0)
    row = await catalog.get(rid)
    assert row is not None
    forged = RecordingInfo(size=1, duration_s=0.0, sha256="0" * 64, sample_rate=8000, channels=1)
    with pytest.raises(RecordingError, match="is closed"):
        await catalog.closed(rid, forged, catalog.file_of(row))
    with pytest.raises(RecordingError, match="is closed"):
        await catalog.failed(rid, "late failure")
    assert await catalog.get(rid) == row


async def test_failure_is_recorded_and_points_at_the_partial(catalog: Catalog):
    rid = catalog.layout.new_recording_id("call-3")
    await catalog.opened(rid, "call-3", T0)
    await catalog.failed(rid, "cannot finalise: disk full", at=T0 + 5)
    row = await catalog.get(rid)
    assert row is not None
    assert (row.status, row.error, row.closed_at, row.sha256) == (
        RecordingStatus.FAILED, "cannot finalise: disk full", T0 + 5, None)
    assert row.path == f".partial/{rid}.wav"
    # A retried finalisation (disk freed) may still seal it.
    partial = write_wav(catalog.layout.partial_path(rid), tone(440, 0.1))
    final = catalog.layout.final_path(rid, T0)
    await catalog.closed(rid, finalize(partial, final), final, at=T0 + 60)
    row = await catalog.get(rid)
    assert row is not None and row.status is RecordingStatus.CLOSED and row.error is None


async def test_unknown_recording_is_refused(catalog: Catalog):
    with pytest.raises(RecordingError, match="not in the catalog"):
        await catalog.failed("never-opened", "x")
    with pytest.raises(RecordingError, match="not in the catalog"):
        await catalog.mark_purged("never-opened", T0)


async def test_purged_rows_keep_their_hash(catalog: Catalog):
    rid = await closed_recording(catalog, "call-4", T0)
    before = await catalog.get(rid)
    await catalog.mark_purged(rid, T0 + 86400 * 200)
    after = await catalog.get(rid)
    assert after is not None and before is not None
    assert after.status is RecordingStatus.PURGED
    assert after.purged_at == T0 + 86400 * 200
    assert dataclasses.replace(after, status=before.status, purged_at=None) == before
    with pytest.raises(RecordingError, match="is purged"):
        await catalog.mark_purged(rid, T0)


async def test_list_filters_and_pages(catalog: Catalog):
    ids = [await closed_recording(catalog, f"call-{i % 2}", T0 + i) for i in range(5)]
    live = catalog.layout.new_recording_id("call-live")
    await catalog.opened(live, "call-live", T0 + 10)

    assert sorted(r.id for r in await catalog.list()) == sorted([*ids, live])
    assert [r.id for r in await catalog.list(status="recording")] == [live]
    assert {r.id for r in await catalog.list(status=[RecordingStatus.CLOSED])} == set(ids)
    assert {r.id for r in await catalog.list(call_id="call-0")} == {ids[0], ids[2], ids[4]}
    assert {r.id for r in await catalog.list(started_before=T0 + 2)} == {ids[0], ids[1]}

    pages, after = [], None
    while page := await catalog.list(after_id=after, limit=2):
        pages.append([r.id for r in page])
        after = page[-1].id
    assert [len(p) for p in pages] == [2, 2, 2]
    assert [rid for p in pages for rid in p] == sorted([*ids, live])
    assert await catalog.schema_exists()
