"""What the benchmarks share: a node as a subprocess, SIPp runs, per-process CPU and memory."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIPP_SCENARIOS = Path(__file__).resolve().parent / "scenarios"
CLK_TCK = os.sysconf("SC_CLK_TCK")


#: ports handed out lately by this process: a port chosen for a listener that has not bound it
#: yet is not handed out again (a test picks its seats' ports before the node starts)
_HANDED: deque[int] = deque(maxlen=1024)


def _listener_span() -> tuple[int, int] | None:
    """Loopback ports for listeners: above the kernel's ephemeral range when there is room there.

    A port taken from the ephemeral range is free when chosen, but until the listener binds it the
    kernel may give it to any outgoing connection (a test polls the API over new TCP connections
    many times a second): the listener then fails with "address already in use".  The kernel
    never gives out a port above ``ip_local_port_range``."""
    try:
        high = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    low, top = high + 1, 65000
    return (low, top) if top - low >= 1000 else None


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def _kernel_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def free_block(n: int) -> int:
    """The first of ``n`` consecutive loopback ports free for UDP and TCP (``n`` = 1: one port)."""
    span = _listener_span()
    if span is not None and n > (span[1] - span[0]) // 4:
        span = None
    for _ in range(500):
        base = random.randrange(span[0], span[1] - n) if span else _kernel_port()
        ports = range(base, base + n)
        if base + n >= 65000 or any(p in _HANDED for p in ports):
            continue
        if all(_bindable(p) for p in ports):
            _HANDED.extend(ports)
            return base
    raise RuntimeError(f"no block of {n} free ports")


def free_port() -> int:
    """A loopback port free for UDP and TCP, for a SIP or HTTP listener of a test or benchmark."""
    return free_block(1)


def sipp_media_port() -> int:
    """A ``-mp`` for SIPp: it binds that port for its audio echo and the port + 2 for video, so a
    single free port is not enough (a caller's video socket took another SIPp's port in CI)."""
    return free_block(4)


def rtp_base_below_ephemeral(seed: int, span: int) -> int:
    """A first RTP port for a test or bench node, below the kernel's ephemeral range.

    SIP, API and worker ports come from above the ephemeral range (``free_port``), so RTP blocks
    taken from below it can never overlap them; ``seed`` spreads parallel nodes over different blocks.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first, slots = 10000, max(1, (low - 10000) // span)
    return first + (seed % slots) * span


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class NodeProcess:
    """``handoff122 serve`` on free loopback ports in a temporary data dir."""

    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    sip_port: int = 0
    api_port: int = 0
    data_dir: Path | None = None

    def start(self, timeout: float = 120, attempts: int = 3) -> NodeProcess:
        """Start the node; free ports can be taken by another process before the node binds them,
        so a start that fails on a port in use is retried on new ports."""
        for attempt in range(attempts):
            try:
                return self._start(timeout)
            except RuntimeError as e:
                if "already in use" not in str(e) or attempt == attempts - 1:
                    raise
                self._tmp.cleanup()
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> NodeProcess:
        self._tmp = tempfile.TemporaryDirectory(prefix="h122-bench-")
        self.data_dir = Path(self._tmp.name) / "var"
        self.sip_port, self.api_port = free_port(), free_port()
        wbase = free_block(self.workers + 1)
        env = {**os.environ, "HANDOFF_WORKER_BASE_PORT": str(wbase),
               "HANDOFF_RTP_BASE_PORT": str(rtp_base_below_ephemeral(self.sip_port, (self.workers + 1) * 40)), "HANDOFF_LOG_LEVEL": "WARNING",
               **self.env}
        self.log = Path(self._tmp.name) / "node.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--sip-port", str(self.sip_port), "--api-port",
             str(self.api_port), "--data-dir", str(self.data_dir), "--workers", str(self.workers), *self.args],
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("node exited: " + self.log.read_text(errors="replace")[-1500:])
            if self._api_up():
                return self
            time.sleep(0.3)
        raise RuntimeError("node did not come up")

    def _api_up(self) -> bool:
        try:
            import httpx

            return httpx.get(f"http://127.0.0.1:{self.api_port}/healthz", timeout=1).status_code == 200
        except Exception:
            return False

    def worker_pids(self) -> list[int]:
        assert self.data_dir is not None
        return [int(p.read_text()) for p in (self.data_dir / "run").glob("worker-*.pid")]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._tmp.cleanup()


