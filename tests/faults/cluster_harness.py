"""The cluster fault suite's harness (issue 14): ``handoff122 cluster --nodes 3`` behind its front
door, SIPp seat phones registered there that log every INVITE they get, SIPp callers, and the one
invariant check every fault case ends with.

What a seat phone saw is read from SIPp's own message trace (``-trace_msg``: every message with the
time it arrived), never from the gateway: an INVITE's ``X-Handoff-Call-Id`` says which call rang the
seat and ``X-Handoff-Epoch`` which leader's offer it was.  Which node carried a caller is read from
that node's own log (its worker's ``call_answered`` names the caller's SIP Call-ID); which node led,
from the nodes' logs and the event log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from routing.authority import live_nodes, plain_dsn
from tests.conftest import free_port, own_pg_database, sipp_media_port
from tests.gateway.test_cluster import RunningCluster, _cli, running_cluster
from tests.gateway.test_cluster_routed import dispatcher_uri, leads
from tests.routing.test_cluster import assert_one_call_at_a_time, fence_log
from tests.sipp_driver import SippResult, digits_xml, render, run_sipp

NODES = (1, 2, 3)
SEATS = ("s1", "s2")
HUMAN = "0"  # -> intake_guidance, the seats' skill


# -- the seat phones' own record -------------------------------------------------------------------
@dataclass(frozen=True)
class SipMessage:
    at: float
    received: bool
    first_line: str
    headers: dict[str, str]

    @property
    def method(self) -> str:
        """The request's method, or ``"<code>"`` for a response."""
        word = self.first_line.split(" ", 2)
        return word[1] if self.first_line.startswith("SIP/2.0") else word[0]


def read_message_trace(path: Path) -> list[SipMessage]:
    """SIPp's ``-trace_msg`` file: a dashed line with the local time, the direction, the message."""
    out: list[SipMessage] = []
    if not path.exists():
        return out
    for block in path.read_text(errors="replace").split("\n-----------------------------------------------"):
        lines = block.strip("-\n").split("\n")
        if len(lines) < 4:
            continue
        try:
            at = datetime.strptime(lines[0].strip().replace("\t", " "), "%Y-%m-%d %H:%M:%S.%f").timestamp()
        except ValueError:
            continue
        headers: dict[str, str] = {}
        for ln in lines[4:]:
            if not ln.strip():
                break
            name, _, value = ln.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        out.append(SipMessage(at, "received" in lines[1], lines[3].strip(), headers))
    return out


@dataclass
class SeatCall:
    """One INVITE that reached a seat phone: when, for which call, by which leader's offer, and
    when the seat's part of it ended (BYE or CANCEL received; None while it lasts)."""

    seat: str
    sip_call_id: str
    call_id: str | None
    epoch: int | None
    rang_at: float
    answered: bool = False
    ended_at: float | None = None


