"""Finalisation against the real writer: pjsua2's recorder, closed cleanly and killed mid-call."""

from __future__ import annotations

import signal
import subprocess
import sys
import wave
from pathlib import Path

import pytest

from recordings.finalize import finalize
from recordings.wav import dominant_frequency, header_of, read_pcm16

pytestmark = pytest.mark.sip
RECORDER = Path(__file__).with_name("pjsua_recorder.py")


def record(path: Path, how: str, seconds: float = 1.5) -> int:
    return subprocess.run([sys.executable, str(RECORDER), str(path), str(seconds), how],
                          capture_output=True, timeout=60).returncode


def test_killed_worker_recording_is_repaired_and_playable(tmp_path: Path):
    partial = tmp_path / ".partial" / "killed.wav"
    partial.parent.mkdir()
    assert record(partial, "kill") == -signal.SIGKILL
    left = header_of(partial)
    assert left.declared_data_size == 0 and left.declared_riff_size == 0   # what pjmedia leaves
    assert left.file_size > 44

    info = finalize(partial, tmp_path / "final" / "killed.wav")

    assert info.repaired
    assert (info.sample_rate, info.channels) == (8000, 1)
    with wave.open(str(tmp_path / "final" / "killed.wav"), "rb") as w:
        assert w.getnframes() == (left.file_size - 44) // 2
    assert info.duration_s == pytest.approx((left.file_size - 44) // 2 / 8000)
    rate, samples = read_pcm16(tmp_path / "final" / "killed.wav")
    assert dominant_frequency(samples, rate, [440.0, 1000.0]) == 440.0


def test_cleanly_closed_recording_needs_no_repair(tmp_path: Path):
    partial = tmp_path / "closed.wav"
    assert record(partial, "close") == 0
    before = partial.read_bytes()
    info = finalize(partial, tmp_path / "final.wav")
    assert not info.repaired
    assert (tmp_path / "final.wav").read_bytes() == before
    assert info.duration_s == pytest.approx((len(before) - 44) / 2 / 8000)
    assert info.duration_s > 0
