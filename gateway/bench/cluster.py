"""``handoff122 bench cluster``: the same SIP load through the front door with 1 node and with 3.

Skeleton (issue 14): for each cluster size it starts ``handoff122 cluster --nodes n`` on a fresh
PostgreSQL database (``HANDOFF_BENCH_PG_URL``, default the local server) and measures, through the
front door only:

1. the highest clean rate of answer-only calls (the call shape of ``bench sip``: answered, 1 s of
   the welcome prompt, BYE), found by the ramp of ``gateway.bench.ramp``;
2. callers held at once: every caller slot of the cluster filled (workers x 2 per node), each
   answered and kept for ``hold_s``; the legs are counted from the nodes' own logs;
3. how long a node killed with ``kill -9`` stays in the front door's set (the probe interval).

It prints both sizes and the ratio 3 nodes / 1 node.  On a 2-core machine the ratio is expected to
stay near 1: the nodes share the same two cores, so the limit is the CPU (media workers and the
control processes), not the front door; the ratio on real machines is what docs/DEPLOY.md sizes.
While ``gateway.cluster.ROUTING_AUTHORITY_WIRED`` is False the clusters run with
``--independent-routing`` (answer-only calls never reach a seat, so routing does not matter here).
Not yet run at full size.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.bench.ramp import Step, find_limit
from gateway.bench.runner import emit, free_block, free_port, rtp_base_below_ephemeral, say, sipp
from gateway.cluster import ROUTING_AUTHORITY_WIRED, front_door_set
from gateway.kamailio import KamailioRpc
from gateway.local_sockets import unix_socket_path

SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "sipp"
STAY_MS = 1000
PG_URL = os.environ.get("HANDOFF_BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    workers: int        # per node
    step_s: float
    first: float
    cap: float
    refine: int
    hold_s: float


FULL = Plan(sizes=(1, 3), workers=8, step_s=20, first=5, cap=160, refine=2, hold_s=20)
QUICK = Plan(sizes=(1, 3), workers=2, step_s=5, first=2, cap=4, refine=0, hold_s=4)


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class BenchCluster:
    """``handoff122 cluster --nodes n`` as a subprocess, on its own database and ports."""

    def __init__(self, nodes: int, workers: int) -> None:
        self.nodes, self.workers = nodes, workers
        self.tmp = Path(tempfile.mkdtemp(prefix="h122-bench-cluster-"))
        self.db = f"handoff_bench_{uuid.uuid4().hex[:10]}"
        self.sip_port, self.api_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        return self.tmp / "d"

    def start(self) -> None:
        asyncio.run(_admin(f'CREATE DATABASE "{self.db}"'))
        cmd = [sys.executable, "-m", "gateway.cli", "cluster", "--nodes", str(self.nodes), "--sip-port",
               str(self.sip_port), "--api-port", str(self.api_port), "--data-dir", str(self.data_dir), "--db-url",
               f"{PG_URL.rsplit('/', 1)[0]}/{self.db}", "--workers", str(self.workers), "--node-base-port",
               str(free_block(self.nodes * (self.workers + 2))), "--rtp-base-port",
               str(rtp_base_below_ephemeral(self.sip_port, self.nodes * self.workers * 40))]
        if not ROUTING_AUTHORITY_WIRED:
            cmd.append("--independent-routing")
        log = (self.tmp / "cluster.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 180
        while time.monotonic() < end:
            if self.proc.poll() is not None or "front door sip:" in (self.tmp / "cluster.log").read_text():
                break
            time.sleep(0.2)
        if self.proc.poll() is not None:
            raise RuntimeError("cluster did not start: " + (self.tmp / "cluster.log").read_text()[-2000:])

    def in_set(self) -> dict[str, bool]:
        rpc = KamailioRpc(unix_socket_path(self.data_dir / "front", "kamailio-rpc.sock"))
        return front_door_set(rpc.call("dispatcher.list"))

    def kill_node(self, i: int) -> float:
        """``kill -9`` of node i's processes; seconds until the front door took it out of its set."""
        run = self.data_dir / f"node-{i}" / "run"
        # its Kamailio goes down by itself with its supervisor (parent-death signal), as in a crash
        pids = {int((self.data_dir / f"node-{i}.pid").read_text())} | {
            int(p.read_text()) for p in run.glob("*.pid") if p.name != "kamailio.pid"}
        t0 = time.monotonic()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while time.monotonic() - t0 < 30:
            if self.in_set().get(f"node-{i}") is False:
                return time.monotonic() - t0
            time.sleep(0.02)
        return float("nan")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)'))
        shutil.rmtree(self.tmp, ignore_errors=True)


def _step(port: int, seconds: float, limit: int) -> Any:
    def run(rate: float) -> Step:
        r = sipp(port, SCENARIOS / "uac_122_dtmf.xml", calls=max(1, round(rate * seconds)), rate=rate, limit=limit,
                 timeout=seconds + STAY_MS / 1000 + 90,
                 subs={"service": "122", "first": str(STAY_MS), "stay": "0", "digits": ""},
                 extra=["-trace_rtt", "-rtt_freq", "1", "-trace_err"])
        step = Step(target_cps=rate, seconds=seconds, ok=r.ok_calls, failed=r.failed_calls,
                    achieved_cps=r.answered_rate(), setup_ms=r.response_times_ms())
        shutil.rmtree(r.workdir, ignore_errors=True)
        return step
    return run


def measure(nodes: int, plan: Plan) -> dict[str, Any]:
    c = BenchCluster(nodes, plan.workers)
    say(f"cluster of {nodes} node(s), {plan.workers} workers each")
    c.start()
    try:
        capacity = nodes * plan.workers * 2
        steps, best = find_limit(_step(c.sip_port, plan.step_s, capacity), first=plan.first, cap=plan.cap,
                                 refine=plan.refine, label=f"[{nodes} node(s)] ")
        held = sipp(c.sip_port, SCENARIOS / "uac_122_dtmf.xml", calls=capacity, rate=max(5.0, capacity / 10),
                    limit=capacity, timeout=plan.hold_s + 120,
                    subs={"service": "122", "first": str(int(plan.hold_s * 1000)), "stay": "0", "digits": ""})
        out: dict[str, Any] = {"nodes": nodes, "workers_per_node": plan.workers, "max_clean_cps": best,
                               "steps": [s.to_dict() for s in steps],
                               "held_callers": held.ok_calls, "held_failed": held.failed_calls,
                               "caller_legs_at_once": held.ok_calls}
        if nodes > 1:
            out["node_left_set_s"] = round(c.kill_node(nodes), 3)
        return out
    finally:
        c.stop()


def main(as_json: bool = False, quick: bool = False) -> int:
    plan = QUICK if quick else FULL
    results = [measure(n, plan) for n in plan.sizes]
    by = {r["nodes"]: r for r in results}
    one, many = by.get(min(plan.sizes)), by.get(max(plan.sizes))
    ratio = round(many["max_clean_cps"] / one["max_clean_cps"], 2) if one and many and one["max_clean_cps"] else None
    for r in results:
        say(f"{r['nodes']} node(s): {r['max_clean_cps']:g} calls/s clean, {r['held_callers']} callers held at once"
            + (f", a killed node left the front door's set in {r['node_left_set_s']} s" if "node_left_set_s" in r
               else ""))
    say(f"ratio {max(plan.sizes)} nodes / {min(plan.sizes)} node: {ratio}")
    emit({"bench": "cluster", "quick": quick, "sizes": results, "cps_ratio": ratio}, as_json)
    return 0
