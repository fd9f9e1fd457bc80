"""Network partitions and a PostgreSQL restart under a two-node cluster (issue 14's fault suite).

Run *inside a network namespace of the test's own* (tests/faults/test_cluster_partitions.py):
``python -m tests.faults.partitions <case> <work dir>``; prints one JSON line of facts (the fence's
history of the seat, the seat's INVITEs, the callers' results, the nodes' telling log lines and
the measured times), which the test asserts on.

Why a namespace: a partition must cut one node from PostgreSQL (or Mosquitto) while the other
node, the seat and the callers keep talking to it, on one machine.  The namespace has its own
127.0.0.0/8, all of it on its own ``lo``; PostgreSQL and Mosquitto listen on 0.0.0.0 there, and
node *i* reaches both through its own loopback alias ``127.0.0.1<i>`` (node-a 127.0.0.11, node-b
127.0.0.12).  The test itself reads the database through 127.0.0.1, which no rule touches.  A
partition is then an nftables rule pair in the namespace dropping TCP between that alias and the
service's port, both ways, so PostgreSQL's side of the node's sessions (the advisory lock of the
campaign) hears nothing either and drops them through its keepalives / ``tcp_user_timeout``.

No front door: each node dials the seat at its own contact, so the seat phone sees every INVITE
any node sends (the front door's one-call-per-seat guard would turn a double offer into a 486
before the phone could show it).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import create_async_engine

from routing.authority import last_elected, live_nodes, plain_dsn
from tests.conftest import free_port
from tests.faults.services import OwnMosquitto, OwnPostgres
from tests.gateway.test_cluster_nodes import routing_lines
from tests.gateway.test_handoff import HUMAN, seats_yaml
from tests.node_harness import RunningNode, caller_result, seat_reports, start_caller, start_node, start_seat
from tests.routing.test_cluster import enqueued, fence_log

ALIAS = {"node-a": "127.0.0.11", "node-b": "127.0.0.12"}
TABLE = "h122_partition"


def nft(*args: str) -> None:
    subprocess.run(["nft", *args], check=True, capture_output=True, timeout=10)


class Partition:
    """Drops TCP between one node's alias and one service port, both ways, until healed."""

    def __init__(self) -> None:
        nft("add", "table", "inet", TABLE)
        nft("add", "chain", "inet", TABLE, "out", "{ type filter hook output priority 0 ; policy accept ; }")

    def cut(self, node: str, port: int) -> float:
        alias = ALIAS[node]
        nft("add", "rule", "inet", TABLE, "out", "ip", "daddr", alias, "tcp", "dport", str(port), "drop")
        nft("add", "rule", "inet", TABLE, "out", "ip", "saddr", alias, "tcp", "sport", str(port), "drop")
        return time.time()

    def heal(self) -> float:
        nft("flush", "chain", "inet", TABLE, "out")
        return time.time()

    def close(self) -> None:
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True, timeout=10)


