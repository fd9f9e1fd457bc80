"""The benchmarks' own measures, on known inputs: the ramp's search and the RFC 3550 jitter."""

from __future__ import annotations

import socket
import struct
import time

import pytest

from gateway.bench.ramp import Step, find_limit, what_limits
from gateway.bench.rtp_probe import RtpProbe, Stream, audio_figures


def _node_that_breaks_above(limit: float) -> tuple[list[float], object]:
    asked: list[float] = []

    def run(rate: float) -> Step:
        asked.append(rate)
        calls = int(rate * 10)
        failed = 0 if rate <= limit else calls // 10
        return Step(target_cps=rate, seconds=10, ok=calls - failed, failed=failed, achieved_cps=rate,
                    setup_ms=[5.0] * calls)

    return asked, run


def test_ramp_doubles_until_a_step_fails_then_bisects_to_the_limit() -> None:
    asked, run = _node_that_breaks_above(13)
    steps, best = find_limit(run, first=2, cap=100, refine=3, resolution=1)  # type: ignore[arg-type]
    assert asked == [2, 4, 8, 16, 12, 14, 13]
    assert best == 13
    assert what_limits(steps, best, 100, "slots").startswith("at 14 calls/s: failed 10.00 %")


def test_ramp_stops_at_its_cap_and_says_so() -> None:
    asked, run = _node_that_breaks_above(1000)
    steps, best = find_limit(run, first=10, cap=30, refine=2)  # type: ignore[arg-type]
    assert asked == [10, 20, 30] and best == 30
    assert "cap (30 calls/s, slots)" in what_limits(steps, best, 30, "slots")


def test_a_step_fails_on_slow_set_up_or_a_generator_that_fell_behind() -> None:
    slow = Step(target_cps=10, seconds=10, ok=100, failed=0, achieved_cps=10, setup_ms=[5.0] * 98 + [1500.0] * 2)
    assert not slow.clean and "set-up p99 1500 ms" in slow.why_failing()[0]
    behind = Step(target_cps=10, seconds=10, ok=100, failed=0, achieved_cps=7, setup_ms=[5.0])
    assert not behind.clean and "generator behind" in behind.why_failing()[0]


def _feed(stream: Stream, arrivals_ms: list[float]) -> None:
    for i, t in enumerate(arrivals_ms):
        stream.add(1000 + t / 1000, 100 + i, 8000 + 160 * i, b"\xff" * 160, 0)


def test_rfc3550_jitter_is_zero_on_time_and_follows_the_formula_when_late() -> None:
    on_time = Stream(1, 1, 0.0)
    _feed(on_time, [20.0 * i for i in range(50)])
    assert max(on_time.jitter_samples_ms) == pytest.approx(0.0, abs=1e-6)
    late = Stream(2, 2, 0.0)
    arrivals = [20.0 * i for i in range(50)]
    arrivals[30] += 10.0  # one packet 10 ms late: D = 10 ms, then -10 ms for the next
    _feed(late, arrivals)
    j_after_late = late.jitter_samples_ms[29]  # sample i-1 is packet i
    assert j_after_late == pytest.approx(10.0 / 16)
    assert late.jitter_samples_ms[30] == pytest.approx(10.0 / 16 + (10.0 - 10.0 / 16) / 16)


def test_probe_counts_loss_from_sequence_numbers_of_real_datagrams() -> None:
    probe = RtpProbe()
    try:
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for seq in range(200):
            if seq in (50, 51):  # two packets never sent: lost
                continue
            tx.sendto(struct.pack("!BBHII", 0x80, 0, seq, seq * 160, 0xABC) + b"\xff" * 160, ("127.0.0.1", probe.port))
        tx.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(s.packets for s in probe.snapshot()) < 198:
            time.sleep(0.05)
        figures = audio_figures(probe.snapshot())
    finally:
        probe.stop()
    assert figures["streams"] == 1 and figures["packets"] == 198
    assert figures["lost_packets"] == 2 and figures["loss_pct"] == pytest.approx(1.0)
