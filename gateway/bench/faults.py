"""``handoff122 bench faults``: real calls with faults injected, and what became of every caller.

Each case starts a node on loopback ports of its own (the whole-node case restarts it on the same
ports, so it is the same node id), drives SIPp callers (key ``0``: intake) to SIPp seats, injects
one fault, waits until every call has ended, then counts from the node's own records (API):

    attempted (SIPp INVITEs), offered (answered by the node), completed, abandoned, called back,
    lost (by reason), ghost offers, unaccounted

``unaccounted`` are the calls that break the promise: no recorded end reason, or neither connected
to a seat nor on the callback list nor hung up by the caller.  The goal is 0 everywhere.

Cases: ``worker_kill`` (``kill -9`` of one media worker under load), ``node_kill`` (``kill -9`` of
every process of a node while callers wait, restart on the same data), ``control_kill`` (``kill
-9`` of the control process alone under load: its supervisor starts it again, conversations go on
and must end ``completed``), ``database_restart`` (the
node's own PostgreSQL crashed and started again under load; skipped when PostgreSQL's binaries are
missing), ``broker_restart`` (the node's own Mosquitto killed and started again under load) and
``seat_lost`` (seat phones whose network vanishes mid-conversation: ``kill -STOP`` of a pjsua2
seat phone, no BYE, no RTP; the caller must be back at the head of the queue and put through to
another seat).  The machine's shared PostgreSQL and Mosquitto are never touched.

``HANDOFF_BENCH_KEEP=1`` keeps each case's directory (node logs) and prints where it is.

``--calls N`` spreads about N calls over the cases (``plan``): the node-kill and control-kill cases
keep their size (their callers must all be in the node at the moment it dies), the others share
the rest, and a larger worker-kill case kills a worker again every ``WORKER_KILL_EVERY`` calls.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.bench.runner import emit, free_block, free_port, say, sipp, sipp_media_port, text_table

SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "sipp"
DIGIT_ZERO = ('  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_0.pcap"/></action></nop>\n'
              '  <pause milliseconds="1200"/>')
CALLER_ENDS = frozenset({"abandoned", "caller_hangup_in_ivr", "completed"})


class FaultNode:
    """``handoff122 serve`` on fixed ports in ``root``: it can be killed and started again as itself."""

    def __init__(self, root: Path, workers: int, seats_yaml: str, args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.root = root
        self.data = root / "var"
        self.workers = workers
        self.sip, self.api = free_port(), free_port()
        self.env = {**os.environ, "HANDOFF_WORKER_BASE_PORT": str(free_block(workers + 1)),
                    "HANDOFF_RTP_BASE_PORT": str(20000 + (self.sip % 100) * 400), "HANDOFF_LOG_LEVEL": "INFO",
                    "HANDOFF_WRAP_UP_S": "0", **(env or {})}
        self.args = args or []
        (root / "seats.yaml").write_text(seats_yaml)
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.starts = 0

    def start(self, timeout: float = 90) -> FaultNode:
        self.starts += 1
        self.log = self.root / f"node-{self.starts}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--sip-port", str(self.sip), "--api-port", str(self.api),
             "--data-dir", str(self.data), "--workers", str(self.workers), "--seats", str(self.root / "seats.yaml"),
             *self.args], stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=self.env)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("node exited: " + self.log.read_text(errors="replace")[-1500:])
            try:
                if httpx.get(f"http://127.0.0.1:{self.api}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        else:
            raise RuntimeError("node did not come up")
        if not self.token:
            db = ["--db-url", self.args[self.args.index("--db-url") + 1]] if "--db-url" in self.args else []
            out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "supervisor",
                                  "--data-dir", str(self.data), *db], capture_output=True, text=True, check=True)
            self.token = out.stdout.strip().splitlines()[-1]
        return self

    def get(self, path: str) -> Any:
        r = httpx.get(f"http://127.0.0.1:{self.api}{path}", headers={"Authorization": f"Bearer {self.token}"},
                      timeout=10)
        r.raise_for_status()
        return r.json()

    def put(self, path: str, body: dict[str, Any]) -> None:
        httpx.put(f"http://127.0.0.1:{self.api}{path}", json=body, timeout=10,
                  headers={"Authorization": f"Bearer {self.token}"}).raise_for_status()

    def worker_pids(self) -> list[int]:
        return [int(p.read_text()) for p in sorted((self.data / "run").glob("worker-*.pid"))]

    def kamailio_pid(self) -> int | None:
        import json

        pids = [json.loads(x).get("pid") for x in self.log.read_text(errors="replace").splitlines()
                if '"kamailio_started"' in x]
        return int(pids[-1]) if pids else None

    def crash(self) -> None:
        """``kill -9`` of every process: all stopped first, so none sees the others die and tidies up."""
        assert self.proc is not None
        workers, kam, control = self.worker_pids(), self.kamailio_pid(), self.control_pid()
        self.proc.send_signal(signal.SIGSTOP)
        if control:
            _kill(control, signal.SIGSTOP)
            _kill(control, signal.SIGKILL)
        for pid in workers:
            _kill(pid, signal.SIGSTOP)
        if kam:
            _kill(-kam, signal.SIGSTOP)
        for pid in workers:
            _kill(pid, signal.SIGKILL)
        if kam:
            _kill(-kam, signal.SIGKILL)
        self.proc.kill()
        self.proc.wait(10)

    def control_pid(self) -> int | None:
        """The control process under the node's supervisor (``self.proc``)."""
        try:
            return int((self.data / "run" / "control.pid").read_text())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def wait(self, what: Callable[[], Any], timeout: float = 60) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if got := what():
                    return got
            except (httpx.HTTPError, StopIteration):
                pass
            time.sleep(0.3)
        return None


