from __future__ import annotations

import struct
from pathlib import Path

import pytest

from recordings.wav import (
    WavInvalid,
    dominant_frequency,
    duration_s,
    is_silent,
    read_pcm16,
    rms,
    tone_power,
)
from tests.recordings.conftest import RATE, silence, tone

CANDIDATES = [440.0, 1000.0]


def test_goertzel_tells_the_callers_tone_from_the_seats(make_wav):
    rate, caller = read_pcm16(make_wav("caller.wav", tone(440, 1.0)))
    _, seat = read_pcm16(make_wav("seat.wav", tone(1000, 1.0)))
    assert rate == RATE
    assert dominant_frequency(caller, rate, CANDIDATES) == 440.0
    assert dominant_frequency(seat, rate, CANDIDATES) == 1000.0
    # The tone carries (nearly) all the energy at its own frequency and next to none at the other.
    assert tone_power(caller, rate, 440) / rms(caller) ** 2 == pytest.approx(1.0, rel=0.02)
    assert tone_power(caller, rate, 1000) / rms(caller) ** 2 < 0.001


def test_both_tones_in_one_recording_are_both_found(make_wav):
    mixed = [a + b for a, b in zip(tone(440, 1.0, 6000), tone(1000, 1.0, 3000), strict=True)]
    rate, samples = read_pcm16(make_wav("both.wav", mixed))
    total = rms(samples) ** 2
    share_440 = tone_power(samples, rate, 440) / total
    share_1000 = tone_power(samples, rate, 1000) / total
    assert share_440 == pytest.approx(0.8, abs=0.03)     # 6000² : 3000² = 4 : 1
    assert share_1000 == pytest.approx(0.2, abs=0.03)
    assert dominant_frequency(samples, rate, [1000.0, 440.0]) == 440.0


def test_silence_and_tone_are_told_apart(make_wav):
    quiet = make_wav("quiet.wav", [s // 200 for s in tone(440, 0.5)])  # amplitude 40: line noise
    assert is_silent(make_wav("silent.wav", silence(0.5)))
    assert is_silent(quiet)
    assert not is_silent(make_wav("tone.wav", tone(1000, 0.5)))
    assert rms([]) == 0.0
    assert tone_power([], RATE, 440) == 0.0


def test_duration_and_stereo_downmix(make_wav):
    assert duration_s(make_wav("a.wav", tone(440, 2.5))) == pytest.approx(2.5)
    left, right = tone(440, 0.5, 4000), [-100] * 4000
    interleaved = [x for pair in zip(left, right, strict=True) for x in pair]
    path = make_wav("stereo.wav", interleaved, channels=2)
    rate, mono = read_pcm16(path)
    assert len(mono) == 4000
    assert duration_s(path) == pytest.approx(0.5)
    assert dominant_frequency(mono, rate, CANDIDATES) == 440.0
    assert mono[0] == -50  # (0 + -100) / 2


def test_a_recording_still_being_written_is_readable(make_wav):
    """Zero lengths in the header (pjmedia before close): the samples on disk still count."""
    path = make_wav("live.wav", tone(1000, 1.0))
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, 4, 0)
    struct.pack_into("<I", raw, 40, 0)
    path.write_bytes(bytes(raw))
    rate, samples = read_pcm16(path)
    assert len(samples) == RATE
    assert duration_s(path) == pytest.approx(1.0)
    assert dominant_frequency(samples, rate, CANDIDATES) == 1000.0


def test_not_a_wav_is_refused(tmp_path: Path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"ID3\x03" + b"\x00" * 100)
    with pytest.raises(WavInvalid):
        read_pcm16(bad)
    with pytest.raises(ValueError):
        dominant_frequency([1, 2, 3], RATE, [])