@dataclass
class SippRun:
    ok_calls: int
    failed_calls: int
    elapsed_s: float
    returncode: int
    tail: str
    call_rate: float = 0.0  # SIPp's own cumulative rate of calls created
    workdir: str = ""

    def response_samples(self) -> list[tuple[float, float]]:
        """Per call (when the 200 came, unix ms; INVITE -> 200 in whole ms), from SIPp's
        ``-trace_rtt`` files (``Date_ms;response_time_ms;rtd_no``, written in SIPp's working dir)."""
        out: list[tuple[float, float]] = []
        for f in Path(self.workdir).glob("*_rtt.csv"):
            for line in f.read_text().splitlines()[1:]:
                parts = line.split(";")
                if len(parts) >= 2 and parts[1].strip():
                    try:
                        out.append((float(parts[0]), float(parts[1])))
                    except ValueError:
                        continue
        return out

    def first_errors(self, n: int = 3) -> list[str]:
        """SIPp's first error events (why calls failed), from its ``-trace_err`` file."""
        out: list[str] = []
        for f in Path(self.workdir).glob("*_errors.log"):
            for line in f.read_text(errors="replace").splitlines():
                if "\t" in line and len(out) < n:
                    out.append(line.split(": ", 1)[-1][:200])
        return out

    def response_times_ms(self) -> list[float]:
        """Per-call INVITE -> 200 times (whole ms)."""
        return [rt for _, rt in self.response_samples()]

    def answered_rate(self) -> float:
        """Calls answered per second while calls were being offered (first to last 200 OK): unlike
        SIPp's cumulative rate it does not count the wait for the last calls to end."""
        dates = sorted(d for d, _ in self.response_samples())
        if len(dates) < 2 or dates[-1] <= dates[0]:
            return 0.0
        return (len(dates) - 1) / ((dates[-1] - dates[0]) / 1000)

    @property
    def cps(self) -> float:
        if self.call_rate:
            return self.call_rate
        return (self.ok_calls + self.failed_calls) / self.elapsed_s if self.elapsed_s else 0.0


def sipp(target_port: int, scenario: str | Path, *, calls: int, rate: float, limit: int, timeout: float,
         subs: dict[str, str] | None = None, extra: list[str] | None = None) -> SippRun:
    path = Path(scenario)
    if subs is not None:
        text = path.read_text()
        for k, v in subs.items():
            text = text.replace(f"@{k.upper()}@", v)
        with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
            f.write(text)
        path = Path(f.name)
    workdir = tempfile.mkdtemp(prefix="h122-sipp-")
    cmd = ["sipp", f"127.0.0.1:{target_port}", "-sf", str(path), "-m", str(calls), "-r", str(rate), "-l",
           str(limit), "-i", "127.0.0.1", "-p", str(free_port()), "-cp", str(free_port()), "-mi", "127.0.0.1",
           "-mp", str(sipp_media_port()), "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin",
           "-max_socket", "4096", "-recv_timeout", "30000", *(extra or [])]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 60, cwd=workdir)
    elapsed = time.monotonic() - t0
    ok = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", p.stdout)
    bad = re.search(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", p.stdout)
    rate = re.search(r"Call Rate\s*\|\s*[\d.]+ cps\s*\|\s*([\d.]+) cps", p.stdout)
    return SippRun(int(ok.group(1)) if ok else 0, int(bad.group(1)) if bad else 0, elapsed, p.returncode,
                   p.stdout[-1500:], float(rate.group(1)) if rate else 0.0, workdir)


class ProcSampler:
    """CPU (share of one core) and RSS of a set of processes over an interval."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.cpu0 = {pid: self._cpu(pid) for pid in pids}
        self.rss_max: dict[int, int] = {}

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError):
            return 0.0

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def sample(self) -> None:
        for pid in self.pids:
            self.rss_max[pid] = max(self.rss_max.get(pid, 0), self._rss(pid))

    def result(self) -> dict[str, Any]:
        dt = time.monotonic() - self.t0
        cpu = [(self._cpu(pid) - self.cpu0[pid]) / dt for pid in self.pids]
        rss = [self.rss_max.get(pid, 0) for pid in self.pids]
        n = max(1, len(self.pids))
        return {"processes": len(self.pids), "cpu_core_share_avg": round(sum(cpu) / n, 4),
                "cpu_core_share_total": round(sum(cpu), 3), "rss_mb_avg": round(sum(rss) / n / 2**20, 1),
                "rss_mb_max": round(max(rss, default=0) / 2**20, 1)}


def text_table(head: list[str], rows: list[list[str]]) -> str:
    """Rows of cells as left-aligned columns, for a benchmark's closing summary."""
    lines = [head, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
