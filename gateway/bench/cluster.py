"""``handoff122 bench cluster``: the same call load through the front door with 1 node and with 3.

For each cluster size it starts ``handoff122 cluster --nodes n`` (leader routing: every node routes
through the elected routing authority, ``gateway.cluster.ROUTING_AUTHORITY_WIRED``) on a fresh
PostgreSQL database (``HANDOFF_BENCH_PG_URL``, default the local server) with the seats of a seat
farm (``gateway.bench.seat_farm``: SIPp UAS processes, every seat every skill, wrap-up 1 s) and
the same media workers in all (``Plan.workers``, split evenly over the nodes: on one machine each
size then has the same caller slots and the same idle cost of its workers), and measures, through
the front door only:

1. **Ramp**: SIPp callers dial 122 at the front door and press a real IVR path with RFC 4733 key
   presses (``bench full``'s callers: police, rescue, review, determination, query, claim in
   turn); the node that got the call runs the IVR and enqueues the caller with the leader, the
   leader's ACD offers a seat, the node dials it; the caller talks ``talk_s`` and hangs up.  The rate
   doubles until a step fails, then the gap is bisected (``gateway.bench.ramp``).  A step is clean
   when <= 0.1 % of its calls failed or never reached a seat, set-up p99 <= 1 s, no call went to
   the wrong skill, and the queue wait (the node's enqueue -> the leader's offer back at the node)
   p99 <= 1 s: seats are never short here, so a wait is the routing's own.  The ramp's cap is the cluster's caller slots (2 per worker).  Each step gives
   the callers and legs at once (peak, from the nodes' logs), how the front door spread the calls
   over the nodes, and the CPU (share of one core) of every role: the front door's Kamailio, the
   nodes' Kamailios, media workers, the leader's control process, the standbys' control
   processes, the API processes, the cluster process (API door), the PostgreSQL backends of the
   cluster's database, the SIPp load generators, and the machine in all (the rest is other work).
2. **Failover** (the largest size only), with callers arriving all along: ``SIGSTOP`` of the leader's
   control process (``freeze_s``, then ``SIGCONT``: it must step down) and ``kill -9`` of every
   process of the leader node (its Kamailio follows by parent-death signal).  Each sample gives the
   time from the signal to the new leader's "routing for the cluster" log line, to the first offer
   after it (a caller routed by the new leader, from any node's log), and, after a kill, to the
   dead node leaving the front door's set.  Samples are printed as min / median / max.

It prints a table of both sizes, the failover samples and the ratio of the highest clean rates
(3 nodes / 1 node).  On one machine the nodes share its cores, so the ratio says what the cluster
costs (more processes, the leader's commands and deliveries through PostgreSQL), not what more
machines give; docs/DEPLOY.md turns the per-role CPU into the expected scaling on real machines.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.bench import full
from gateway.bench.node_log import CallJourney, NodeLog
from gateway.bench.processes import CLK_TCK, NodeSampler, processes_under
from gateway.bench.ramp import Step, find_limit, rounded, what_limits
from gateway.bench.runner import (
    emit,
    free_block,
    free_port,
    rtp_base_below_ephemeral,
    say,
    sipp,
    text_table,
)
from gateway.bench.seat_farm import SeatFarm
from gateway.cluster import ROUTING_AUTHORITY_WIRED, front_door_set
from gateway.kamailio import KamailioRpc
from gateway.local_sockets import unix_socket_path

PG_URL = os.environ.get("HANDOFF_BENCH_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
#: process roles whose CPU is sampled, in the order the table shows them
ROLES = ("front_door", "node_kamailio", "workers", "control_leader", "control_standby", "api", "api_door",
         "postgres", "sipp")
LEADS = "routing for the cluster"
#: a step also fails when callers wait longer than this for an offer (p99) although seats are free:
#: the bench's seats are never all busy (200 seats, wrap-up 1 s), so a wait is the routing's own
MAX_QUEUE_WAIT_P99_MS = 1000.0


@dataclass(frozen=True)
class Plan:
    sizes: tuple[int, ...]
    #: media workers of the whole cluster, split evenly over its nodes: on one machine every size gets
    #: the same caller slots and the same idle cost of its workers (each pjsua2 worker uses ~0.01 core
    #: with no call), so the sizes differ only by what the cluster adds
    workers: int
    seats: int
    uas: int
    talk_s: float
    step_s: float
    first: float
    cap: float
    refine: int
    freezes: int          # SIGSTOP samples of the leader (largest size)
    kills: int            # kill -9 samples of the leader node (largest size; each costs a node)
    freeze_s: float
    background_cps: float  # callers arriving during the failover samples

    def call_shape(self) -> full.Plan:
        """``bench full``'s callers with this plan's talk time (key timing as in ``bench full``)."""
        return full.Plan(talk_s=self.talk_s, step_s=self.step_s, soak_s=0, first_rate=self.first, cap=self.cap,
                         refine=self.refine, resolution=1, workers=self.workers, seats=self.seats, uas=self.uas,
                         held=0, held_s=0)


FULL = Plan(sizes=(1, 3), workers=80, seats=200, uas=3, talk_s=4, step_s=15, first=4, cap=40, refine=2,
            freezes=3, kills=2, freeze_s=8, background_cps=2)
QUICK = Plan(sizes=(1, 3), workers=6, seats=12, uas=1, talk_s=1, step_s=5, first=1, cap=1, refine=0,
             freezes=1, kills=1, freeze_s=5, background_cps=1)


async def _admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class ClusterNodeLog(NodeLog):
    """One node's log: its calls (``NodeLog``), when it took the lead, and when it offered a seat."""

    def __init__(self, path: Path, name: str) -> None:
        super().__init__(path)
        self.name = name
        self.leads: list[dict[str, Any]] = []
        self.offers: list[float] = []
        #: call id -> when its node got its first offer from the leader (the end of its queue wait)
        self.offered: dict[str, float] = {}
        self.step_downs: list[float] = []

    def read(self) -> dict[str, CallJourney]:
        if not self.path.exists():
            return self.calls
        return super().read()

    def _take(self, rec: dict[str, object]) -> None:
        super()._take(rec)
        event, ts = rec.get("event"), rec.get("ts")
        if not isinstance(ts, int | float):
            return
        if event == LEADS:
            self.leads.append({"ts": float(ts), "epoch": rec.get("epoch"), "restore_s": rec.get("restore_s"),
                               "waiting": rec.get("waiting")})
        elif event == "journey" and rec.get("cause") == "offered":
            self.offers.append(float(ts))
            cid = rec.get("call_id")
            if isinstance(cid, str):
                self.offered.setdefault(cid, float(ts))
        elif isinstance(event, str) and "no longer the routing authority" in event:
            self.step_downs.append(float(ts))


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (every core, every process), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLK_TCK  # all but idle and iowait