@dataclass
class SeatPhone:
    """A seat phone: one SIPp taking every INVITE (``uas_seat_ring.xml``: rings ``ring_ms``, then
    answers, never hangs up), registered at the front door by another SIPp (``uac_seat_register.xml``)."""

    seat: str
    port: int
    trace: Path
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, c: RunningCluster, seat: str, ring_ms: int) -> SeatPhone:
        port = free_port()
        work = c.data_dir.parent / f"seat-{seat}"
        work.mkdir()
        scenario = render("uas_seat_ring.xml", ring_ms=str(ring_ms))
        trace = work / "messages.log"
        proc = subprocess.Popen(["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-cp", str(free_port()), "-mi", "127.0.0.1",
                                 "-mp", str(sipp_media_port()), "-nostdin", "-trace_msg", "-message_file", str(trace),
                                 "-trace_err", "-error_file", str(work / "errors.log")],
                                cwd=work, stdout=subprocess.DEVNULL, stderr=(work / "stderr.log").open("wb"))
        c.softphones.append(proc)  # killed with the cluster
        phone = cls(seat, port, trace, proc)
        reg = run_sipp("uac_seat_register.xml", c.sip_port, seat=seat, contact_port=str(port), timeout=20)
        assert reg.ok, reg.stdout + reg.log
        return phone

    def calls(self) -> list[SeatCall]:
        by_id: dict[str, SeatCall] = {}
        for m in read_message_trace(self.trace):
            sip_id = m.headers.get("call-id", "")
            if m.received and m.method == "INVITE" and sip_id not in by_id:
                epoch = m.headers.get("x-handoff-epoch")
                by_id[sip_id] = SeatCall(self.seat, sip_id, m.headers.get("x-handoff-call-id"),
                                         int(epoch) if epoch else None, m.at)
            elif sip_id in by_id and m.received and m.method in ("BYE", "CANCEL") and by_id[sip_id].ended_at is None:
                by_id[sip_id].ended_at = m.at
            elif sip_id in by_id and not m.received and m.method == "200" and "INVITE" in m.headers.get("cseq", ""):
                by_id[sip_id].answered = True
        return sorted(by_id.values(), key=lambda x: x.rang_at)

    def ringing(self) -> list[SeatCall]:
        return [x for x in self.calls() if not x.answered and x.ended_at is None]


# -- callers ----------------------------------------------------------------------------------------
@dataclass
class Caller:
    """A SIPp caller through the front door: asks for a person, stays ``stay_s``, hangs up.  Its
    SIP Call-ID starts with ``name``; ``result.ok`` only if it hung up itself (a BYE from the
    gateway before that, or no answer to its own BYE, fails the SIPp call)."""

    name: str
    stay_s: float
    result: SippResult | None = None
    thread: threading.Thread | None = None

    def start(self, c: RunningCluster) -> Caller:
        def run() -> None:
            self.result = run_sipp("uac_122_dtmf.xml", c.sip_port, service="122", first="1200",
                                   stay=str(int(self.stay_s * 1000)), digits=digits_xml(HUMAN, 300),
                                   timeout=self.stay_s + 90, extra=("-cid_str", f"{self.name}-%u-%p@%s"))
        self.thread = threading.Thread(target=run, name=self.name, daemon=True)
        self.thread.start()
        return self

    def join(self, timeout: float = 180) -> SippResult:
        assert self.thread is not None
        self.thread.join(timeout)
        assert self.result is not None, f"caller {self.name} still running after {timeout} s"
        return self.result


def carrier(c: RunningCluster, caller: Caller) -> tuple[int, str] | None:
    """(node, call id) of the node whose worker answered this caller (its own log says so)."""
    for i in NODES:
        for x in c.node_log(i):
            if x.get("event") == "call_answered" and str(x.get("sip_call_id", "")).startswith(caller.name + "-"):
                return i, str(x["call_id"])
    return None


def bridged(c: RunningCluster, call_id: str) -> bool:
    return any(x.get("event") == "bridged" and x.get("call_id") == call_id for i in NODES for x in c.node_log(i))


