from __future__ import annotations

import hashlib
import struct
import wave
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recordings.finalize import RecordingError, finalize
from recordings.wav import dominant_frequency, read_pcm16
from tests.recordings.conftest import RATE, tone, wav_bytes


def _stdlib_frames(path: Path) -> tuple[int, int, int]:
    """What an independent reader (the stdlib) makes of the file: frames, rate, channels."""
    with wave.open(str(path), "rb") as w:
        return w.getnframes(), w.getframerate(), w.getnchannels()


def test_good_wav_is_moved_sealed_and_unchanged(tmp_path: Path, make_wav):
    partial = make_wav(".partial/r1.wav", tone(440, 1.5))
    original = partial.read_bytes()
    final = tmp_path / "2024" / "05" / "01" / "r1.wav"

    info = finalize(partial, final)

    assert not partial.exists()
    assert final.read_bytes() == original
    assert info.sha256 == hashlib.sha256(final.read_bytes()).hexdigest()
    assert info.size == final.stat().st_size == len(original)
    assert info.duration_s == pytest.approx(1.5)
    assert (info.sample_rate, info.channels, info.repaired) == (RATE, 1, False)


@pytest.mark.parametrize("declared", [0, 0xFFFFFFFF, 1234])
def test_header_left_wrong_by_a_killed_writer_is_repaired(tmp_path: Path, make_wav, declared: int):
    partial = make_wav("p.wav", tone(1000, 2.0))
    raw = bytearray(partial.read_bytes())
    struct.pack_into("<I", raw, 4, declared)      # RIFF length
    struct.pack_into("<I", raw, 40, declared)     # data length
    partial.write_bytes(bytes(raw))
    final = tmp_path / "out" / "p.wav"

    info = finalize(partial, final)

    assert info.repaired
    assert info.duration_s == pytest.approx(2.0)
    assert _stdlib_frames(final) == (2 * RATE, RATE, 1)
    assert info.sha256 == hashlib.sha256(final.read_bytes()).hexdigest()
    rate, samples = read_pcm16(final)
    assert dominant_frequency(samples, rate, [440.0, 1000.0]) == 1000.0


def test_half_written_last_sample_is_dropped(tmp_path: Path, make_wav):
    partial = make_wav("p.wav", tone(440, 1.0))
    raw = bytearray(partial.read_bytes()) + b"\x7f"       # the worker died mid-sample
    struct.pack_into("<I", raw, 40, 0)
    partial.write_bytes(bytes(raw))

    info = finalize(partial, tmp_path / "f.wav")

    assert info.repaired
    assert info.size == 44 + 2 * RATE
    assert _stdlib_frames(tmp_path / "f.wav")[0] == RATE


def test_trailing_chunk_after_the_audio_is_kept_as_is(tmp_path: Path):
    data = wav_bytes(tone(440, 0.5), extra_chunks=b"LIST" + struct.pack("<I", 4) + b"INFO")
    partial = tmp_path / "p.wav"
    partial.write_bytes(data)
    info = finalize(partial, tmp_path / "f.wav")
    assert not info.repaired
    assert (tmp_path / "f.wav").read_bytes() == data
    assert info.duration_s == pytest.approx(0.5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 3000), riff=st.integers(0, 2**32 - 1), data=st.integers(0, 2**32 - 1),
       tail=st.integers(0, 1))
def test_any_wrong_lengths_give_a_file_an_independent_reader_accepts(tmp_path: Path, n, riff, data, tail):
    samples = [(i * 37) % 2000 - 1000 for i in range(n)]
    raw = bytearray(wav_bytes(samples)) + b"\x01" * tail
    struct.pack_into("<I", raw, 4, riff)
    struct.pack_into("<I", raw, 40, data)
    partial, final = tmp_path / "h.wav", tmp_path / "final" / "h.wav"
    final.unlink(missing_ok=True)
    partial.write_bytes(bytes(raw))

    info = finalize(partial, final)

    assert _stdlib_frames(final)[0] == n
    assert list(read_pcm16(final)[1]) == samples
    assert info.duration_s == pytest.approx(n / RATE)
    assert info.sha256 == hashlib.sha256(final.read_bytes()).hexdigest()


def test_missing_partial_is_a_recording_error(tmp_path: Path):
    with pytest.raises(RecordingError, match="missing"):
        finalize(tmp_path / ".partial" / "gone.wav", tmp_path / "f.wav")


def test_unrepairable_file_stays_where_it_was(tmp_path: Path):
    partial = tmp_path / "p.wav"
    partial.write_bytes(b"RIFF\x00\x00")                # died before the header was complete
    with pytest.raises(RecordingError, match="not a repairable WAV"):
        finalize(partial, tmp_path / "f.wav")
    assert partial.read_bytes() == b"RIFF\x00\x00"
    assert not (tmp_path / "f.wav").exists()


def test_an_existing_recording_is_never_overwritten(tmp_path: Path, make_wav):
    partial = make_wav("p.wav", tone(440, 0.2))
    final = make_wav("f.wav", tone(1000, 0.2))
    before = final.read_bytes()
    with pytest.raises(RecordingError, match="already exists"):
        finalize(partial, final)
    assert final.read_bytes() == before
    assert partial.exists()


def test_filesystem_failure_is_a_recording_error_and_keeps_the_partial(tmp_path: Path, make_wav):
    partial = make_wav("p.wav", tone(440, 0.2))
    (tmp_path / "blocker").write_text("a file where a directory should be")
    with pytest.raises(RecordingError, match="cannot finalise"):
        finalize(partial, tmp_path / "blocker" / "2024" / "f.wav")
    assert partial.exists()