class BenchCluster:
    """``handoff122 cluster --nodes n`` as a subprocess, on its own database, ports and seat farm."""

    def __init__(self, nodes: int, plan: Plan) -> None:
        self.nodes, self.plan = nodes, plan
        self.tmp = Path(tempfile.mkdtemp(prefix="h122-bench-cluster-"))
        self.db = f"handoff_bench_{uuid.uuid4().hex[:10]}"
        self.sip_port, self.api_port = free_port(), free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.farm = SeatFarm(seats=plan.seats, uas_processes=plan.uas, probe_share=0.0)
        self.logs = [ClusterNodeLog(self.data_dir / f"node-{i}.log", f"node-{i}") for i in range(1, nodes + 1)]
        self.shape = plan.call_shape()
        self.workers = max(1, plan.workers // nodes)
        self.runs = 0
        self.whole = False
        self.started_line = ""

    @property
    def data_dir(self) -> Path:
        return self.tmp / "d"

    def start(self, attempts: int = 3) -> None:
        """Start the seat farm, then the cluster.  Free ports can be taken between the choice and the
        bind (the seat farm's SIPp media ports, other work on the machine): a cluster whose node
        found a port in use is stopped and started again on new ports."""
        seats = self.farm.start(self.tmp)
        for attempt in range(attempts):
            self._launch(seats)
            said = "".join(log.path.read_text(errors="replace") for log in self.logs if log.path.exists())
            if self.whole or "port in use" not in said or attempt == attempts - 1:
                break
            say(f"  a node found a port in use; starting the cluster again on new ports ({attempt + 2}/{attempts})")
            self._end_cluster()
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.sip_port, self.api_port = free_port(), free_port()
            self.logs = [ClusterNodeLog(log.path, log.name) for log in self.logs]
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError("cluster did not start: " + self.cluster_log()[-2000:])

    def _launch(self, seats: Path) -> None:
        asyncio.run(_admin(f'CREATE DATABASE "{self.db}"'))
        w = self.workers
        cmd = [sys.executable, "-m", "gateway.cli", "cluster", "--nodes", str(self.nodes), "--sip-port",
               str(self.sip_port), "--api-port", str(self.api_port), "--data-dir", str(self.data_dir), "--db-url",
               f"{PG_URL.rsplit('/', 1)[0]}/{self.db}", "--workers", str(w), "--node-base-port",
               str(free_block(self.nodes * (w + 2))), "--rtp-base-port",
               str(rtp_base_below_ephemeral(self.sip_port, self.nodes * w * 40))]
        if mqtt := os.environ.get("HANDOFF_BENCH_MQTT_URL"):
            cmd += ["--mqtt-url", mqtt]
        log = (self.tmp / "cluster.log").open("wb")
        # every node reads the same seats file (the leader's is the one in force); the seats answer
        # at once and go back to available 1 s after a call (wrap-up)
        env = {**os.environ, "HANDOFF_SEATS": str(seats), "HANDOFF_ANSWER_DELAY_S": "0", "HANDOFF_WRAP_UP_S": "1",
               "HANDOFF_LOG_LEVEL": "INFO"}
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.whole = False
        self._until(lambda: self.proc is not None and (self.proc.poll() is not None
                                                       or "front door sip:" in self.cluster_log()), 300)
        if self.proc.poll() is not None:
            return
        self._until(lambda: self.leader() is not None, 60)
        # measured only once every node is in the front door's set (a node that is slow to start
        # under load is probed in a little later)
        self.whole = bool(self._until(lambda: all(self.in_set().get(f"node-{i}") for i in range(1, self.nodes + 1)),
                                      120, 0.5))
        self.started_line = next((ln for ln in self.cluster_log().splitlines() if "front door sip:" in ln), "")

    def cluster_log(self) -> str:
        return (self.tmp / "cluster.log").read_text(errors="replace")

    @staticmethod
    def _until(what: Callable[[], Any], timeout: float, every: float = 0.2) -> Any:
        """``what()`` once it is truthy, or None after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while True:
            got = what()
            if got or time.monotonic() > end:
                return got
            time.sleep(every)

    def read_logs(self) -> None:
        for log in self.logs:
            log.read()

    def leader(self) -> int | None:
        """The node that took the lead last (from the nodes' own logs), by index."""
        self.read_logs()
        last = max(((x["ts"], i) for i, log in enumerate(self.logs, 1) for x in log.leads), default=None)
        return None if last is None else last[1]

    def in_set(self) -> dict[str, bool]:
        rpc = KamailioRpc(unix_socket_path(self.data_dir / "front", "kamailio-rpc.sock"))
        return front_door_set(rpc.call("dispatcher.list"))

    def node_pids(self, i: int) -> list[int]:
        """Node i's supervisor, control process, workers and API; not its Kamailio, which goes down by
        itself when its supervisor dies (parent-death signal), as in a crash."""
        run = self.data_dir / f"node-{i}" / "run"
        return sorted({int((self.data_dir / f"node-{i}.pid").read_text())}
                      | {int(p.read_text()) for p in run.glob("*.pid") if p.name != "kamailio.pid"})

    def control_pid(self, i: int) -> int:
        return int((self.data_dir / f"node-{i}" / "run" / "control.pid").read_text())

    # -- what runs where ----------------------------------------------------------------------
    def roles(self) -> dict[int, str]:
        """pid -> role for every process of the cluster, the bench's SIPp processes and the
        PostgreSQL backends serving the cluster's database (the server's own processes are shared
        with whatever else uses it and are left out)."""
        assert self.proc is not None
        leader = self.leader()
        kids: dict[int, list[int]] = {}
        cmds: dict[int, str] = {}
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmds[int(d.name)] = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d.name))
        out: dict[int, str] = {}
        front = str(self.data_dir / "front")
        todo: list[tuple[int, int | None]] = [(self.proc.pid, None)]
        while todo:
            pid, node = todo.pop()
            cmd = cmds.get(pid, "")
            m = re.search(r"/node-(\d+)(?:\s|$)", cmd)
            node = int(m.group(1)) if m else node
            if pid == self.proc.pid:
                out[pid] = "api_door"
            elif cmd.split(" ", 1)[0].endswith("kamailio"):  # a node names the front door's RPC socket too
                out[pid] = "front_door" if f"-f {front}/" in cmd else "node_kamailio"
            elif "gateway.worker" in cmd:
                out[pid] = "workers"
            elif "gateway.api_process" in cmd:
                out[pid] = "api"
            else:  # a node's supervisor and control process: the node's fixed cost and its routing
                out[pid] = "control_leader" if node is not None and node == leader else "control_standby"
            todo.extend((k, node) for k in kids.get(pid, []))
        bench = [os.getpid()]
        while bench:
            pid = bench.pop()
            if pid not in out and cmds.get(pid, "").startswith("sipp "):
                out[pid] = "sipp"
            bench.extend(kids.get(pid, []))
        for pid, cmd in cmds.items():
            if cmd.startswith("postgres:") and f" {self.db} " in cmd:
                out[pid] = "postgres"
        return out

    # -- a ramp step --------------------------------------------------------------------------
    def step(self, rate: float) -> Step:
        """Callers at ``rate`` for ``step_s`` seconds, every one through the IVR to a seat; waits
        until every call ended and returns the step with its figures."""
        self.runs += 1
        calls = max(1, round(rate * self.plan.step_s))
        paths = list(full.PATHS)
        prefix = f"13{self.nodes}{self.runs:02d}"
        inf = self.tmp / f"callers-{self.runs}.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(f"{i % len(paths)};{prefix}{i:06d};\n" for i in range(calls)))
        lifetime = full.call_seconds(self.shape, self.plan.talk_s)
        scenario = full.caller_scenario(self.tmp, self.shape, self.plan.talk_s)
        for log in self.logs:
            log.mark()
        sampler = NodeSampler(self.proc.pid if self.proc else 0, processes=self.roles, kinds=ROLES)
        busy0, t0 = machine_busy_s(), time.monotonic()
        run = sipp(self.sip_port, scenario, calls=calls, rate=rate, limit=int(rate * lifetime * 2) + 50,
                   timeout=self.plan.step_s + lifetime + 90,
                   extra=["-inf", str(inf), "-trace_rtt", "-rtt_freq", "1", "-trace_err"])
        self._until(lambda: all(j.ended is not None for j in self._journeys(prefix)), 15, 0.5)
        processes = sampler.stop()
        processes["machine_cpu_cores"] = round((machine_busy_s() - busy0) / (time.monotonic() - t0), 3)
        processes["other_cpu_cores"] = round(processes["machine_cpu_cores"] - processes["cpu_core_share_total"], 3)
        expected = {f"{prefix}{i:06d}": full.PATHS[paths[i % len(paths)]][1] for i in range(calls)}
        by_node = {log.name: [j for j in log.calls.values() if j.caller in expected] for log in self.logs}
        mine = [j for js in by_node.values() for j in js]
        bridged = [j for j in mine if j.bridged is not None]
        wrong = [j for j in mine if j.skill and j.skill != expected[j.caller]]
        never = len(mine) - len(bridged)  # the node took the call, no seat ever answered it
        peak_callers, peak_legs = full._peaks(mine)
        setup = run.response_times_ms()
        offer_to_bridged = [j.handoff_ms for j in bridged if j.handoff_ms is not None]
        routed_to_bridged = [(j.bridged - j.routed) * 1000 for j in bridged if j.routed and j.bridged]
        offered = {cid: ts for log in self.logs for cid, ts in log.offered.items()}
        # the queue wait through the leader: the node's enqueue (IVR done) -> the leader's offer
        # delivered back to the node (seats were never short: every seat every skill, wrap-up 1 s)
        routed_to_offered = [(offered[j.call_id] - j.routed) * 1000 for j in mine if j.routed and j.call_id in offered]
        hops = self.queue_wait_hops({j.call_id: (j.routed, offered[j.call_id]) for j in mine
                                     if j.routed and j.call_id in offered})
        figures = {
            "calls": calls, "sipp_ok": run.ok_calls, "sipp_failed": run.failed_calls, "reached_seat": len(bridged),
            "never_reached_seat": never, "wrong_skill": len(wrong),
            "calls_by_node": {name: len(js) for name, js in by_node.items()},
            "callers_concurrent_peak": peak_callers, "legs_concurrent_peak": peak_legs,
            "setup_ms": full._dist(setup), "routed_to_offered_ms": full._dist(routed_to_offered),
            "queue_wait_hops_ms": hops,
            "ivr_routed_to_bridged_ms": full._dist(routed_to_bridged),
            "offer_to_bridged_ms": full._dist(offer_to_bridged), "processes": processes,
            "node_warnings": {k: v for log in self.logs for k, v in log.problems.items()},
            "sipp_errors": run.first_errors() if run.failed_calls else [],
        }
        shutil.rmtree(run.workdir, ignore_errors=True)
        problems = [f"{len(wrong)} calls routed to the wrong skill"] if wrong else []
        wait_p99 = figures["routed_to_offered_ms"]["p99"]
        if wait_p99 is not None and wait_p99 > MAX_QUEUE_WAIT_P99_MS:
            problems.append(f"queue wait p99 {wait_p99:.0f} ms > {MAX_QUEUE_WAIT_P99_MS:.0f} ms with seats free")
        step = Step(target_cps=rate, seconds=self.plan.step_s, ok=max(0, run.ok_calls - never),
                    failed=run.failed_calls + never, achieved_cps=run.answered_rate(), setup_ms=setup,
                    problems=problems, extra=figures)
        wait = figures["routed_to_offered_ms"]
        say(f"    reached a seat {len(bridged)}/{calls}, by node {figures['calls_by_node']}, peak {peak_callers} "
            f"callers / {peak_legs} legs; queue wait (IVR routed -> offer) p50/p99 {wait['p50']}/{wait['p99']} ms "
            "(" + ", ".join(f"{k} {v['p50']}/{v['p99']}" for k, v in hops.items()) + "); "
            "CPU cores: " + ", ".join(
                f"{k} {processes[k]['cpu_core_share']}" for k in ROLES)
            + f", machine {processes['machine_cpu_cores']} (other {processes['other_cpu_cores']})")
        return step

    def _journeys(self, prefix: str) -> list[CallJourney]:
        self.read_logs()
        return [j for log in self.logs for j in log.calls.values() if j.caller.startswith(prefix)]

    # -- failover -----------------------------------------------------------------------------
    def failover(self, how: str) -> dict[str, Any]:
        """One sample: callers arriving at ``background_cps``; ``how`` = "freeze" (SIGSTOP of the
        leader's control process for ``freeze_s``, then SIGCONT) or "kill" (kill -9 of every
        process of the leader node).  Times from the signal, on the nodes' log clock."""
        p = self.plan
        leader = self.leader()
        assert leader is not None
        span = p.freeze_s + 12 if how == "freeze" else 15.0
        rate = p.background_cps
        scenario = full.caller_scenario(self.tmp, self.shape, 1.0)
        box: dict[str, Any] = {}
        self.runs += 1
        inf = self.tmp / f"callers-{self.runs}.csv"
        calls = max(1, round(rate * span))
        inf.write_text("SEQUENTIAL\n" + "".join(f"{i % len(full.PATHS)};14{self.runs:02d}{i:06d};\n"
                                                for i in range(calls)))

        def callers() -> None:
            # a caller that landed on the frozen node gives up after 10 s (not SIPp's 30 s) so that a
            # sample ends soon after the node wakes
            box["run"] = sipp(self.sip_port, scenario, calls=calls, rate=rate, limit=200, timeout=span + 60,
                              extra=["-inf", str(inf), "-recv_timeout", "10000"])

        t = threading.Thread(target=callers, name="failover-callers")
        started = time.time()
        t.start()
        out: dict[str, Any] = {"node": f"node-{leader}"}
        try:
            # the callers are being routed by the leader before it is hit
            self.read_logs()
            self._until(lambda: self.read_logs() or any(o > started for log in self.logs for o in log.offers), 30, 0.1)
            pids = [self.control_pid(leader)] if how == "freeze" else self.node_pids(leader)
            hit = time.time()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGSTOP if how == "freeze" else signal.SIGKILL)
                except ProcessLookupError:
                    pass
            left_set: float | None = None
            took: dict[str, Any] | None = None
            first_offer: float | None = None
            end = time.monotonic() + 40
            while time.monotonic() < end and (first_offer is None or (how == "kill" and left_set is None)):
                self.read_logs()
                if took is None:
                    took = min((dict(x, node=log.name) for log in self.logs if log.name != f"node-{leader}"
                                for x in log.leads if x["ts"] > hit), key=lambda x: x["ts"], default=None)
                if took is not None and first_offer is None:
                    first_offer = min((o for log in self.logs for o in log.offers if o >= took["ts"]), default=None)
                if how == "kill" and left_set is None and self.in_set().get(f"node-{leader}") is False:
                    left_set = time.time() - hit
                time.sleep(0.05)
            # waiting: callers in the queue when the new leader took over (0: the first routed caller
            # came out of the IVR after the takeover, so its time includes some of the IVR)
            out.update(new_leader=took and took["node"], restore_s=took and took["restore_s"],
                       waiting_at_takeover=took and took["waiting"],
                       to_leader_s=rounded(took["ts"] - hit, 3) if took else None,
                       to_first_routed_s=rounded(first_offer - hit, 3) if first_offer else None)
            if how == "kill":
                out["left_front_door_set_s"] = rounded(left_set, 3)
            else:
                # woken after freeze_s, the old leader must find itself fenced and step down
                time.sleep(max(0.0, hit + p.freeze_s - time.time()))
                os.kill(pids[0], signal.SIGCONT)
                woke = time.time()
                log = self.logs[leader - 1]
                self._until(lambda: self.read_logs() or any(s > woke for s in log.step_downs), 30, 0.1)
                down = [s for s in log.step_downs if s > woke]
                out["stepped_down_after_cont_s"] = rounded(down[0] - woke, 3) if down else None
        finally:
            t.join()
        run = box.get("run")
        out["callers"] = {"calls": calls, "ok": run.ok_calls if run else 0, "failed": run.failed_calls if run else calls}
        if run is not None:
            shutil.rmtree(run.workdir, ignore_errors=True)
        return out

    def queue_wait_hops(self, waits: dict[str, tuple[float, float]]) -> dict[str, dict[str, Any]]:
        """The queue wait split where it is spent, from the routing's own rows: the node's enqueue
        command written (``node_sends``: its sender queue and the insert), the leader's OFFER decided
        (``leader_decides``: reading the command, the ACD), the offer read back at the node
        (``offer_returns``: the fence claim, the delivery row, its reading).  ``waits``: call id ->
        (IVR routed, offer at the node), both from the node's log."""
        import asyncpg

        async def rows() -> tuple[dict[str, float], dict[str, float]]:
            conn = await asyncpg.connect(f"{PG_URL.rsplit('/', 1)[0]}/{self.db}".replace("postgresql+asyncpg://",
                                                                                          "postgresql://"))
            try:
                ids = list(waits)
                sent = {r["call_id"]: float(r["at"]) for r in await conn.fetch(
                    "SELECT call_id, min(at) AS at FROM routing_commands WHERE kind = 'enqueue' "
                    "AND call_id = ANY($1::text[]) GROUP BY call_id", ids)}
                decided = {r["call_id"]: float(r["at"]) for r in await conn.fetch(
                    "SELECT call_id, min(at) AS at FROM routing_deliveries WHERE kind = 'OFFER' "
                    "AND call_id = ANY($1::text[]) GROUP BY call_id", ids)}
                return sent, decided
            finally:
                await conn.close()

        try:
            sent, decided = asyncio.run(rows())
        except Exception as e:  # a figure, not a reason to lose the run
            say(f"  queue wait hops not read: {type(e).__name__}: {e}")
            return {}
        both = [c for c in waits if c in sent and c in decided]
        return {"node_sends": full._dist([(sent[c] - waits[c][0]) * 1000 for c in both]),
                "leader_decides": full._dist([(decided[c] - sent[c]) * 1000 for c in both]),
                "offer_returns": full._dist([(waits[c][1] - decided[c]) * 1000 for c in both])}

    def routing_rows(self) -> dict[str, int]:
        """Rows the routing wrote to PostgreSQL so far: commands (nodes -> leader), deliveries
        (leader -> nodes), each one committed transaction, and the calls they were for."""
        import asyncpg

        async def count() -> dict[str, int]:
            conn = await asyncpg.connect(f"{PG_URL.rsplit('/', 1)[0]}/{self.db}".replace("postgresql+asyncpg://",
                                                                                          "postgresql://"))
            try:
                return {"commands": int(await conn.fetchval("SELECT count(*) FROM routing_commands")),
                        "deliveries": int(await conn.fetchval("SELECT count(*) FROM routing_deliveries")),
                        "calls": int(await conn.fetchval("SELECT count(DISTINCT call_id) FROM routing_commands "
                                                         "WHERE call_id IS NOT NULL"))}
            finally:
                await conn.close()

        try:
            return asyncio.run(count())
        except Exception as e:  # a figure, not a reason to lose the run
            say(f"  routing rows not counted: {type(e).__name__}: {e}")
            return {}

    def _end_cluster(self) -> None:
        """Stop the cluster as an operator would (Ctrl-C), end whatever it left, drop its database."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid, _ in processes_under(self.data_dir):  # nothing of the bench's cluster left behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)'))

    def stop(self) -> None:
        self._end_cluster()
        self.farm.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _spread(values: list[float]) -> dict[str, Any]:
    """min / median / max of the samples."""
    if not values:
        return {"n": 0, "min": None, "median": None, "max": None}
    return {"n": len(values), "min": round(min(values), 3), "median": round(statistics.median(values), 3),
            "max": round(max(values), 3)}


def measure(nodes: int, plan: Plan, with_failover: bool) -> dict[str, Any]:
    c = BenchCluster(nodes, plan)
    slots = nodes * c.workers * 2
    lifetime = full.call_seconds(c.shape, plan.talk_s)
    cap = min(plan.cap, max(plan.first, int(slots * 0.9 / lifetime)))
    say(f"cluster of {nodes} node(s), {c.workers} workers each ({slots} caller slots), {plan.seats} seats; "
        f"callers press an IVR path, reach a seat, talk {plan.talk_s:g} s (~{lifetime:.1f} s a call); "
        f"ramp up to {cap:g} calls/s")
    t0 = time.monotonic()
    try:
        c.start()
        say(f"  up in {time.monotonic() - t0:.0f} s; node-{c.leader()} routes for the cluster; front door's set "
            f"{c.in_set()}")
        if not c.whole:
            say(f"  WARNING: not every node is in the front door's set: {c.started_line}")
        steps, best = find_limit(c.step, first=plan.first, cap=cap, refine=plan.refine, resolution=1,
                                 label=f"  [{nodes} node(s)] ")
        out: dict[str, Any] = {
            "nodes": nodes, "workers_per_node": c.workers, "caller_slots": slots, "call_seconds": round(lifetime, 1),
            "all_nodes_in_set": c.whole, "max_clean_cps": best,
            "limited_by": what_limits(steps, best, cap, f"the cluster's {slots} caller slots"),
            "steps": [s.to_dict() for s in steps]}
        top = next((s for s in steps if s.target_cps == best and s.clean), None)
        if top is not None:
            out["at_max"] = top.to_dict()
        failing = sorted((s for s in steps if not s.clean), key=lambda s: s.target_cps)
        if failing:
            out["first_failing"] = failing[0].to_dict()
        out["where_the_limit_is"] = where_the_limit_is(out.get("first_failing"))
        rows = c.routing_rows()
        if rows.get("calls"):
            out["routing_rows"] = {**rows, "commands_per_call": round(rows["commands"] / rows["calls"], 2),
                                   "deliveries_per_call": round(rows["deliveries"] / rows["calls"], 2)}
            say(f"  routing through PostgreSQL: {out['routing_rows']['commands_per_call']} commands and "
                f"{out['routing_rows']['deliveries_per_call']} deliveries per call (one transaction each)")
        if with_failover:
            samples: dict[str, list[dict[str, Any]]] = {"leader_freeze": [], "leader_kill_9": []}
            for how, n, key in (("freeze", plan.freezes, "leader_freeze"), ("kill", plan.kills, "leader_kill_9")):
                for k in range(n):
                    say(f"  failover: {'SIGSTOP of the leader control process' if how == 'freeze' else 'kill -9 of the leader node'}"
                        f" ({k + 1}/{n}), callers at {plan.background_cps:g}/s")
                    s = c.failover(how)
                    samples[key].append(s)
                    say(f"    {s['node']} -> {s['new_leader']} routes after {s['to_leader_s']} s, first caller routed "
                        f"after {s['to_first_routed_s']} s" + (f", out of the front door's set after "
                                                               f"{s['left_front_door_set_s']} s" if how == "kill" else
                                                               f"; stepped down {s['stepped_down_after_cont_s']} s "
                                                               "after SIGCONT"))
            out["failover"] = {key: {"samples": v,
                                     "to_leader_s": _spread([x["to_leader_s"] for x in v if x["to_leader_s"] is not None]),
                                     "to_first_routed_s": _spread([x["to_first_routed_s"] for x in v
                                                                   if x["to_first_routed_s"] is not None])}
                               for key, v in samples.items()}
        return out
    finally:
        c.stop()


def where_the_limit_is(step: dict[str, Any] | None) -> str:
    """From the first failing step: was the machine's CPU used up, and by which roles most."""
    if not step:
        return "no step failed"
    p = step["processes"]
    cores = os.cpu_count() or 1
    top = sorted(ROLES, key=lambda r: p[r]["cpu_core_share"], reverse=True)[:3]
    busy = p["machine_cpu_cores"]
    head = (f"CPU: the machine's {cores} cores were {100 * busy / cores:.0f} % busy" if busy >= 0.85 * cores
            else f"not the machine's CPU ({busy} of {cores} cores busy)")
    wait = step["routed_to_offered_ms"]
    return (f"{head} at {step['target_cps']:g} calls/s; most used by " + ", ".join(f"{r} {p[r]['cpu_core_share']}" for r in top)
            + f", other work on the machine {p['other_cpu_cores']}; queue wait p50/p99 {wait['p50']}/{wait['p99']} ms, "
            f"the seat's own hand-off (offer -> bridged) p50 {step['offer_to_bridged_ms']['p50']} ms")


