"""Reading the PCM WAV files the media workers write, and listening to them in tests.

One RIFF chunk walker serves both finalisation (which must cope with a header the writer never
got to fix) and the audio checks of the end-to-end tests (which ask "does this recording hold the
caller's 440 Hz tone and the seat's 1000 Hz tone?").  Pure Python and ``array``: a call recording
is 16 kB per second, so numpy would buy nothing but a dependency.
"""

from __future__ import annotations

import math
import struct
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

WAVE_FORMAT_PCM = 1
WAVE_FORMAT_EXTENSIBLE = 0xFFFE


class WavInvalid(ValueError):
    """The bytes are not a PCM WAV file we can read or repair (no RIFF/WAVE, no fmt or data chunk)."""


@dataclass(frozen=True, slots=True)
class WavHeader:
    """Where things are in a WAV file, as declared by its header and as found on disk.

    ``declared_*`` are what the writer put in the header; a writer killed before closing leaves
    them wrong (pjmedia writes zeros and fixes them on close).  ``available_data`` is what the file
    really holds after the data chunk header.
    """

    audio_format: int
    channels: int
    sample_rate: int
    bits_per_sample: int
    block_align: int
    riff_size_offset: int          # always 4
    declared_riff_size: int
    data_size_offset: int          # where the data chunk's 32-bit length lives
    data_offset: int               # first audio byte
    declared_data_size: int
    data_end: int                  # where the audio bytes really end (see ``read_header``)
    file_size: int

    @property
    def available_data(self) -> int:
        return max(0, self.file_size - self.data_offset)

    @property
    def whole_frame_data(self) -> int:
        """The audio bytes the file really holds, rounded down to whole sample frames."""
        usable = self.data_end - self.data_offset
        return usable - usable % self.block_align

    @property
    def consistent(self) -> bool:
        """Header sizes agree with the file: nothing to repair."""
        return (
            self.declared_data_size == self.whole_frame_data
            and self.declared_riff_size == self.file_size - 8
        )

    @property
    def duration_s(self) -> float:
        return self.whole_frame_data / (self.sample_rate * self.block_align)


def read_header(f: BinaryIO) -> WavHeader:
    """Walk the RIFF chunks up to the data chunk without trusting the declared sizes.

    Raises ``WavInvalid`` when there is no RIFF/WAVE signature, no PCM ``fmt `` chunk before the
    data, or no data chunk header at all: those files cannot be repaired from their size alone.
    """
    f.seek(0, 2)
    file_size = f.tell()
    f.seek(0)
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise WavInvalid("no RIFF/WAVE signature")
    declared_riff = struct.unpack_from("<I", head, 4)[0]
    fmt: tuple[int, int, int, int, int] | None = None
    pos = 12
    while True:
        f.seek(pos)
        chunk = f.read(8)
        if len(chunk) < 8:
            raise WavInvalid("no data chunk")
        cid, size = chunk[:4], struct.unpack_from("<I", chunk, 4)[0]
        if cid == b"fmt ":
            body = f.read(min(size, 40))
            if len(body) < 16:
                raise WavInvalid("truncated fmt chunk")
            audio_format, channels, rate, _byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", body)
            if audio_format == WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                audio_format = struct.unpack_from("<H", body, 24)[0]  # first 2 bytes of the sub-format GUID
            fmt = (audio_format, channels, rate, block_align, bits)
        elif cid == b"data":
            if fmt is None:
                raise WavInvalid("data chunk before fmt chunk")
            audio_format, channels, rate, block_align, bits = fmt
            if audio_format != WAVE_FORMAT_PCM or channels < 1 or rate < 1 or block_align < 1:
                raise WavInvalid(
                    f"unsupported format (format={audio_format}, channels={channels}, rate={rate})"
                )
            return WavHeader(
                audio_format=audio_format, channels=channels, sample_rate=rate, bits_per_sample=bits,
                block_align=block_align, riff_size_offset=4, declared_riff_size=declared_riff,
                data_size_offset=pos + 4, data_offset=pos + 8, declared_data_size=size,
                data_end=_data_end(f, pos + 8, size, file_size), file_size=file_size,
            )
        pos += 8 + size + (size & 1)


def _data_end(f: BinaryIO, start: int, declared: int, file_size: int) -> int:
    """Where the audio really ends.

    The declared size is believed only when it stops inside the file *and* a well-formed chunk
    (ASCII id, length that fits) follows it, as with a trailing LIST chunk.  Otherwise (zero or
    stale length from a writer that died before fixing its header, or a length running past the
    end) the audio runs to the end of the file.
    """
    end = start + declared
    if declared == 0 or end >= file_size:
        return file_size
    f.seek(end + (declared & 1))
    nxt = f.read(8)
    follows_chunk = (
        len(nxt) == 8
        and all(0x20 <= b < 0x7F for b in nxt[:4])
        and end + (declared & 1) + 8 + struct.unpack_from("<I", nxt, 4)[0] <= file_size
    )
    return end if follows_chunk else file_size


def header_of(path: Path) -> WavHeader:
    with open(path, "rb") as f:
        return read_header(f)


def read_pcm16(path: Path) -> tuple[int, array]:
    """The sample rate and the 16-bit samples (mono; several channels are averaged).

    Reads what the file really holds, so a recording still being written (or never closed) can be
    inspected too.
    """
    with open(path, "rb") as f:
        h = read_header(f)
        if h.bits_per_sample != 16:
            raise WavInvalid(f"{h.bits_per_sample}-bit samples; only 16-bit PCM is read")
        f.seek(h.data_offset)
        raw = f.read(h.whole_frame_data)
    samples = array("h")
    samples.frombytes(raw)
    if sys.byteorder == "big":
        samples.byteswap()
    if h.channels > 1:
        n = h.channels
        samples = array("h", (sum(samples[i:i + n]) // n for i in range(0, len(samples), n)))
    return h.sample_rate, samples


def duration_s(path: Path) -> float:
    return header_of(path).duration_s


def rms(samples: Sequence[int]) -> float:
    if not samples:
        return 0.0
    return math.sqrt(math.fsum(s * s for s in samples) / len(samples))


def tone_power(samples: Sequence[int], rate: int, hz: float) -> float:
    """The mean-square contribution of a ``hz`` sine to the samples (Goertzel, exact frequency).

    Scaled so that a pure sine of amplitude A gives about A²/2, i.e. the same unit as
    ``rms(samples) ** 2``: the ratio of the two is the share of the signal's energy at ``hz``.
    """
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2.0 * math.cos(2.0 * math.pi * hz / rate)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2 = s1
        s1 = s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2.0 * power / (n * n)


def dominant_frequency(samples: Sequence[int], rate: int, candidates: list[float]) -> float:
    """Which of ``candidates`` carries the most energy (ties: the first listed)."""
    if not candidates:
        raise ValueError("no candidate frequencies")
    return max(candidates, key=lambda hz: tone_power(samples, rate, hz))


def is_silent(path: Path, threshold: float = 100.0) -> bool:
    """True when the recording's RMS is below ``threshold`` (16-bit units; 100 is about -50 dBFS)."""
    _rate, samples = read_pcm16(path)
    return rms(samples) < threshold