class Cluster:
    """PostgreSQL, Mosquitto, two nodes (node-a leads), seat s1 and the callers, all in this namespace."""

    def __init__(self, work: Path, stack: ExitStack, hangup_after: float) -> None:
        self.work = work
        self.pg = OwnPostgres(listen="0.0.0.0")
        stack.callback(self.pg.close)
        self.pg.start()
        self.mqtt = OwnMosquitto(listen="0.0.0.0")
        stack.callback(self.mqtt.close)
        self.mqtt.start()
        self.url = self.pg.url  # the test's own view, through 127.0.0.1
        asyncio.run(self._migrate())
        self.partition = Partition()
        stack.callback(self.partition.close)
        self.seat_port = free_port()
        self.nodes: dict[str, RunningNode] = {}
        self.callers: dict[str, Any] = {}
        stack.callback(self.stop)
        self.start_node("node-a")
        self.wait(lambda: routing_lines(self.a), 60)
        self.start_node("node-b")
        start_seat(self.a, "s1", self.seat_port, "--answer-after", "0.5", "--hangup-after", str(hangup_after))

    async def _migrate(self) -> None:
        from gateway.schema import upgrade_schema

        engine = create_async_engine(self.url)
        try:
            await upgrade_schema(engine)
        finally:
            await engine.dispose()

    @property
    def a(self) -> RunningNode:
        return self.nodes["node-a"]

    @property
    def b(self) -> RunningNode:
        return self.nodes["node-b"]

    def start_node(self, name: str) -> None:
        alias = ALIAS[name]
        db = f"postgresql+asyncpg://postgres@{alias}:{self.pg.port}/postgres"
        self.nodes[name] = start_node(
            self.work / name, workers=1, seats_yaml=seats_yaml(("s1", "intake_guidance", self.seat_port)), token=False,
            env={"HANDOFF_WORKER_CALLERS": "4", "HANDOFF_WORKER_MAX_CALLS": "8"},  # one worker, four callers
            args=["--cluster", "true", "--cluster-node-id", name, "--db-url", db, "--mqtt-url",
                  f"mqtt://{alias}:{self.mqtt.port}", "--api-port", "0", "--wrap-up-s", "0"])

    def wait(self, what: Any, timeout: float = 60.0) -> Any:
        return self.a.wait_for(what, timeout=timeout)

    def call(self, node: str, number: str, stay: float = 120) -> None:
        """A caller asking for a person on ``node``; waits until its enqueue is in the command table."""
        before = enqueued(self.url)
        self.callers[number] = start_caller(self.nodes[node], HUMAN, stay=stay, number=number)
        self.wait(lambda: enqueued(self.url) > before, 60)

    def bridged(self, node: str) -> int:
        return sum(1 for x in self.nodes[node].logs() if x.get("event") == "bridged")

    def results(self) -> dict[str, Any]:
        return {n: caller_result(p, timeout=240) for n, p in self.callers.items()}

    def seat_invites(self, at_least: int) -> list[dict[str, Any]]:
        return self.wait(lambda: (r := seat_reports(self.a, "s1")) and len(r) >= at_least and r, 120)

    def stop(self) -> None:
        for p in self.callers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for n in self.nodes.values():
            n.stop()

    def facts(self, invites: int) -> dict[str, Any]:
        """What every case reports: the callers, the seat's INVITEs, the fence's history, the end of
        every call in the event log, and the nodes' telling lines."""
        results = self.results()
        reps = self.seat_invites(invites)
        return {
            "callers": results,
            "invites": [{"caller": r.get("caller"), "call_id": r.get("call_id"), "others": r.get("others")}
                        for r in reps],
            "fence": asyncio.run(fence_log(self.url)),
            "ends": asyncio.run(call_ends(self.url)),
            "elected": asyncio.run(elections(self.url)),
            "lines": {name: [x for x in n.logs() if telling(x)] for name, n in self.nodes.items()},
            "journey_errors": {name: n.journey_errors() for name, n in self.nodes.items()},
        }


def telling(line: dict[str, Any]) -> bool:
    ev = str(line.get("event"))
    return (ev == "routing for the cluster" or "routing authority" in ev or "fenced" in ev or ev.startswith("MQTT")
            or ev in ("bridged", "node gone: its calls are closed as lost", "call_lost"))


async def diagnose(url: str) -> dict[str, Any]:
    """The database's side of a stall: sessions, locks waited for, the fence, the log's tail."""
    conn = await asyncpg.connect(plain_dsn(url), timeout=5)
    try:
        q = {"sessions": "SELECT pid, application_name, state, wait_event_type, wait_event, xact_start::text, "
                         "left(query, 200) AS query FROM pg_stat_activity WHERE datname = current_database()",
             "waiting_locks": "SELECT pid, locktype, mode, relation::regclass::text AS rel FROM pg_locks WHERE NOT granted",
             "fence": "SELECT * FROM seat_offers",
             "events": "SELECT seq, kind, call_id, seat_id, left(data::text, 200) AS data FROM events "
                       "ORDER BY seq DESC LIMIT 40"}
        return {k: [dict(r) for r in await conn.fetch(v)] for k, v in q.items()}
    finally:
        await conn.close()


async def call_ends(url: str) -> dict[str, list[str]]:
    """Every call that started, with the kinds of its ending events (CALLEND, CALLBACK): each call
    of the system must end exactly once."""
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await conn.fetch("SELECT call_id, kind FROM events WHERE kind IN ('CALLSTART', 'CALLEND', 'CALLBACK') "
                                "ORDER BY seq")
    finally:
        await conn.close()
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r["call_id"], [])
        if r["kind"] != "CALLSTART":
            out[r["call_id"]].append(r["kind"])
    return out


