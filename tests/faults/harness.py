"""Real nodes to break: fixed ports (a restart keeps its node id), hard kills, and what to check.

A node's identity is ``<host>:<sip port>``, so a node restarted on the same data dir and ports is
the same node and reconciles what it owned.  ``node.proc`` is the node's supervisor
(``gateway.supervisor``); its control process is named by ``run/control.pid``.  ``crash`` kills
every process of the node at once (supervisor, control, media workers, Kamailio), as a power cut
would: all are stopped first, then killed, so no survivor sees the others die and tidies up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.bench.runner import free_block
from tests.conftest import free_port
from tests.node_harness import RunningNode


@dataclass
class NodePorts:
    sip: int
    api: int
    workers: int
    rtp: int

    @classmethod
    def pick(cls, workers: int) -> NodePorts:
        sip = free_port()
        return cls(sip=sip, api=free_port(), workers=free_block(workers + 1), rtp=20000 + (sip % 200) * 200)


def boot(tmp: Path, ports: NodePorts, *, name: str = "node", workers: int = 2, seats_yaml: str | None = None,
         env: dict[str, str] | None = None, args: list[str] | None = None, token: str = "") -> RunningNode:
    """``handoff122 serve`` on ``tmp/var`` with the given ports; waits for ``node_ready``."""
    data = tmp / "var"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "gateway.cli", "serve", "--sip-port", str(ports.sip), "--api-port",
           str(ports.api), "--data-dir", str(data), "--workers", str(workers)]
    if seats_yaml is not None:
        (tmp / "seats.yaml").write_text(seats_yaml)
        cmd += ["--seats", str(tmp / "seats.yaml")]
    cmd += args or []
    log_path = tmp / f"{name}.log"
    e = {**os.environ, "HANDOFF_WORKER_BASE_PORT": str(ports.workers), "HANDOFF_RTP_BASE_PORT": str(ports.rtp),
         **(env or {})}
    proc = subprocess.Popen(cmd, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=e)
    node = RunningNode(proc, ports.sip, ports.api, data, log_path, token=token)
    node.wait_for(lambda: proc.poll() is not None or any(x.get("event") == "node_ready" for x in node.logs()),
                  timeout=60)
    if proc.poll() is not None:
        raise AssertionError("node did not start:\n" + log_path.read_text(errors="replace")[-3000:])
    if not token:
        db = ["--db-url", args[args.index("--db-url") + 1]] if args and "--db-url" in args else []
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "supervisor",
                              "--data-dir", str(data), *db], capture_output=True, text=True, check=True)
        node.token = out.stdout.strip().splitlines()[-1]
    return node


def kamailio_pid(node: RunningNode) -> int | None:
    pids = [x.get("pid") for x in node.logs() if x.get("event") == "kamailio_started"]
    return int(pids[-1]) if pids else None


def control_pid(node: RunningNode) -> int | None:
    try:
        return int((node.data_dir / "run" / "control.pid").read_text())
    except (OSError, ValueError):
        return None


def crash(node: RunningNode) -> None:
    """``kill -9`` every process of the node: supervisor, control, media workers and Kamailio's
    process group."""
    workers = list(node.worker_pids().values())
    kam = kamailio_pid(node)
    control = control_pid(node)
    node.proc.send_signal(signal.SIGSTOP)
    if control:
        _signal(control, signal.SIGSTOP)
    for pid in workers:
        _signal(pid, signal.SIGSTOP)
    if kam:
        _signal_group(kam, signal.SIGSTOP)
    for pid in workers:
        _signal(pid, signal.SIGKILL)
    if kam:
        _signal_group(kam, signal.SIGKILL)
    if control:
        _signal(control, signal.SIGKILL)
    node.proc.kill()
    node.proc.wait(10)


def kill_worker(node: RunningNode, worker_id: int) -> int:
    pid = node.worker_pids()[worker_id]
    os.kill(pid, signal.SIGKILL)
    return pid


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def api(node: RunningNode, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"http://127.0.0.1:{node.api_port}{path}",
                         headers={"Authorization": f"Bearer {node.token}"}, timeout=10, **kw)


def queue(node: RunningNode, skill: str) -> dict[str, Any]:
    return next(q for q in api(node, "GET", "/api/v1/queues").json() if q["skill"] == skill)


def seat(node: RunningNode, seat_id: str) -> dict[str, Any]:
    return next(s for s in api(node, "GET", "/api/v1/seats").json() if s["id"] == seat_id)


def callbacks(node: RunningNode) -> dict[str, dict[str, Any]]:
    return {c["call_id"]: c for c in api(node, "GET", "/api/v1/callbacks").json()}


def seat_invites(tmp: Path, seat_id: str) -> list[dict[str, Any]]:
    """Every call the seat simulator saw (one JSON line per INVITE it received)."""
    out = tmp / f"seat-{seat_id}.jsonl"
    if not out.exists():
        return []
    return [json.loads(x) for x in out.read_text().splitlines() if x.startswith("{") and '"listening"' not in x]


def start_seat_sim(tmp: Path, seat_id: str, port: int, *extra: str) -> subprocess.Popen[bytes]:
    out = tmp / f"seat-{seat_id}.jsonl"
    p = subprocess.Popen([sys.executable, "-m", "gateway.cli", "seat", "--id", seat_id, "--sip-port", str(port),
                          *extra], stdout=out.open("wb"), stderr=subprocess.DEVNULL)
    import time

    end = time.monotonic() + 20
    while "listening" not in out.read_text():
        if time.monotonic() > end or p.poll() is not None:
            raise AssertionError(f"seat {seat_id} did not start")
        time.sleep(0.1)
    return p


def seats_yaml(*seats: tuple[str, str, int, str]) -> str:
    lines = ["seats:"]
    for sid, skill, port, status in seats:
        lines += [f"  - id: {sid}", f"    name: {sid}", f"    contact: sip:{sid}@127.0.0.1:{port}",
                  f"    skills: [{skill}]", f"    status: {status}"]
    return "\n".join(lines) + "\n"
