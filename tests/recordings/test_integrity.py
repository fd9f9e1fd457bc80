from __future__ import annotations

import logging

from recordings.catalog import Catalog
from recordings.integrity import ProblemKind, verify
from tests.recordings.conftest import closed_recording

T0 = 1_714_550_400.0


async def _file(catalog: Catalog, rid: str):
    row = await catalog.get(rid)
    assert row is not None
    return catalog.file_of(row)


async def test_untouched_recordings_verify_clean(catalog: Catalog, caplog):
    for i in range(5):
        await closed_recording(catalog, f"c{i}", T0 + i)
    live = catalog.layout.new_recording_id("c-live")
    await catalog.opened(live, "c-live", T0)          # still recording: nothing to verify yet
    with caplog.at_level(logging.INFO, logger="recordings.integrity"):
        report = await verify(catalog, progress_every=2)
    assert report.ok
    assert report.checked == 5
    progress = [r for r in caplog.records if r.getMessage() == "recordings verify progress"]
    assert [r.checked for r in progress] == [2, 4]


async def test_a_flipped_byte_a_cut_and_a_missing_file_are_each_reported(catalog: Catalog):
    good = await closed_recording(catalog, "good", T0)
    tampered = await closed_recording(catalog, "tampered", T0 + 1)
    cut = await closed_recording(catalog, "cut", T0 + 2)
    gone = await closed_recording(catalog, "gone", T0 + 3)

    path = await _file(catalog, tampered)
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0x01                                  # one bit of one sample
    path.write_bytes(bytes(raw))
    path = await _file(catalog, cut)
    path.write_bytes(path.read_bytes()[:-2])
    (await _file(catalog, gone)).unlink()

    report = await verify(catalog)

    assert report.checked == 4
    assert not report.ok
    assert {(p.recording_id, p.kind) for p in report.problems} == {
        (tampered, ProblemKind.SHA256_MISMATCH),
        (cut, ProblemKind.SIZE_CHANGED),
        (gone, ProblemKind.MISSING),
    }
    assert good not in {p.recording_id for p in report.problems}
    (mismatch,) = report.mismatches
    row = await catalog.get(tampered)
    assert row is not None and mismatch.expected == row.sha256 and mismatch.actual != row.sha256
    (size,) = report.size_changed
    assert int(size.expected) - int(size.actual) == 2


async def test_verify_reports_files_without_rows_and_unsealed_recordings(catalog: Catalog):
    from recordings.finalize import place
    from recordings.integrity import ProblemKind
    from tests.recordings.conftest import tone, write_wav

    t0 = 1_714_550_400.0
    stray = write_wav(catalog.layout.final_path("stray-0001", t0), tone(440, 0.1))
    rid = catalog.layout.new_recording_id("half")
    await catalog.opened(rid, "half", t0)
    place(write_wav(catalog.layout.partial_path(rid), tone(440, 0.1)), catalog.layout.final_path(rid, t0))
    report = await verify(catalog)
    kinds = {(p.kind, p.recording_id) for p in report.problems}
    assert (ProblemKind.FILE_WITHOUT_ROW, "stray-0001") in kinds
    assert (ProblemKind.UNSEALED, rid) in kinds
    assert stray.exists()