def _kill(pid: int, sig: int) -> None:
    try:
        if pid < 0:
            os.killpg(-pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _seats(n: int, port: int, status: str = "available") -> str:
    lines = ["seats:"]
    for i in range(n):
        lines += [f"  - id: f{i:03d}", f"    contact: sip:f{i:03d}@127.0.0.1:{port}", "    skills: [intake_guidance]",
                  f"    status: {status}"]
    return "\n".join(lines) + "\n"


def _uas(port: int, cwd: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_answer.xml"), "-i", "127.0.0.1", "-p", str(port),
                             "-cp", str(free_port()), "-nostdin", "-mi", "127.0.0.1", "-mp", str(sipp_media_port())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)


class Callers(threading.Thread):
    """SIPp callers (key 0) in the background; ``attempted`` once done: the INVITEs it sent."""

    def __init__(self, node: FaultNode, calls: int, rate: float, limit: int, stay_ms: int) -> None:
        super().__init__(daemon=True)
        self.node, self.calls, self.rate, self.limit, self.stay_ms = node, calls, rate, limit, stay_ms
        self.attempted = 0
        self.start()

    def run(self) -> None:
        r = sipp(self.node.sip, SCENARIOS / "uac_122_dtmf.xml", calls=self.calls, rate=self.rate, limit=self.limit,
                 timeout=60 + self.calls * (self.stay_ms / 1000 + 8) / max(1, self.limit),
                 subs={"service": "122", "first": "600", "stay": str(self.stay_ms), "digits": DIGIT_ZERO})
        self.attempted = r.ok_calls + r.failed_calls


def front_door_loads(node: FaultNode) -> dict[str, Any]:
    """Kamailio's call load per worker (``dispatcher.list``: ``RUNTIME.DLGLOAD``), by worker id; empty when unknown."""
    from gateway.kamailio import KamailioRpc
    from gateway.local_sockets import unix_socket_path

    try:
        listed = KamailioRpc(unix_socket_path(node.data / "run" / "kamailio", "kamailio-rpc.sock")).call("dispatcher.list")
    except Exception as e:
        say(f"  dispatcher.list failed: {e}")
        return {}
    out: dict[str, Any] = {}

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            dest = x.get("DEST")
            if isinstance(dest, dict) and "URI" in dest:
                attrs = dest.get("ATTRS") or {}
                runtime = dest.get("RUNTIME") or {}
                key = str(attrs.get("DUID") or dest["URI"]) if isinstance(attrs, dict) else str(dest["URI"])
                out[key] = runtime.get("DLGLOAD") if isinstance(runtime, dict) else None
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(listed)
    return out


def _callers(node: FaultNode, calls: int, rate: float, limit: int, stay_ms: int) -> Callers:
    return Callers(node, calls, rate, limit, stay_ms)


def _all_calls(node: FaultNode) -> list[dict[str, Any]]:
    """Every call record of the node, page by page (the API gives at most 500 at a time)."""
    out: list[dict[str, Any]] = []
    before: float | None = None
    while True:
        page = node.get("/api/v1/calls?limit=500" + (f"&before={before}" if before is not None else ""))
        out += page
        if len(page) < 500:
            return out
        before = min(float(c["started_at"]) for c in page)


def _settled(node: FaultNode, timeout: float = 90, calls: int = 0) -> list[dict[str, Any]]:
    """Every call of the node once none is open any more (or the timeout passed)."""
    end = time.monotonic() + timeout
    got: list[dict[str, Any]] = []
    while time.monotonic() < end:
        try:
            got = _all_calls(node) if calls > 400 else node.get("/api/v1/calls?limit=500")
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        if got and all(c["end_reason"] for c in got):
            break
        time.sleep(0.5)
    return got


def _count(node: FaultNode, calls: list[dict[str, Any]], load: Callers, ghost_offers: int = 0) -> dict[str, Any]:
    callbacks = {c["call_id"] for c in node.get("/api/v1/callbacks")}
    reasons = Counter(c["end_reason"] or "none" for c in calls)
    lost = {r: n for r, n in reasons.items() if r.startswith("lost_")}
    unaccounted = [c["id"] for c in calls if not c["end_reason"]
                   or (not c["seat_answered_at"] and c["id"] not in callbacks and c["end_reason"] not in CALLER_ENDS)
                   or (c["end_reason"].startswith("lost_") and c["id"] not in callbacks)]
    # attempted - offered: INVITEs refused at the front door (503 + Retry-After while capacity was
    # down): those callers were told to retry, never answered, so never in the node's records
    return {"attempted": load.attempted, "refused": max(0, load.attempted - len(calls)), "offered": len(calls), "completed": reasons.get("completed", 0),
            "abandoned": reasons.get("abandoned", 0) + reasons.get("caller_hangup_in_ivr", 0),
            "called_back": len(callbacks & {c["id"] for c in calls}), "lost": lost, "ghost_offers": ghost_offers,
            "unaccounted": len(unaccounted)}


# -- how many calls each case makes (--calls) -------------------------------------------------------
#: calls of a case when --calls is given (``plan``); a case not in it keeps its own size
PLANNED: dict[str, int] = {}
#: the share of the scalable cases in a --calls run (seat_lost calls are long: 25 s on the line each)
WEIGHTS = {"worker_kill": 3, "database_restart": 3, "broker_restart": 3, "seat_lost": 1}
#: the fixed cases' calls in a full run (node_kill: its waiting callers; control_kill: its load)
FIXED = {"node_kill": 6, "control_kill": 30}
#: in a worker-kill case larger than its default, one more worker is killed every this many calls
WORKER_KILL_EVERY = 60


def plan(total: int, runnable: list[str]) -> dict[str, int]:
    """About ``total`` calls over the ``runnable`` cases: the fixed ones keep their size, the
    scalable ones share what is left by ``WEIGHTS`` (at least a handful each)."""
    fixed = {k: v for k, v in FIXED.items() if k in runnable}
    scalable = {k: w for k, w in WEIGHTS.items() if k in runnable}
    left = max(0, total - sum(fixed.values()))
    weight = sum(scalable.values()) or 1
    out = {k: max(4, left * w // weight) for k, w in scalable.items()}
    if out:  # rounding: the remainder goes to the first scalable case
        first = next(iter(out))
        out[first] += max(0, left - sum(out.values()))
    return {**fixed, **out}


def _size(name: str, quick: bool, small: int, full: int) -> int:
    return PLANNED.get(name) or (small if quick else full)


# -- the cases ---------------------------------------------------------------------------------------
def case_worker_kill(root: Path, quick: bool) -> dict[str, Any]:
    uas_port = free_port()
    uas = _uas(uas_port, str(root))
    node = FaultNode(root, workers=3, seats_yaml=_seats(8, uas_port)).start()
    try:
        calls = _size("worker_kill", quick, 12, 60)
        # at most as many callers as the two surviving workers hold: beyond that the front door
        # answers 503 + Retry-After while the third is replaced (capacity, not loss)
        load = _callers(node, calls, rate=3, limit=4, stay_ms=4000)
        node.wait(lambda: len(node.get("/api/v1/calls?limit=500")) >= 4, timeout=30)
        victim = node.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        kills, next_at = 1, WORKER_KILL_EVERY + 4
        while calls > 60 and load.is_alive() and next_at < calls:
            # a larger run: once the pool is whole again and another WORKER_KILL_EVERY calls came
            time.sleep(3)
            pids = [p for p in node.worker_pids() if _alive(p)]
            try:
                if len(pids) < 3 or len(_all_calls(node)) < next_at:
                    continue
            except httpx.HTTPError:
                continue
            _kill(pids[kills % len(pids)], signal.SIGKILL)
            kills += 1
            next_at += WORKER_KILL_EVERY
        load.join()
        say(f"  worker_kill: {kills} worker(s) killed")
        row = _count(node, _settled(node, calls=calls), load)
        # with every call over, the front door must count no load on any worker: a load left is
        # capacity lost (a replaced worker's dead calls still counted: it looks full, 503s)
        row["front_door_load_after"] = front_door_loads(node)
        say(f"  worker_kill: front door call load with every call over: {row['front_door_load_after']}")
        return row
    finally:
        node.stop()
        uas.terminate()


def case_node_kill(root: Path, quick: bool) -> dict[str, Any]:
    uas_port = free_port()
    uas = _uas(uas_port, str(root))
    waiting = 3 if quick else 6
    node = FaultNode(root, workers=max(2, waiting // 2 + 1), seats_yaml=_seats(1, uas_port, "not_ready")).start()
    try:
        # the callers stay long enough to be waiting when the node dies; their late BYEs meet a
        # restarted node that no longer knows their dialogs
        load = _callers(node, waiting, rate=5, limit=waiting, stay_ms=15_000)
        node.wait(lambda: next(q for q in node.get("/api/v1/queues") if q["skill"] == "intake_guidance")
                  ["waiting"] == waiting, timeout=60)
        time.sleep(0.3)  # one writer window: the queue entries are committed (the point is what was stored)
        node.crash()
        restarted_at = time.time()
        node.start()
        node.put("/api/v1/seats/f000/status", {"status": "available"})
        calls = _settled(node)
        ghosts = sum(1 for c in calls for e in node.get(f"/api/v1/calls/{c['id']}")["events"]
                     if e["kind"] == "OFFER" and e["at"] >= restarted_at)
        load.join()
        return _count(node, calls, load, ghost_offers=ghosts)
    finally:
        node.stop()
        uas.terminate()


def case_control_kill(root: Path, quick: bool) -> dict[str, Any]:
    """``kill -9`` of the control process alone under load: the node's supervisor starts it again;
    the media workers keep their calls and the new control process takes them over, so the
    conversations under way at the kill go on and end ``completed`` (counted as ``talking_at_kill``
    and ``talking_completed``) and nobody is lost.  INVITEs that arrive while it is away are
    refused with 503 + Retry-After (``attempted`` - ``offered``)."""
    uas_port = free_port()
    uas = _uas(uas_port, str(root))
    node = FaultNode(root, workers=3, seats_yaml=_seats(2, uas_port)).start()
    try:
        calls = 8 if quick else 30
        load = _callers(node, calls, rate=4, limit=4, stay_ms=15_000)
        node.wait(lambda: sum(1 for c in node.get("/api/v1/calls?limit=500") if c["queued_at"]) >= 3, timeout=40)
        time.sleep(0.3)  # one writer window
        talking = {s["call_id"] for s in node.get("/api/v1/seats") if s["status"] == "on_call" and s.get("call_id")}
        control = node.control_pid()
        assert control is not None and node.proc is not None
        _kill(control, signal.SIGKILL)
        node.wait(lambda: node.control_pid() not in (None, control) and node.get("/healthz"), timeout=60)
        load.join()
        calls_now = _settled(node)
        ended = {c["id"]: c["end_reason"] for c in calls_now}
        out = _count(node, calls_now, load)
        out["talking_at_kill"] = len(talking)
        out["talking_completed"] = sum(1 for cid in talking if ended.get(cid) == "completed")
        return out
    finally:
        node.stop()
        uas.terminate()


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else None


def case_database_restart(root: Path, quick: bool) -> dict[str, Any] | None:
    if _pg_bin("pg_ctl") is None:
        return None
    pgdir = Path(tempfile.mkdtemp(prefix="h122-pg-"))
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(pgdir, "postgres")
    port = free_port()
    data = pgdir / "data"
    ctl = [*as_pg, str(_pg_bin("pg_ctl")), "-D", str(data), "-w"]
    opts = f"-p {port} -k {pgdir} -c listen_addresses=127.0.0.1"
    subprocess.run([*as_pg, str(_pg_bin("initdb")), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
                   check=True, capture_output=True)
    subprocess.run([*ctl, "-l", str(pgdir / "log"), "-o", opts, "start"], check=True, capture_output=True)
    uas_port = free_port()
    uas = _uas(uas_port, str(root))
    node = FaultNode(root, workers=3, seats_yaml=_seats(8, uas_port),
                     args=["--db-url", f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres"]).start()
    try:
        calls = _size("database_restart", quick, 10, 40)
        load = _callers(node, calls, rate=2, limit=6, stay_ms=2000)
        node.wait(lambda: len(node.get("/api/v1/calls?limit=500")) >= 2, timeout=30)
        subprocess.run([*ctl, "-m", "immediate", "stop"], check=True, capture_output=True)
        time.sleep(3)  # the outage lasts a few seconds while calls go on
        subprocess.run([*ctl, "-l", str(pgdir / "log"), "-o", opts, "start"], check=True, capture_output=True)
        load.join()
        return _count(node, _settled(node, calls=calls), load)
    finally:
        node.stop()
        uas.terminate()
        subprocess.run([*ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(pgdir, ignore_errors=True)


def case_broker_restart(root: Path, quick: bool) -> dict[str, Any] | None:
    if shutil.which("mosquitto") is None:
        return None
    mport = free_port()
    broker = subprocess.Popen(["mosquitto", "-p", str(mport)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uas_port = free_port()
    uas = _uas(uas_port, str(root))
    node = FaultNode(root, workers=3, seats_yaml=_seats(8, uas_port), args=["--mqtt-url", f"mqtt://127.0.0.1:{mport}"])
    try:
        node.start()
        calls = _size("broker_restart", quick, 10, 40)
        load = _callers(node, calls, rate=2, limit=6, stay_ms=2000)
        node.wait(lambda: len(node.get("/api/v1/calls?limit=500")) >= 2, timeout=30)
        broker.kill()
        broker.wait(5)
        time.sleep(3)
        broker = subprocess.Popen(["mosquitto", "-p", str(mport)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        load.join()
        return _count(node, _settled(node, calls=calls), load)
    finally:
        node.stop()
        uas.terminate()
        broker.kill()


class SeatFreezer(threading.Thread):
    """Every few seconds, the network of one talking seat vanishes: ``kill -STOP`` of its phone
    (no BYE, no RTP, nothing answered).  Once the node has the seat ``not_ready`` the phone comes
    back (SIGCONT: it reads the gateway's BYE and ends its side) and its agent makes it ready."""

    def __init__(self, node: FaultNode, sims: dict[str, subprocess.Popen[bytes]], every_s: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.node, self.sims, self.every_s = node, sims, every_s
        self.frozen = 0
        self.detect_s: list[float] = []           # SIGSTOP -> the seat not_ready (seat_media_timeout)
        self.other: Counter[str] = Counter()      # not_ready for another reason (a dial raced the freeze)
        self.times: Counter[str] = Counter()
        self.halt = threading.Event()

    def seat(self, seat_id: str) -> dict[str, Any]:
        return next(s for s in self.node.get("/api/v1/seats") if s["id"] == seat_id)

    def run(self) -> None:
        while not self.halt.wait(self.every_s):
            try:
                now = time.time()
                # early in a conversation, so the caller is still there when the seat is found out
                talking = [s["id"] for s in self.node.get("/api/v1/seats") if s["status"] == "on_call"
                           and 1.0 <= now - float(s["since"]) <= 5.0 and s["id"] in self.sims]
            except httpx.HTTPError:
                continue
            if not talking:
                continue
            victim = min(talking, key=lambda sid: (self.times[sid], sid))
            self.times[victim] += 1
            sim = self.sims[victim]
            _kill(sim.pid, signal.SIGSTOP)
            t0 = time.monotonic()
            self.frozen += 1
            got = self.node.wait(lambda v=victim: (x := self.seat(v))["status"] != "on_call" and x, timeout=90)
            if got and got.get("reason") == "seat_media_timeout":
                self.detect_s.append(time.monotonic() - t0)
            else:  # the caller hung up first (the seat then goes to wrap-up), or a timeout
                self.other[str(got.get("reason") or got["status"]) if got else "timeout"] += 1
            _kill(sim.pid, signal.SIGCONT)
            time.sleep(0.5)  # the phone reads the BYE it missed
            try:
                if self.seat(victim)["status"] == "not_ready":
                    self.node.put(f"/api/v1/seats/{victim}/status", {"status": "available"})
            except httpx.HTTPError as e:
                say(f"  seat_lost: {victim} not made ready again: {e}")


def case_seat_lost(root: Path, quick: bool) -> dict[str, Any]:
    """Seat phones (pjsua2, sending RTP like any phone) whose network vanishes mid-conversation:
    each caller must end completed, abandoned or with a callback, and every caller whose seat
    vanished must be back in the queue (``seat_leg_lost``) and, if still on the line, put through
    to another seat.  SIPp seats cannot be used here: they send no RTP, so nothing can stop."""
    n_seats = 5
    ports = {f"v{i:03d}": free_port() for i in range(n_seats)}
    lines = ["seats:"]
    for sid, port in ports.items():
        lines += [f"  - id: {sid}", f"    contact: sip:{sid}@127.0.0.1:{port}", "    skills: [intake_guidance]",
                  "    status: available"]
    sims = {sid: subprocess.Popen([sys.executable, "-m", "gateway.cli", "seat", "--id", sid, "--sip-port", str(port),
                                   "--answer-after", "0.3"], stdout=(root / f"seat-{sid}.jsonl").open("wb"),
                                  stderr=subprocess.DEVNULL) for sid, port in ports.items()}
    freezer: SeatFreezer | None = None
    node: FaultNode | None = None
    try:
        end = time.monotonic() + 60
        while not all("listening" in (root / f"seat-{sid}.jsonl").read_text() for sid in sims):
            if time.monotonic() > end:
                raise RuntimeError("seat phones did not start")
            time.sleep(0.2)
        node = FaultNode(root, workers=3, seats_yaml="\n".join(lines) + "\n").start()
        calls = _size("seat_lost", quick, 6, 24)
        # 25 s on the line: a seat frozen in it is found out (seat_media_timeout_s, 9 s) while
        # the caller is still there to be put through to the next seat
        load = _callers(node, calls, rate=1, limit=4, stay_ms=25_000)
        freezer = SeatFreezer(node, sims)
        freezer.start()
        load.join()
        freezer.halt.set()
        freezer.join(120)
        settled = _settled(node, calls=calls)
        row = _count(node, settled, load)
        requeued = callers = reconnected = 0
        for c in settled:
            causes = [e["data"].get("cause") for e in node.get(f"/api/v1/calls/{c['id']}")["events"]
                      if e["kind"] == "JOURNEY"]
            if "seat_leg_lost" in causes:  # a caller may lose a seat more than once
                requeued += causes.count("seat_leg_lost")
                callers += 1
                last = len(causes) - 1 - causes[::-1].index("seat_leg_lost")
                reconnected += "seat_answered" in causes[last:]
        d = sorted(freezer.detect_s)
        row["seat_lost"] = {"frozen": freezer.frozen, "detected": len(d), "other": dict(freezer.other),
                            "requeued": requeued, "callers": callers, "reconnected": reconnected,
                            "detect_s_median": round(d[len(d) // 2], 1) if d else None,
                            "detect_s_max": round(d[-1], 1) if d else None}
        say(f"  seat_lost: {row['seat_lost']}")
        return row
    finally:
        if freezer is not None:
            freezer.halt.set()
        for sim in sims.values():
            _kill(sim.pid, signal.SIGCONT)
            sim.terminate()
        if node is not None:
            node.stop()
        for sim in sims.values():
            try:
                sim.wait(10)
            except subprocess.TimeoutExpired:
                sim.kill()


CASES: dict[str, Callable[[Path, bool], dict[str, Any] | None]] = {
    "worker_kill": case_worker_kill, "node_kill": case_node_kill, "control_kill": case_control_kill,
    "database_restart": case_database_restart, "broker_restart": case_broker_restart,
    "seat_lost": case_seat_lost,
}


def table(rows: dict[str, dict[str, Any] | None]) -> str:
    head = ["case", "attempted", "refused (503)", "offered", "completed", "abandoned", "called_back", "lost (reason: n)", "ghost_offers",
            "unaccounted"]
    lines = [head]
    for name, r in rows.items():
        if r is None:
            lines.append([name, "skipped", "", "", "", "", "", "", "", ""])
            continue
        lost = ", ".join(f"{k}: {v}" for k, v in sorted(r["lost"].items())) or "0"
        lines.append([name, str(r["attempted"]), str(r["refused"]), str(r["offered"]), str(r["completed"]), str(r["abandoned"]), str(r["called_back"]), lost,
                      str(r["ghost_offers"]), str(r["unaccounted"])])
    return text_table(head, lines[1:])


def runnable_cases() -> list[str]:
    """The cases this machine can run (the database and broker cases need their binaries)."""
    skip = {"database_restart"} if _pg_bin("pg_ctl") is None else set()
    skip |= {"broker_restart"} if shutil.which("mosquitto") is None else set()
    return [name for name in CASES if name not in skip]


def main(as_json: bool = False, quick: bool = False, calls: int | None = None, only: str | None = None) -> int:
    """``calls``: about this many calls in all, spread over the cases (``plan``); ``only``: a
    comma-separated list of cases to run."""
    rows: dict[str, dict[str, Any] | None] = {}
    chosen = [c for c in (only.split(",") if only else CASES) if c]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        print(f"handoff122 bench faults: unknown case(s) {', '.join(unknown)}; cases: {', '.join(CASES)}",
              file=sys.stderr)
        return 2
    PLANNED.clear()
    if calls:
        PLANNED.update(plan(calls, [c for c in runnable_cases() if c in chosen]))
        say(f"bench faults: about {calls} calls: {PLANNED}")
    for name, case in CASES.items():
        if name not in chosen:
            continue
        say(f"bench faults: {name}")
        tmp = tempfile.mkdtemp(prefix=f"h122-fault-{name}-")
        try:
            rows[name] = case(Path(tmp), quick)
        except Exception as e:  # one broken case must not hide the others' figures
            say(f"  {name} failed: {e.__class__.__name__}: {str(e)[:300]}")
            rows[name] = None
        if os.environ.get("HANDOFF_BENCH_KEEP"):  # the node logs, to look into a case
            say(f"  {name}: kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        say(f"  {rows[name]}")
    print(table(rows))
    lost = (rows.get("seat_lost") or {}).get("seat_lost")
    if lost:
        print(f"seat_lost: {lost['frozen']} seat phones frozen mid-talk, {lost['detected']} found out by the media "
              f"watchdog (median {lost['detect_s_median']} s, max {lost['detect_s_max']} s); {lost['requeued']} "
              f"re-queues of {lost['callers']} callers, {lost['reconnected']} of them put through to another seat")
    total = sum(r["offered"] for r in rows.values() if r is not None)
    print(f"calls offered in all: {total}")
    ok = all(r is not None and r["unaccounted"] == 0 and r["ghost_offers"] == 0 for r in rows.values())
    kept = rows.get("control_kill")
    if kept is not None:
        say(f"control_kill: {kept['talking_completed']} of {kept['talking_at_kill']} conversations under way at "
            f"the kill went on to end completed")
        ok = ok and kept["talking_completed"] == kept["talking_at_kill"] and not kept["lost"]
    emit({"bench": "faults", "quick": quick, "calls": calls, "offered": total, "cases": rows, "goal_met": ok},
         as_json)
    return 0