# -- the database's record ---------------------------------------------------------------------------
def query(url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(plain_dsn(url))
        try:
            return [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
    return asyncio.run(run())


def elections(url: str) -> list[tuple[int, str, float]]:
    """(epoch, node, at) of every election, in log order."""
    return [(json.loads(r["data"])["epoch"], json.loads(r["data"])["node_id"], float(r["at"]))
            for r in query(url, "SELECT data, at FROM events WHERE kind = 'ELECTED' ORDER BY seq")]


# -- the cluster under test ---------------------------------------------------------------------------
@dataclass
class FaultCluster:
    c: RunningCluster
    phones: dict[str, SeatPhone]
    leader: int
    callers: list[Caller] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.c.db_url

    def followers(self) -> list[int]:
        return [i for i in NODES if i != self.leader]

    def steer(self, *to: int) -> None:
        """Only these nodes in the front door's set (an operator draining the others): new callers land there."""
        for i in NODES:
            with contextlib.suppress(Exception):  # a dead node's entry may be gone
                self.c.rpc.call("dispatcher.set_state", "ap" if i in to else "d", 1, dispatcher_uri(self.c, f"node-{i}"))
        self.c.wait_for(lambda: all(self.c.in_set().get(f"node-{i}", False) == (i in to) for i in NODES))

    def call(self, name: str, stay_s: float) -> Caller:
        caller = Caller(name, stay_s).start(self.c)
        self.callers.append(caller)
        return caller

    def bridged(self, caller: Caller, timeout: float = 60) -> tuple[int, str]:
        """(node, call id) once the caller talks to a seat; if its call ended before that, the
        timeout's message shows what SIPp said."""
        def talking() -> tuple[int, str] | None:
            on = carrier(self.c, caller)
            if on is not None and bridged(self.c, on[1]):
                return on
            assert caller.result is None, f"caller {caller.name} ended before it talked to a seat: " \
                f"{caller.result.stdout[-1500:]} {caller.result.stderr[-500:]} {caller.result.log}"
            return None
        return self.c.wait_for(talking, timeout=timeout)

    def kill(self, i: int, sig: signal.Signals = signal.SIGKILL) -> float:
        """``sig`` to every process of node i (supervisor, control, workers, API; its Kamailio
        follows its supervisor by parent-death signal when killed); the time it was sent."""
        pids = self.c.node_pids(i)
        at = time.time()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return at

    def new_leader(self, after: float, timeout: float = 60) -> tuple[int, dict[str, Any]]:
        """The node whose log says it routes for the cluster since ``after``, and that line."""
        def found() -> tuple[int, dict[str, Any]] | None:
            for i in NODES:
                for x in leads(self.c, i):
                    if float(x["ts"]) > after:
                        return i, x
            return None
        return self.c.wait_for(found, timeout=timeout, every=0.05)

    def seat_calls(self) -> list[SeatCall]:
        return sorted((x for p in self.phones.values() for x in p.calls()), key=lambda x: x.rang_at)

    def failover(self, what: str, killed_at: float, old_epoch: int) -> tuple[int, float]:
        """Print the failover once the case is over: kill -> the new leader routes, kill -> the next
        seat INVITE (and the first one of the new leader's offers); returns (the new leader, seconds
        from the kill to its routing line)."""
        node, line = self.new_leader(killed_at)
        routing = float(line["ts"]) - killed_at
        new_epoch = int(line["epoch"])
        assert new_epoch > old_epoch, (new_epoch, old_epoch)
        later = [x for x in self.seat_calls() if x.rang_at > killed_at]
        first_new = next((x for x in later if (x.epoch or 0) >= new_epoch), None)

        def after(x: SeatCall | None) -> str:
            return f"{x.rang_at - killed_at:.3f} s" if x is not None else "none"
        print(f"\n[{what}] node-{self.leader} (epoch {old_epoch}) -> node-{node} (epoch {new_epoch}) routes for the "
              f"cluster {routing:.3f} s after the fault (restore {line.get('restore_s')} s); next seat INVITE "
              f"{after(later[0] if later else None)} after it, first one of the new leader's offers {after(first_new)}")
        return node, routing


def leader_now(c: RunningCluster) -> int | None:
    """The node of the last election, once its log says it routes for the cluster in that epoch."""
    last = elections(c.db_url)
    if not last:
        return None
    epoch, node = last[-1][0], int(last[-1][1].rsplit("-", 1)[1])
    return node if any(int(x.get("epoch", 0)) == epoch for x in leads(c, node)) else None


def supervisor_token(c: RunningCluster) -> str:
    return _cli("token", "create", "--role", "supervisor", "--db-url", c.db_url, "--data-dir",
                str(c.data_dir)).stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def fault_cluster(tmp: Path, mqtt_url: str, *, ring_ms: int = 1500) -> Iterator[FaultCluster]:
    """``handoff122 cluster --nodes 3`` (leader routing, one worker a node, no wrap-up, a dead node's
    calls closed after 3 s) on a database of its own; seats s1 and s2 are SIPp phones registered
    at the front door and made available through the API door; the leader is out of the front
    door's set, so every caller lands on a node that does not lead."""
    env = {"HANDOFF_WRAP_UP_S": "0", "HANDOFF_CLUSTER_NODE_GRACE_S": "3",
           # a SIPp seat sends no RTP: the seat-media watchdog (a media fault) is not what is tested here
           "HANDOFF_SEAT_MEDIA_TIMEOUT_S": "0"}
    with own_pg_database("handoff_faults") as url, \
            running_cluster(tmp, url, mqtt_url, workers=1, nodes=3, seats=SEATS, env=env) as c:
        c.wait_for(lambda: leader_now(c), timeout=90)
        phones = {s: SeatPhone.start(c, s, ring_ms) for s in SEATS}
        for i in NODES:
            for s in SEATS:
                c.wait_for(lambda i=i, s=s: any(x.get("event") == "seat_registered" and x.get("seat_id") == s
                                                for x in c.node_log(i)), timeout=30)
        auth = {"Authorization": f"Bearer {supervisor_token(c)}"}
        api = f"http://127.0.0.1:{c.api_port}"
        c.wait_for(lambda: httpx.get(f"{api}/api/v1/seats", headers=auth, timeout=10).json(), timeout=30)
        for s in SEATS:
            r = httpx.put(f"{api}/api/v1/seats/{s}/status", headers=auth, timeout=10,
                          json={"status": "available", "reason": None})
            assert r.status_code == 200, r.text
        c.wait_for(lambda: {x["id"]: x["status"] for x in httpx.get(f"{api}/api/v1/seats", headers=auth,
                                                                    timeout=10).json()} == dict.fromkeys(SEATS, "available"))
        # the leader of the moment (on this loaded machine a stalled leader can lose its lease while
        # the cluster starts: the last election counts, once its winner routes)
        fc = FaultCluster(c, phones, c.wait_for(lambda: leader_now(c), timeout=60))
        fc.steer(*fc.followers())
        try:
            yield fc
        finally:
            for caller in fc.callers:  # a failed case: let the callers end before the cluster goes
                if caller.thread is not None:
                    caller.thread.join(0 if caller.result is not None else 60)


# -- the invariants ----------------------------------------------------------------------------------
def assert_cluster_invariants(fc: FaultCluster, killed: frozenset[int] = frozenset(), timeout: float = 60) -> dict[str, str]:
    """What must hold after every fault case; returns each caller's outcome.

    - no seat ever has two overlapping INVITEs or dialogs: the seat phones' own traces, and the
      fence's history of every seat (one offer / one dial at a time, by the epoch of the moment);
      every INVITE a seat got matches a dial the fence allowed for that call in that epoch;
    - epochs never go backwards in the event log (elections, offers, dials, revocations);
    - every caller ends exactly once: one call on one node, one CALLEND, answered, abandoned or
      called back;
    - no caller on a surviving node is dropped: its SIPp call succeeded (it hung up itself).
    """
    c, url = fc.c, fc.url
    results = {x.name: x.join() for x in fc.callers}

    # seats: the phones' view
    for phone in fc.phones.values():
        open_until = 0.0
        for sc in phone.calls():
            assert sc.epoch is not None and sc.call_id, f"seat {phone.seat}: INVITE without epoch or call id {sc}"
            assert sc.rang_at >= open_until, f"seat {phone.seat}: an INVITE while another call rang or talked: {phone.calls()}"
            open_until = sc.ended_at if sc.ended_at is not None else float("inf")
    # seats: the fence's view, and every INVITE a dial the fence allowed in that epoch
    for seat in fc.phones:
        log = asyncio.run(fence_log(url, seat))
        assert_one_call_at_a_time(log)
        dials = {(call_id, d["epoch"]) for kind, call_id, d in log if kind == "SEATDIALING"}
        for sc in fc.phones[seat].calls():
            assert (sc.call_id, sc.epoch) in dials, f"seat {seat} rang for {sc} without a dial at the fence: {log}"
    # epochs never go backwards
    epoch = 0
    for r in query(url, "SELECT seq, kind, data FROM events WHERE kind IN ('ELECTED', 'SEATOFFER', 'SEATDIALING', "
                        "'OFFERREVOKED', 'SEATRELEASE') ORDER BY seq"):
        e = json.loads(r["data"]).get("epoch")
        if e is None:
            continue
        assert e >= epoch and (r["kind"] != "ELECTED" or e > epoch), f"epoch {e} after {epoch} at seq {r['seq']}"
        epoch = e
    delivered = [r["epoch"] for r in query(url, "SELECT epoch FROM routing_deliveries ORDER BY seq")]
    assert delivered == sorted(delivered), f"deliveries went back to an older epoch: {delivered}"

    # callers: one call each, on one node
    carried = {}
    for x in fc.callers:
        on = [(i, y["call_id"]) for i in NODES for y in c.node_log(i)
              if y.get("event") == "call_answered" and str(y.get("sip_call_id", "")).startswith(x.name + "-")]
        assert len(on) == 1, f"caller {x.name} answered by {on}"
        carried[x.name] = on[0]
    ids = [call_id for _, call_id in carried.values()]

    def ended() -> dict[str, list[dict[str, Any]]] | None:
        rows = query(url, "SELECT call_id, kind, data FROM events WHERE call_id = ANY($1::text[]) AND kind IN "
                          "('CALLEND', 'CONNECT', 'ABANDON', 'CALLBACK') ORDER BY seq", ids)
        by: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        for r in rows:
            by[r["call_id"]].append(r)
        return by if all(any(r["kind"] == "CALLEND" for r in v) for v in by.values()) else None
    by = c.wait_for(ended, timeout=timeout, every=0.5)
    records = {r["id"]: r for r in query(url, "SELECT id, ended_at, end_reason, seat_answered_at FROM calls "
                                              "WHERE id = ANY($1::text[])", ids)}
    callbacks = {r["call_id"] for r in query(url, "SELECT call_id FROM callbacks WHERE call_id = ANY($1::text[])", ids)}
    outcome: dict[str, str] = {}
    for name, (node, call_id) in carried.items():
        kinds = [r["kind"] for r in by[call_id]]
        assert kinds.count("CALLEND") == 1, f"{name} ({call_id} on node-{node}) ended {kinds.count('CALLEND')} times"
        rec = records.get(call_id)
        assert rec is not None and rec["ended_at"] is not None, f"{name}: no ended call record {rec}"
        outcome[name] = ("called back" if call_id in callbacks else "answered" if "CONNECT" in kinds
                         else "abandoned" if "ABANDON" in kinds else "")
        assert outcome[name], f"{name} ({call_id}) ended neither answered, abandoned nor called back: {by[call_id]} {rec}"
        if "CONNECT" in kinds:  # the seat phone's own trace agrees: that call rang it and was answered
            assert any(x.call_id == call_id and x.answered for x in fc.seat_calls()), \
                f"{name} ({call_id}) connected, but no seat phone answered it: {fc.seat_calls()}"
        outcome[name] += f" ({rec['end_reason']}, node-{node})"
        if node not in killed:  # no caller on a surviving node is dropped
            r = results[name]
            assert r.ok, f"caller {name} on surviving node-{node} was dropped: {r.stdout[-1500:]} {r.log}"
    print("callers:", outcome)
    return outcome


def campaigning(url: str) -> set[str]:
    """The nodes whose campaign session is open now (alive, leading or not)."""
    async def run() -> set[str]:
        conn = await asyncpg.connect(plain_dsn(url))
        try:
            return await live_nodes(conn)
        finally:
            await conn.close()
    return asyncio.run(run())