NODE_ROLES = ("node_kamailio", "workers", "control_leader", "control_standby", "api")


def per_call(results: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU per call by role, for sizing real machines (docs/DEPLOY.md):

    - ``node_fixed_cores`` + ``node_ms_per_call`` x rate: a least-squares line through the clean
      steps of the smallest size (every node role summed: its Kamailio, workers, control, API), so
      the fixed part (idle workers, timers) and the part that grows with the rate are apart;
    - ``routing_ms_per_call``: what leading adds to a node, from the largest size's highest clean
      step: the leader's control process minus one standby's (each node handles its own share of the
      calls; only the leader also routes every call of the cluster);
    - ``postgres_ms_per_call``, ``front_door_ms_per_call``: the cluster's database backends and the
      front door, per call, at the largest size's highest clean step."""
    out: dict[str, Any] = {}
    small = min(results, key=lambda r: r["nodes"])
    points = [(s["target_cps"], sum(s["processes"][k]["cpu_core_share"] for k in NODE_ROLES))
              for s in small["steps"] if s["clean"]]
    xs = [x for x, _ in points]
    if len(set(xs)) >= 3 and max(xs) >= 2 * min(xs):  # else the line is noise on a shared machine
        fit = statistics.linear_regression([x for x, _ in points], [y for _, y in points])
        out["node_fixed_cores"] = round(fit.intercept, 3)
        out["node_ms_per_call"] = round(fit.slope * 1000, 1)
        out["node_fit_points"] = [(x, round(y, 3)) for x, y in points]
    big = max(results, key=lambda r: r["nodes"])
    top = big.get("at_max")
    if top and big["nodes"] > 1:
        p, rate = top["processes"], top["target_cps"]
        standby = p["control_standby"]["cpu_core_share"] / (big["nodes"] - 1)
        out["routing_ms_per_call"] = round((p["control_leader"]["cpu_core_share"] - standby) / rate * 1000, 2)
        out["postgres_ms_per_call"] = round(p["postgres"]["cpu_core_share"] / rate * 1000, 2)
        out["front_door_ms_per_call"] = round(p["front_door"]["cpu_core_share"] / rate * 1000, 3)
        out["at_cps"] = rate
    return out


def _cores(step: dict[str, Any] | None, role: str) -> str:
    if not step:
        return "-"
    p = step["processes"]
    return str(p[role]["cpu_core_share"] if role in ROLES else p[role])


def table(results: list[dict[str, Any]]) -> str:
    """One column per cluster size: the highest clean rate, what stopped the ramp, and at that rate
    the concurrency and the CPU (cores) of each role."""
    head = ["", *(f"{r['nodes']} node(s)" for r in results)]
    at = [r.get("at_max") for r in results]
    rows = [["max clean CPS", *(f"{r['max_clean_cps']:g}" for r in results)],
            ["callers / legs at once (at max)",
             *(f"{a['callers_concurrent_peak']} / {a['legs_concurrent_peak']}" if a else "-" for a in at)],
            ["set-up p50 / p99 ms (at max)",
             *(f"{a['setup_ms']['p50']} / {a['setup_ms']['p99']}" if a else "-" for a in at)],
            ["queue wait p50 / p99 ms (at max)",
             *(f"{a['routed_to_offered_ms']['p50']} / {a['routed_to_offered_ms']['p99']}" if a else "-" for a in at)],
            ["queue wait p50 / p99 ms (first failing)",
             *(f"{f['routed_to_offered_ms']['p50']} / {f['routed_to_offered_ms']['p99']}" if f else "-"
               for f in (r.get("first_failing") for r in results))],
            ["calls by node (at max)", *(" ".join(str(v) for v in a["calls_by_node"].values()) if a else "-" for a in at)]]
    rows += [[f"CPU cores (at max): {role}", *(_cores(a, role) for a in at)]
             for role in (*ROLES, "cpu_core_share_total", "machine_cpu_cores", "other_cpu_cores")]
    rows.append(["first failing step", *(f"{r['first_failing']['target_cps']:g} CPS" if "first_failing" in r else "none"
                                         for r in results)])
    text = text_table(head, rows)
    text += "\n" + "\n".join(f"{r['nodes']} node(s) limited by: {r['limited_by']}\n  {r['where_the_limit_is']}"
                              for r in results)
    for r in results:
        for key, f in (r.get("failover") or {}).items():
            a, b = f["to_leader_s"], f["to_first_routed_s"]
            text += (f"\nfailover, {key} ({a['n']} samples, {r['nodes']} nodes): signal -> new leader routing "
                     f"min/median/max {a['min']}/{a['median']}/{a['max']} s; -> first caller routed "
                     f"{b['min']}/{b['median']}/{b['max']} s")
    return text


def run(plan: Plan, *, as_json: bool = False, quick: bool = False) -> int:
    """The whole benchmark with one plan; the tests use a tiny one."""
    if not ROUTING_AUTHORITY_WIRED:
        say("bench cluster: the nodes do not route through one authority (gateway.cluster.ROUTING_AUTHORITY_WIRED)")
        return 2
    t0 = time.monotonic()
    results = [measure(n, plan, with_failover=n == max(plan.sizes) and n > 1) for n in plan.sizes]
    by = {r["nodes"]: r for r in results}
    one, many = by[min(plan.sizes)], by[max(plan.sizes)]
    ratio = round(many["max_clean_cps"] / one["max_clean_cps"], 2) if one["max_clean_cps"] else None
    costs = per_call(results)
    say(table(results))
    say("CPU per call: " + ", ".join(f"{k} {v}" for k, v in costs.items() if k != "node_fit_points"))
    say(f"ratio {max(plan.sizes)} nodes / {min(plan.sizes)} node (max clean CPS): {ratio}; "
        f"{time.monotonic() - t0:.0f} s in all")
    emit({"bench": "cluster", "quick": quick, "plan": plan.__dict__, "sizes": results, "cps_ratio": ratio,
          "cpu_per_call": costs,
          "failover": many.get("failover"), "seconds": round(time.monotonic() - t0)}, as_json)
    return 0


def main(as_json: bool = False, quick: bool = False) -> int:
    return run(QUICK if quick else FULL, as_json=as_json, quick=quick)
