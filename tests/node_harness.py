"""A real node (``handoff122 serve`` as a subprocess) for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.bench.runner import free_block, rtp_base_below_ephemeral
from tests.conftest import free_port


def poll_until(what: Callable[[], Any], timeout: float, every: float, tails: Callable[[], str]) -> Any:
    """``what()`` once it is truthy (an exception counts as "not there yet"); on timeout, an
    AssertionError with the last value and ``tails()`` (the logs that say why)."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        try:
            last = what()
            if last:
                return last
        except Exception as e:  # the thing may not be there yet
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting; last value: {last!r}\n{tails()}")

@dataclass
class RunningNode:
    proc: subprocess.Popen[bytes]
    sip_port: int
    api_port: int
    data_dir: Path
    log_path: Path
    token: str = ""
    seats: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"sip:122@127.0.0.1:{self.sip_port}"

    def get(self, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.get(f"http://127.0.0.1:{self.api_port}{path}", headers=headers, timeout=10, **kw)

    def calls(self, limit: int = 50) -> list[dict[str, Any]]:
        r = self.get(f"/api/v1/calls?limit={limit}")
        r.raise_for_status()
        return r.json()

    def call(self, call_id: str) -> dict[str, Any]:
        r = self.get(f"/api/v1/calls/{call_id}")
        r.raise_for_status()
        return r.json()

    def logs(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def journey_errors(self) -> list[dict[str, Any]]:
        """Events a call journey or a seat leg did not expect in its state (each one a bug)."""
        return [x for x in self.logs() if x.get("event") in ("journey_unexpected_event", "seat_leg_unexpected")]

    def wait_for(self, what: Callable[[], Any], timeout: float = 30.0, every: float = 0.2) -> Any:
        return poll_until(what, timeout, every, lambda: "--- node log tail ---\n"
                          + self.log_path.read_text(errors="replace")[-4000:])

    def worker_pids(self) -> dict[int, int]:
        run = self.data_dir / "run"
        return {int(p.stem.split("-")[1]): int(p.read_text()) for p in run.glob("worker-*.pid")}

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.api_port}/metrics", timeout=10).text

    def stop(self) -> int:
        for s in self.seats:
            if s.poll() is None:
                s.send_signal(signal.SIGTERM)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for s in self.seats:
            try:
                s.wait(5)
            except subprocess.TimeoutExpired:
                s.kill()
        return self.proc.returncode


def start_node(tmp: Path, *, workers: int = 2, seats_yaml: str | None = None, env: dict[str, str] | None = None,
               args: list[str] | None = None, token: bool = True) -> RunningNode:
    data = tmp / "var"
    data.mkdir(parents=True, exist_ok=True)
    sip_port, api_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--sip-port", str(sip_port), "--api-port", str(api_port),
           "--data-dir", str(data), "--workers", str(workers)]
    if seats_yaml is not None:
        seats = tmp / "seats.yaml"
        seats.write_text(seats_yaml)
        cmd += ["--seats", str(seats)]
    cmd += args or []
    log_path = tmp / "node.log"
    e = {**os.environ, "HANDOFF_WORKER_BASE_PORT": str(free_block(workers + 1)), "HANDOFF_RTP_BASE_PORT":
         str(rtp_base_below_ephemeral(sip_port, (workers + 1) * 40)), **(env or {})}
    proc = subprocess.Popen(cmd, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=e)
    node = RunningNode(proc, sip_port, api_port, data, log_path)
    node.wait_for(lambda: proc.poll() is not None or any(x.get("event") == "node_ready" for x in node.logs()),
                  timeout=60)
    if proc.poll() is not None:
        raise AssertionError("node did not start:\n" + log_path.read_text(errors="replace")[-3000:])
    if token:
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "supervisor",
                              "--data-dir", str(data)], capture_output=True, text=True, check=True)
        node.token = out.stdout.strip().splitlines()[-1]
    return node


def start_seat(node: RunningNode, seat_id: str, port: int, *extra: str, record: Path | None = None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "gateway.cli", "seat", "--id", seat_id, "--sip-port", str(port), *extra]
    if record:
        cmd += ["--record", str(record)]
    out = node.data_dir.parent / f"seat-{seat_id}.jsonl"
    p = subprocess.Popen(cmd, stdout=out.open("wb"), stderr=subprocess.DEVNULL)
    node.seats.append(p)
    node.wait_for(lambda: "listening" in out.read_text(), timeout=20)
    return p


def seat_reports(node: RunningNode, seat_id: str) -> list[dict[str, Any]]:
    out = node.data_dir.parent / f"seat-{seat_id}.jsonl"
    return [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{") and '"listening"' not in x]


def run_caller(node: RunningNode, digits: str, *, gap: float = 0.6, stay: float = 3.0, dtmf: str = "rfc4733",
               record: Path | None = None, hangup_at: float | None = None, timeout: float = 120) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "gateway.cli", "call", "--to", node.uri, "--digits", digits, "--gap", str(gap),
           "--stay", str(stay), "--dtmf", dtmf]
    if record:
        cmd += ["--record", str(record)]
    if hangup_at is not None:
        cmd += ["--hangup-at", str(hangup_at)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    assert lines, f"caller printed nothing: {p.stderr[-2000:]}"
    return json.loads(lines[-1])


def start_caller(node: RunningNode, digits: str, **kw: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "gateway.cli", "call", "--to", node.uri, "--digits", digits]
    for k, v in kw.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def caller_result(p: subprocess.Popen[str], timeout: float = 120) -> dict[str, Any]:
    out, _ = p.communicate(timeout=timeout)
    lines = [x for x in out.splitlines() if x.startswith("{")]
    assert lines, "caller printed nothing"
    return json.loads(lines[-1])
