from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from recordings.layout import RecordingLayout, new_recording_id, valid_recording_id


def test_ids_are_safe_unique_and_name_their_call():
    call_id = "a84b4c76e66710@pc33.atlanta.example.com/../../etc"
    a, b = new_recording_id(call_id), new_recording_id(call_id)
    assert a != b
    assert valid_recording_id(a) and valid_recording_id(b)
    assert a.startswith("a84b4c76e66710_pc33_atlanta_example_com_etc-")
    assert valid_recording_id(new_recording_id("@@@"))
    assert valid_recording_id(new_recording_id("x" * 500))


def test_paths_are_under_root_and_dated_in_utc(tmp_path: Path):
    layout = RecordingLayout(tmp_path)
    started = datetime(2024, 12, 31, 23, 30, tzinfo=UTC).timestamp()
    assert layout.partial_path("r-1") == tmp_path / ".partial" / "r-1.wav"
    final = layout.final_path("r-1", started)
    assert final == tmp_path / "2024" / "12" / "31" / "r-1.wav"
    assert layout.relative(final) == "2024/12/31/r-1.wav"
    assert layout.absolute("2024/12/31/r-1.wav") == final


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "a.wav", "x" * 81])
def test_ids_that_could_escape_the_root_are_refused(tmp_path: Path, bad: str):
    layout = RecordingLayout(tmp_path)
    with pytest.raises(ValueError):
        layout.partial_path(bad)
    with pytest.raises(ValueError):
        layout.final_path(bad, 0.0)


def test_catalog_paths_cannot_escape_the_root(tmp_path: Path):
    layout = RecordingLayout(tmp_path / "rec")
    with pytest.raises(ValueError):
        layout.absolute("../secret.wav")
    with pytest.raises(ValueError):
        layout.absolute("/etc/passwd")
    with pytest.raises(ValueError):
        layout.relative(tmp_path / "elsewhere.wav")
