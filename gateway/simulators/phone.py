"""What the simulated caller and seat have in common: a pjsua2 phone that plays a steady tone
(so audio paths can be checked) and records what it hears."""

from __future__ import annotations

import math
from pathlib import Path

import pjsua2 as pj

from gateway.worker.legs import active_audio


class TonePhoneLeg:
    """Media of one simulated call: a tone out, a recording in.  PJSIP thread only."""

    def __init__(self, tone_hz: float, record: Path | None) -> None:
        self.tone_hz = tone_hz
        self.record_path = record
        self.tone: pj.ToneGenerator | None = None
        self.recorder: pj.AudioMediaRecorder | None = None

    def media_active(self, call: pj.Call) -> None:
        am = active_audio(call)
        if am is None:
            return
        if self.tone is None and self.tone_hz > 0:
            tg = pj.ToneGenerator()
            tg.createToneGenerator(8000, 1)
            desc = pj.ToneDesc()
            desc.freq1 = int(self.tone_hz)
            desc.freq2 = 0
            desc.on_msec = 1000
            desc.off_msec = 0
            desc.volume = 0
            tones = pj.ToneDescVector()
            tones.append(desc)
            tg.play(tones, True)
            self.tone = tg
        if self.tone is not None:
            self.tone.startTransmit(am)
        if self.recorder is None and self.record_path is not None:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            rec = pj.AudioMediaRecorder()
            rec.createRecorder(str(self.record_path))
            self.recorder = rec
        if self.recorder is not None:
            am.startTransmit(self.recorder)

    def close(self) -> None:
        self.tone = None
        self.recorder = None


def heard_tone(path: Path, hz: float, share: float = 0.5, window_s: float = 0.2) -> float:
    """Seconds of ``path`` in which a pure ``hz`` tone dominates (speech never does)."""
    from recordings.wav import read_pcm16, rms, tone_power

    if not path.exists():
        return 0.0
    rate, samples = read_pcm16(path)
    n = int(rate * window_s)
    seconds = 0.0
    for i in range(0, len(samples) - n, n):
        w = samples[i:i + n]
        energy = rms(w) ** 2
        if energy > 1e4 and tone_power(w, rate, hz) / energy > share:
            seconds += window_s
    return round(seconds, 2)


def longest_silence(path: Path, start_s: float = 0.0, threshold: float = 60.0, window_s: float = 0.1) -> float:
    """The longest run of silence (seconds) after ``start_s``: a caller must never sit in silence."""
    from recordings.wav import read_pcm16, rms

    if not path.exists():
        return math.inf
    rate, samples = read_pcm16(path)
    n = int(rate * window_s)
    longest = run = 0.0
    for i in range(int(start_s * rate), len(samples) - n, n):
        if rms(samples[i:i + n]) < threshold:
            run += window_s
            longest = max(longest, run)
        else:
            run = 0.0
    return round(longest, 2)
