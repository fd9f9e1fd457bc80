from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from recordings.catalog import Catalog, RecordingRow, RecordingStatus
from recordings.retention import DAY_S, purge, select_for_purge
from tests.recordings.conftest import closed_recording

NOW = 1_750_000_000.0
DAYS = 180


def _row(rid: str, call_id: str, age_days: float, status: RecordingStatus = RecordingStatus.CLOSED,
         closed_age_days: float | None = None) -> RecordingRow:
    started = NOW - age_days * DAY_S
    closed = None if closed_age_days is None else NOW - closed_age_days * DAY_S
    return RecordingRow(id=rid, call_id=call_id, path=f"x/{rid}.wav", status=status,
                        started_at=started, closed_at=closed)


def test_only_old_finished_recordings_of_ended_calls_are_selected():
    rows = [
        _row("old", "c1", 200, closed_age_days=200),
        _row("old-failed", "c2", 200, RecordingStatus.FAILED),
        _row("young", "c3", 100, closed_age_days=100),
        _row("just-inside", "c4", DAYS - 0.001),
        _row("old-open-call", "c5", 400, closed_age_days=400),
        _row("old-still-recording", "c6", 400, RecordingStatus.RECORDING),
        _row("already-purged", "c7", 400, RecordingStatus.PURGED),
        _row("started-old-closed-recently", "c8", 200, closed_age_days=10),
    ]
    assert select_for_purge(rows, NOW, DAYS, open_call_ids={"c5"}) == ["old", "old-failed"]


rows_strategy = st.lists(
    st.builds(
        _row,
        rid=st.uuids().map(str),
        call_id=st.sampled_from(["a", "b", "c", "d"]),
        age_days=st.floats(0, 1000),
        status=st.sampled_from(list(RecordingStatus)),
        closed_age_days=st.none() | st.floats(0, 1000),
    ),
    max_size=30,
)


@given(rows=rows_strategy, open_calls=st.sets(st.sampled_from(["a", "b", "c", "d"])),
       days=st.integers(1, 800))
def test_never_an_open_call_a_live_recording_or_one_within_retention(rows, open_calls, days):
    chosen = set(select_for_purge(rows, NOW, days, open_calls))
    by_id = {r.id: r for r in rows}
    for rid in chosen:
        r = by_id[rid]
        assert r.call_id not in open_calls
        assert r.status in (RecordingStatus.CLOSED, RecordingStatus.FAILED)
        assert NOW - r.started_at > days * DAY_S
        assert r.closed_at is None or NOW - r.closed_at > days * DAY_S
    # and everything else that is eligible is chosen: retention is enforced, not just allowed
    for r in rows:
        eligible = (r.call_id not in open_calls and r.status in (RecordingStatus.CLOSED, RecordingStatus.FAILED)
                    and max(r.started_at, r.closed_at or r.started_at) < NOW - days * DAY_S)
        assert (r.id in chosen) == eligible


async def test_purge_deletes_old_files_and_keeps_rows(catalog: Catalog):
    old = await closed_recording(catalog, "ended", NOW - 200 * DAY_S)
    young = await closed_recording(catalog, "recent", NOW - 10 * DAY_S)
    old_of_open_call = await closed_recording(catalog, "still-open", NOW - 300 * DAY_S)
    live = catalog.layout.new_recording_id("live")
    await catalog.opened(live, "live", NOW - 400 * DAY_S)     # a row stuck in `recording`
    catalog.layout.partial_path(live).write_bytes(b"RIFF")
    files = {rid: catalog.file_of(await catalog.get(rid)) for rid in (old, young, old_of_open_call, live)}
    old_size = files[old].stat().st_size
    sealed = (await catalog.get(old)).sha256

    report = await purge(catalog, NOW, DAYS, open_call_ids={"still-open"})

    assert report.purged == [old]
    assert report.bytes_freed == old_size
    assert not report.errors and not report.already_missing
    assert not files[old].exists()
    assert all(files[rid].exists() for rid in (young, old_of_open_call, live))
    row = await catalog.get(old)
    assert row.status is RecordingStatus.PURGED and row.purged_at == NOW and row.sha256 == sealed
    assert (await catalog.get(live)).status is RecordingStatus.RECORDING

    again = await purge(catalog, NOW, DAYS, open_call_ids=set())   # the open call has ended now
    assert again.purged == [old_of_open_call]


async def test_purge_of_an_already_missing_file_is_reported(catalog: Catalog):
    rid = await closed_recording(catalog, "ended", NOW - 200 * DAY_S)
    catalog.file_of(await catalog.get(rid)).unlink()
    report = await purge(catalog, NOW, DAYS, open_call_ids=set())
    assert report.purged == [rid] and report.already_missing == [rid] and report.bytes_freed == 0
    assert (await catalog.get(rid)).status is RecordingStatus.PURGED


async def test_nothing_still_on_disk_is_marked_purged(catalog: Catalog):
    """A failed row that still points at the partial name while the file sits at its final name
    (a seal interrupted after the rename): the purge deletes the file where it really is."""
    from recordings.finalize import place
    from tests.recordings.conftest import tone, write_wav

    t0 = 1_600_000_000.0
    rid = catalog.layout.new_recording_id("old")
    await catalog.opened(rid, "old", t0)
    partial = write_wav(catalog.layout.partial_path(rid), tone(440, 0.2))
    await catalog.failed(rid, "catalog write failed after the rename", at=t0 + 1)
    place(partial, catalog.layout.final_path(rid, t0))

    report = await purge(catalog, t0 + 400 * 86400, 180, set())
    assert report.purged == [rid] and report.bytes_freed > 0
    assert not catalog.layout.final_path(rid, t0).exists() and not partial.exists()
