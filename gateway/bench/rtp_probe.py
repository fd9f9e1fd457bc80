"""What a sample of seats hears: a plain UDP socket that receives the RTP the node sends to them.

The probe seats' SDP points at this socket instead of at SIPp, so every RTP packet the node's
seat legs send to them arrives here, stamped by the kernel on arrival (``SO_TIMESTAMPNS``, so a
busy bench process does not add its own delay).  Per stream (source port + SSRC) it keeps:

- inter-arrival jitter, the running estimate of RFC 3550 section 6.4.1:
  ``D(i-1,i) = (R_i - R_{i-1}) - (S_i - S_{i-1})``, ``J += (|D| - J) / 16``, in ms;
- loss: packets expected from the sequence numbers seen minus packets received;
- the arrival of a tone: the first PCMU frame loud enough to be the caller's test tone.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
CLOCK_HZ = 8000
#: A frame louder than this (mean absolute 16-bit sample) is tone, not the bridge's silence.
TONE_LEVEL = 2000


def _ulaw_table() -> list[int]:
    out = []
    for byte in range(256):
        u = ~byte & 0xFF
        sign, exponent, mantissa = u & 0x80, (u >> 4) & 0x07, u & 0x0F
        sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
        out.append(-sample if sign else sample)
    return out


ULAW = _ulaw_table()


@dataclass
class Stream:
    src_port: int
    ssrc: int
    first_arrival: float
    packets: int = 0
    first_seq: int = -1
    max_ext_seq: int = -1
    cycles: int = 0
    jitter_ts: float = 0.0
    last_ts: int | None = None
    jitter_samples_ms: list[float] = field(default_factory=list)
    tone_at: float | None = None
    last_arrival: float = 0.0

    def add(self, arrival: float, seq: int, ts: int, payload: bytes, pt: int) -> None:
        self.packets += 1
        previous_arrival, self.last_arrival = self.last_arrival, arrival
        if self.first_seq < 0:
            self.first_seq = self.max_ext_seq = seq
        else:
            ext = self.cycles + seq
            if ext < self.max_ext_seq - 30000:  # wrapped
                self.cycles += 65536
                ext = self.cycles + seq
            self.max_ext_seq = max(self.max_ext_seq, ext)
        if self.last_ts is not None:
            # D(i-1, i) = (R_i - R_{i-1}) - (S_i - S_{i-1}), in timestamp units (RTP time wraps at 2^32)
            sent = ((ts - self.last_ts + 2**31) % 2**32) - 2**31
            d = abs((arrival - previous_arrival) * CLOCK_HZ - sent)
            self.jitter_ts += (d - self.jitter_ts) / 16
            self.jitter_samples_ms.append(self.jitter_ts * 1000 / CLOCK_HZ)
        self.last_ts = ts
        if self.tone_at is None and pt == 0 and payload:
            level = sum(abs(ULAW[b]) for b in payload) / len(payload)
            if level > TONE_LEVEL:
                self.tone_at = arrival

    @property
    def expected(self) -> int:
        return self.max_ext_seq - self.first_seq + 1 if self.first_seq >= 0 else 0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.packets)


class RtpProbe:
    """One UDP socket on loopback, read by a thread until ``stop``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 2**20)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port: int = self.sock.getsockname()[1]
        self.streams: dict[tuple[int, int], Stream] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rtp-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, anc, _flags, addr = self.sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except (TimeoutError, OSError):
                continue
            arrival = time.time()
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack("qq", cdata[:16])
                    arrival = sec + nsec / 1e9
            if len(data) < 12 or data[0] >> 6 != 2:
                continue
            pt = data[1] & 0x7F
            seq, ts, ssrc = struct.unpack("!HII", data[2:12])
            cc = data[0] & 0x0F
            payload = data[12 + 4 * cc:]
            key = (addr[1], ssrc)
            with self._lock:
                st = self.streams.get(key)
                if st is None:
                    st = self.streams[key] = Stream(addr[1], ssrc, arrival)
                st.add(arrival, seq, ts, payload, pt)

    def snapshot(self) -> list[Stream]:
        with self._lock:
            return list(self.streams.values())

    def reset(self) -> None:
        with self._lock:
            self.streams.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def audio_figures(streams: list[Stream], *, min_packets: int = 25) -> dict[str, Any]:
    """Jitter (every packet's running RFC 3550 estimate, pooled over the streams) and loss (pooled)."""
    used = [s for s in streams if s.packets >= min_packets]
    jitter = [j for s in used for j in s.jitter_samples_ms[10:]]
    expected = sum(s.expected for s in used)
    lost = sum(s.lost for s in used)
    per_stream_max = [max(s.jitter_samples_ms[10:], default=0.0) for s in used]
    return {
        "streams": len(used),
        "packets": sum(s.packets for s in used),
        "jitter_ms_p50": _r(pct(jitter, 0.5)),
        "jitter_ms_p99": _r(pct(jitter, 0.99)),
        "jitter_ms_max_stream_p50": _r(pct(per_stream_max, 0.5)),
        "loss_pct": round(100.0 * lost / expected, 3) if expected else None,
        "lost_packets": lost,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