async def elections(url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await conn.fetch("SELECT seq, data FROM events WHERE kind = 'ELECTED' ORDER BY seq")
    finally:
        await conn.close()
    return [{"seq": r["seq"], **json.loads(r["data"])} for r in rows]


async def who(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        return {"leader": await last_elected(conn), "live": sorted(await live_nodes(conn))}
    finally:
        await conn.close()


def leader_and_database(c: Cluster) -> dict[str, Any]:
    """node-a leads; a caller of node-b talks to the seat, two more wait on node-b; node-a is cut
    from PostgreSQL; then healed, and one caller of node-a is routed by the new leader."""
    c.call("node-b", "2000")
    c.wait(lambda: c.bridged("node-b") >= 1)
    c.call("node-b", "2001")
    c.call("node-b", "2002")
    cut = c.partition.cut("node-a", c.pg.port)
    line = c.wait(lambda: routing_lines(c.b), 60)[0]
    failover = float(line["ts"]) - cut
    c.wait(lambda: any("no longer the routing authority" in str(x.get("event")) for x in c.a.logs()), 60)
    c.wait(lambda: c.bridged("node-b") >= 3, 120)  # the waiting callers got the seat under the new leader
    healed = c.partition.heal()
    c.wait(lambda: "node-a" in asyncio.run(who(c.url))["live"], 60)  # campaigning again
    rejoined = time.time() - healed
    first = min(float(x["ts"]) for x in c.b.logs() if x.get("event") == "bridged" and float(x["ts"]) >= float(line["ts"]))
    c.call("node-a", "1003")
    return {"failover_s": failover, "first_bridged_under_new_leader_s": first - cut, "rejoined_s": rejoined,
            "cut": cut, "healed": healed,
            "after_heal": asyncio.run(who(c.url)), **c.facts(4)}


def reaches(alias: str, port: int, timeout: float = 1.0) -> bool:
    """A TCP connect from ``alias`` (as its node's would go) to ``port`` succeeds."""
    with socket.socket() as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((alias, port)) == 0


def bus_lines(node: RunningNode) -> list[dict[str, Any]]:
    return [x for x in node.logs() if str(x.get("event")).startswith("MQTT")]


def leader_and_bus(c: Cluster) -> dict[str, Any]:
    """node-a leads and is cut from Mosquitto; callers on both nodes still reach the seat in turn.

    node-a's buses (the leader's: the ACD's events, screen pops; the node's: its calls' journey)
    lose the broker and say so; routing, whose channel is PostgreSQL, goes on.  ``bus_used``: the
    node was connected to the broker before the cut."""
    before = {"a": reaches(ALIAS["node-a"], c.mqtt.port), "b": reaches(ALIAS["node-b"], c.mqtt.port)}
    cut = c.partition.cut("node-a", c.mqtt.port)
    during = {"a": reaches(ALIAS["node-a"], c.mqtt.port), "b": reaches(ALIAS["node-b"], c.mqtt.port)}
    bus_used = bool(bus_lines(c.a))
    c.call("node-a", "1001")
    c.call("node-b", "2001")
    c.call("node-a", "1002")
    lost = None
    if bus_used:
        lost = c.wait(lambda: next((x for x in bus_lines(c.a) if x["event"] != "MQTT connected"
                                    and float(x["ts"]) >= cut), None), 90)
    facts = c.facts(3)
    c.partition.heal()
    return {"cut": cut, "reach_before": before, "reach_during": during, "bus_used": bus_used,
            "bus_lost_after_s": None if lost is None else float(lost["ts"]) - cut,
            "reach_after": {"a": reaches(ALIAS["node-a"], c.mqtt.port)}, "after": asyncio.run(who(c.url)), **facts}


def database_restart(c: Cluster) -> dict[str, Any]:
    """A caller of node-a talks to the seat, callers wait on both nodes; PostgreSQL is stopped
    (immediate: a crash) and, once the talking caller hung up, started again; one more caller
    arrives on node-b while it is down."""
    c.call("node-a", "1001")
    c.wait(lambda: c.bridged("node-a") >= 1)
    c.call("node-b", "2001")
    c.call("node-a", "1002")
    down = time.time()
    c.pg.stop("immediate")
    c.callers["2002"] = start_caller(c.b, HUMAN, stay=120, number="2002")
    c.wait(lambda: c.callers["1001"].poll() is not None, 60)  # the seat hung up on the first caller
    # from the start command on: the nodes may be routing again before pg_ctl -w has noticed it is up
    starting = time.time()
    c.pg.start()
    up = time.time()
    line = c.wait(lambda: [x for n in c.nodes.values() for x in routing_lines(n) if float(x["ts"]) >= starting],
                  60)[0]
    resumed = float(line["ts"]) - starting
    facts = c.facts(4)
    first = min(float(x["ts"]) for n in c.nodes.values() for x in n.logs()
                if x.get("event") == "bridged" and float(x["ts"]) >= starting)
    return {"down_s": starting - down, "pg_start_s": up - starting, "routing_resumed_s": resumed,
            "first_bridged_after_start_s": first - starting, "down": down, "up": up, **facts}


# the seat's talk time: long enough that the cut of case 1 comes while the first caller still talks
CASES = {"leader_and_database": (leader_and_database, 6.0), "leader_and_bus": (leader_and_bus, 3.0),
         "database_restart": (database_restart, 6.0)}


def main(case: str, work: Path) -> int:
    run, hangup_after = CASES[case]
    t0 = time.monotonic()
    try:
        with ExitStack() as stack:
            c = Cluster(work, stack, hangup_after)
            try:
                out = run(c)
            except Exception:
                (work / "diagnosis.json").write_text(json.dumps(asyncio.run(diagnose(c.url)), default=str, indent=1))
                raise
        out["run_s"] = round(time.monotonic() - t0, 1)
    except Exception:
        out = {"error": traceback.format_exc()[-6000:]}
    print(json.dumps(out, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
