"""RTP captures for SIPp's ``play_pcap_audio``: key presses (RFC 4733) and a test tone (PCMU).

SIPp ships one ``dtmf_2833_<d>.pcap`` per digit, but every one of them carries the same RTP
timestamp family and fixed sequence numbers, so a second press of a key (``1 2 1``) is a duplicate
to any RTP stack and is dropped.  A caller that presses a real IVR path therefore needs one capture
per press, all of one RTP stream: one SSRC, sequence numbers that carry on from press to press, and
a new event timestamp for every press.  This module writes those captures (and a tone that carries
on the same stream, so the bridge's audio can be timed) into a directory at bench time.

SIPp replaces the addresses and ports when it plays a capture, and paces packets by the capture's
own timestamps; everything else (the RTP header and payload) goes on the wire as written here.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

PT_PCMU = 0
PT_EVENT = 101
FRAME_MS = 20
SAMPLES_PER_FRAME = 160  # 8 kHz
EVENT_CODES = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _frame(rtp: bytes, ip_id: int) -> bytes:
    """Ethernet + IPv4 + UDP around one RTP packet (loopback addresses; SIPp rewrites them)."""
    udp = struct.pack("!HHHH", 4000, 4000, 8 + len(rtp), 0) + rtp
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), ip_id & 0xFFFF, 0, 64, 17, 0,
                               bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])))
    ip[10:12] = struct.pack("!H", _checksum(bytes(ip)))
    return b"\x00" * 12 + b"\x08\x00" + bytes(ip) + udp


def write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    """A classic little-endian pcap (link type Ethernet) of ``(seconds from start, rtp bytes)``."""
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    base = 1_700_000_000
    for i, (t, rtp) in enumerate(packets):
        frame = _frame(rtp, i)
        sec, usec = divmod(round(t * 1_000_000), 1_000_000)
        out += struct.pack("<IIII", base + sec, usec, len(frame), len(frame)) + frame
    path.write_bytes(bytes(out))
    return path


def _rtp(pt: int, seq: int, ts: int, ssrc: int, payload: bytes, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload


def _ulaw(sample: int) -> int:
    """G.711 mu-law encoding of one 16-bit sample."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    sample = min(clip, abs(sample)) + bias
    exponent = 7
    for exp in range(7, -1, -1):
        if sample & (0x4000 >> (7 - exp)):
            exponent = exp
            break
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


@dataclass
class RtpStream:
    """One caller's outgoing RTP stream, written press by press: sequence numbers and timestamps
    carry on, so every capture is new to the receiver."""

    ssrc: int = 0x48313232  # "H122"
    seq: int = 1000
    ts: int = 160_000

    def key_press(self, key: str, tone_ms: int = 160, gap_ms: int = 500) -> list[tuple[float, bytes]]:
        """One RFC 4733 event: a packet every 20 ms with a growing duration, the marker on the first,
        the end bit on the last three (sent together, as phones do).  The next press starts
        ``gap_ms`` later in RTP time, so its event timestamp is new."""
        code = EVENT_CODES[key]
        frames = max(1, tone_ms // FRAME_MS)
        packets: list[tuple[float, bytes]] = []
        for i in range(frames):
            duration = (i + 1) * SAMPLES_PER_FRAME
            end = i == frames - 1
            body = struct.pack("!BBH", code, (0x80 if end else 0) | 10, duration)
            repeats = 3 if end else 1
            for _ in range(repeats):
                packets.append((i * FRAME_MS / 1000, _rtp(PT_EVENT, self.seq, self.ts, self.ssrc, body, marker=i == 0)))
                self.seq += 1
        self.ts += max(gap_ms, tone_ms + FRAME_MS) * 8
        return packets

    def tone(self, ms: int = 1000, hz: float = 1000.0, level: float = 0.3) -> list[tuple[float, bytes]]:
        """PCMU frames of a sine: what the caller 'says', so its arrival at a seat can be timed."""
        packets: list[tuple[float, bytes]] = []
        n = 0
        for i in range(ms // FRAME_MS):
            payload = bytes(_ulaw(int(level * 32767 * math.sin(2 * math.pi * hz * (n + k) / 8000)))
                            for k in range(SAMPLES_PER_FRAME))
            n += SAMPLES_PER_FRAME
            packets.append((i * FRAME_MS / 1000, _rtp(PT_PCMU, self.seq, self.ts, self.ssrc, payload, marker=i == 0)))
            self.seq += 1
            self.ts += SAMPLES_PER_FRAME
        return packets


def path_captures(directory: Path, name: str, keys: str, *, gap_ms: int = 500, tone_ms: int = 1000,
                  ssrc: int = 0x48313232) -> tuple[list[Path], Path]:
    """One capture per key press of ``keys`` ("1 2 1 ...") and a tone after them, one RTP stream.
    Returns (press captures in order, tone capture)."""
    directory.mkdir(parents=True, exist_ok=True)
    stream = RtpStream(ssrc=ssrc)
    presses = []
    for i, key in enumerate(keys.split()):
        presses.append(write_pcap(directory / f"{name}-{i}-{key.replace('*', 'star').replace('#', 'pound')}.pcap",
                                  stream.key_press(key, gap_ms=gap_ms)))
    tone = write_pcap(directory / f"{name}-tone.pcap", stream.tone(tone_ms))
    return presses, tone
