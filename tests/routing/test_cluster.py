"""Several nodes, one routing truth, on the real PostgreSQL with real node processes (issue 14).

Each node is its own OS process running what a node's control process runs in cluster mode
(``routing.cluster.ClusterNode``: the campaign, the ACD while it leads, the routing client through
which its own callers are routed), with ``ClusterRoutingPort`` as the call flow's routing.  The
test plays the SIP side through each node's stdin: it enqueues callers, answers and hangs up the
seat; a node prints ``DIAL`` when an OFFER reaches its call flow, which the port lets happen only
after the fence's ``start_dialing`` said True -- the moment the node would send the seat's INVITE.  The seat's
history is then read back from the event log, where every step of the fence is a row in one order.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from routing.authority import plain_dsn
from tests.routing.test_authority import db, wait_for  # noqa: F401  (db is a fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]

NODE = r"""
import asyncio, json, logging, os, sys
from sqlalchemy.ext.asyncio import create_async_engine
from routing.acd import Acd, AcdConfig, SeatSpec, SkillPolicy
from routing.cluster import ClusterNode, ClusterRoutingPort
from routing.skills import SKILLS
from routing.status import SeatStatus
from routing.store.writer import EventWriter

url, node_id = sys.argv[1], sys.argv[2]

def say(*words):
    print(*words, flush=True)

class Say(logging.Handler):
    def emit(self, record):
        text = logging.Formatter().format(record).replace("\n", " | ")
        say("LOG", record.levelname, text)

logging.getLogger("routing").addHandler(Say(logging.WARNING))

def make_acd():
    return Acd(AcdConfig(ring_timeout_s=float(os.environ.get("RING_TIMEOUT_S", "60")), rona_not_ready_after=100,
                         reject_delay_s=0.5, policies={s: SkillPolicy(wrap_up_s=0.0) for s in SKILLS}))

SEATS = [SeatSpec("s1", "sip:s1@127.0.0.1", {"intake_guidance": 0}, name="Seat 1", status=SeatStatus.AVAILABLE)]

async def main():
    engine = create_async_engine(url)
    node = None

    def routing_ready(service):
        if service is not None:
            say("ROUTING", node.routing.epoch, round(node.routing.restored_in_s, 4))

    node = ClusterNode(url, engine, node_id, make_acd=make_acd, seats=SEATS,
                       on_elected=lambda e: say("ELECTED", e), on_demoted=lambda e: say("DEMOTED", e),
                       node_grace_s=float(os.environ.get("NODE_GRACE_S", "30")))
    node.routing.on_routing = routing_ready
    port = ClusterRoutingPort(node, make_acd().config, writer=EventWriter(engine, node_id))

    def routed(ev):  # what the call flow hears: an OFFER only once start_dialing said True
        if ev.kind.value == "OFFER":
            say("DIAL", ev.call_id, ev.seat_id, ev.data["epoch"], True)
        elif ev.kind.value == "RINGNOANSWER":
            say("RONA", ev.call_id, ev.seat_id)

    port.on_event(routed)
    live = os.environ.get("LIVE_CALLS")  # a restart: the calls whose media is still alive
    await port.start(live_calls=None if live is None else [c for c in live.split(",") if c])
    await port.open_deliveries()
    say("READY")
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd, *args = line.decode().split()
        if cmd == "enqueue":
            port.enqueue(args[0], "intake_guidance", 3, caller="+4512345678")
        elif cmd == "answer":
            port.seat_answered(args[0], args[1])
        elif cmd == "hangup":  # the seat's part ends: the port releases the seat at the fence first
            port.call_completed(args[0], "caller")
        elif cmd == "abandon":
            port.caller_abandoned(args[0])
        await port.drain()
        say("SENT", cmd, args[0])
    await port.stop()

asyncio.run(main())
"""


class Node:
    """One node's control process (cluster mode) in its own OS process."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.lines: list[tuple[float, str]] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, url: str, name: str, **env: str) -> Node:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", NODE, url, name, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        n = cls(proc, name)
        await n.expect("READY", 20)
        return n

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            self.lines.append((time.monotonic(), raw.decode().strip()))
            self._new.set()

    def said(self, prefix: str) -> list[str]:
        return [line for _, line in self.lines if line.startswith(prefix)]

    async def expect(self, prefix: str, timeout: float, count: int = 1) -> str:
        """Wait until the node said ``count`` lines starting with ``prefix``; the last of them."""
        deadline = time.monotonic() + timeout
        while len(self.said(prefix)) < count:
            if self.proc.returncode is not None or self._reader.done():
                raise AssertionError(f"{self.name} exited; it said {[x for _, x in self.lines]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not say {prefix} ({count}) within {timeout} s; "
                                     f"it said {[x for _, x in self.lines]}")
            self._new.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._new.wait(), 0.5)
        return self.said(prefix)[count - 1]

    async def command(self, *words: str) -> None:
        """Send one command and wait until the node says it is in the command table."""
        assert self.proc.stdin is not None
        before = len(self.said("SENT"))
        self.proc.stdin.write((" ".join(words) + "\n").encode())
        await self.proc.stdin.drain()
        await self.expect("SENT", 15, before + 1)

    def dials(self) -> list[tuple[str, int, bool]]:
        return [(w[1], int(w[3]), w[4] == "True") for w in (line.split() for line in self.said("DIAL"))]

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def enqueued(url: str) -> int:
    """How many enqueue commands the nodes have sent (a caller reached the queue)."""
    async def count() -> int:
        conn = await asyncpg.connect(plain_dsn(url))
        try:
            return int(await conn.fetchval("SELECT count(*) FROM routing_commands WHERE kind = 'enqueue'"))
        finally:
            await conn.close()
    return asyncio.run(count())


async def fence_log(url: str, seat: str = "s1") -> list[tuple[str, str | None, dict]]:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT kind, call_id, data FROM events WHERE (seat_id = $1 AND kind IN "
            "('SEATOFFER', 'SEATDIALING', 'SEATRELEASE', 'OFFERREVOKED')) OR kind = 'ELECTED' ORDER BY seq", seat)
    finally:
        await conn.close()
    return [(r["kind"], r["call_id"], json.loads(r["data"])) for r in rows]


def assert_one_call_at_a_time(log: list[tuple[str, str | None, dict]]) -> list[str]:
    """The fence's history of the seat, in log order: it is dialed for one call at a time, always
    by an offer of the epoch current at that moment; returns the calls in the order dialed."""
    epoch, offered, dialing, dialed = 0, None, None, []
    for kind, call_id, data in log:
        if kind == "ELECTED":
            assert data["epoch"] > epoch, f"epochs went backwards: {log}"
            epoch = data["epoch"]
        elif kind == "SEATOFFER":
            assert data["epoch"] == epoch, f"an offer of epoch {data['epoch']} under epoch {epoch}: {log}"
            assert offered is None and dialing is None, f"a second offer while the seat was held: {log}"
            offered = call_id
        elif kind == "OFFERREVOKED":
            assert call_id == offered, log
            offered = None
        elif kind == "SEATDIALING":
            assert data["epoch"] == epoch and call_id == offered and dialing is None, f"bad dial: {log}"
            offered, dialing = None, call_id
            dialed.append(call_id)
        elif kind == "SEATRELEASE":
            assert call_id in (offered, dialing), f"release of a call the seat did not hold: {log}"
            offered = dialing = None
    return dialed


async def leader_of(nodes: list[Node], timeout: float) -> Node:
    await wait_for(lambda: any(n.said("ROUTING") for n in nodes), timeout, "a node routing for the cluster")
    (leader,) = [n for n in nodes if n.said("ROUTING")]
    return leader


async def test_two_nodes_share_one_seat_one_call_at_a_time(db: str) -> None:  # noqa: F811
    """Callers on both nodes, one seat: each node dials only the offers for its own callers, the
    seat is dialed for one call at a time, in the callers' order, whichever node leads."""
    a, b = await Node.start(db, "node-a"), await Node.start(db, "node-b")
    try:
        leader = await leader_of([a, b], 15)
        follower = b if leader is a else a
        await follower.command("enqueue", "c1")
        await leader.command("enqueue", "c2")
        await follower.command("enqueue", "c3")
        await follower.expect("DIAL", 10)
        await follower.command("answer", "c1", "s1")
        await follower.command("hangup", "c1", "s1")
        await leader.expect("DIAL", 10)
        await leader.command("answer", "c2", "s1")
        await leader.command("hangup", "c2", "s1")
        await follower.expect("DIAL", 10, 2)
        await follower.command("answer", "c3", "s1")
        await follower.command("hangup", "c3", "s1")
        assert follower.dials() == [("c1", 1, True), ("c3", 1, True)]
        assert leader.dials() == [("c2", 1, True)]
        assert assert_one_call_at_a_time(await fence_log(db)) == ["c1", "c2", "c3"]
    finally:
        await a.close()
        await b.close()


async def test_kill_9_of_the_leader_with_callers_queued(db: str) -> None:  # noqa: F811
    """The leader's process dies while the seat talks and three callers wait on the other node:
    the other node routes within 3 s, keeps the conversation, and offers the seat to the waiting
    callers in their order."""
    a = await Node.start(db, "node-a")
    await leader_of([a], 15)
    b = await Node.start(db, "node-b")
    try:
        await b.command("enqueue", "c1")
        await b.expect("DIAL", 10)
        await b.command("answer", "c1", "s1")
        for call in ("c2", "c3", "c4"):
            await b.command("enqueue", call)
        killed = time.monotonic()
        a.signal(signal.SIGKILL)
        await b.expect("ROUTING", 10)
        routing_at = next(t for t, line in b.lines if line.startswith("ROUTING"))
        failover = routing_at - killed
        print(f"\nkill -9 of the leader -> the other node routing: {failover * 1000:.0f} ms "
              f"(restore {b.said('ROUTING')[0].split()[2]} s)")
        assert failover <= 3.0
        assert b.dials() == [("c1", 1, True)]  # the conversation was adopted, not offered again
        await b.command("hangup", "c1", "s1")
        for n, call in enumerate(("c2", "c3", "c4"), start=2):
            line = await b.expect("DIAL", 10, n)
            assert line.split()[1] == call, b.said("DIAL")
            await b.command("answer", call, "s1")
            await b.command("hangup", call, "s1")
        assert [c for c, _, ok in b.dials() if ok] == ["c1", "c2", "c3", "c4"]
        assert assert_one_call_at_a_time(await fence_log(db)) == ["c1", "c2", "c3", "c4"]
    finally:
        await a.close()
        await b.close()


async def test_a_frozen_leader_is_fenced(db: str) -> None:  # noqa: F811
    """The leader is frozen (SIGSTOP) while the seat talks; the seat hangs up and a caller waits.
    The other node takes over after the lease and offers the seat.  Woken up (SIGCONT), the old
    leader finds the command it missed, decides with its stale ACD, and its offer is fenced: no
    offer with its old epoch reaches the seat, and it reports its demotion."""
    a = await Node.start(db, "node-a")
    await leader_of([a], 15)
    b = await Node.start(db, "node-b")
    try:
        await b.command("enqueue", "c1")
        await b.expect("DIAL", 10)
        await b.command("answer", "c1", "s1")
        await b.command("enqueue", "c2")
        a.signal(signal.SIGSTOP)
        frozen = time.monotonic()
        await b.command("hangup", "c1", "s1")  # the frozen leader will find this one when it wakes
        try:
            await b.expect("ROUTING", 10)
        except AssertionError:
            conn = await asyncpg.connect(plain_dsn(db))
            for r in await conn.fetch("SELECT pid, application_name, state, backend_xid, xact_start, state_change, "
                                      "query FROM pg_stat_activity WHERE datname = current_database()"):
                print(dict(r))
            for r in await conn.fetch("SELECT locktype, objid, pid, mode, granted FROM pg_locks "
                                      "WHERE locktype = 'advisory' OR NOT granted"):
                print(dict(r))
            await conn.close()
            raise
        took = next(t for t, line in b.lines if line.startswith("ROUTING")) - frozen
        print(f"\nSIGSTOP of the leader -> the other node routing: {took * 1000:.0f} ms")
        line = await b.expect("DIAL", 10, 2)
        assert line.split()[1] == "c2" and line.split()[4] == "True"
        new_epoch = int(line.split()[3])
        await b.command("enqueue", "c3")  # waits behind c2, for the stale leader to see too
        a.signal(signal.SIGCONT)
        await a.expect("DEMOTED", 10)
        await b.command("answer", "c2", "s1")
        await b.command("hangup", "c2", "s1")
        await b.expect("DIAL", 10, 3)
        await b.command("hangup", "c3", "s1")
        assert all(epoch == new_epoch for _, epoch, ok in b.dials()[1:] if ok), b.dials()
        assert not a.said("DIAL") and not a.said("OFFER"), a.lines
        assert assert_one_call_at_a_time(await fence_log(db)) == ["c1", "c2", "c3"]
        fenced = [line for line in a.said("LOG") if "fenced" in line or "no longer" in line]
        print(f"the old leader after SIGCONT: {fenced or 'demoted before it decided anything'}")
    finally:
        await a.close()
        await b.close()


async def test_an_offer_of_a_deposed_leader_never_rings_the_seat(db: str) -> None:  # noqa: F811
    """The leader commits an offer for a caller on a node that is frozen, then the leader dies.
    The next leader revokes that offer and makes its own; the woken node receives both, in order:
    the old one is refused by the fence (never reaches its call flow), the new one is dialed."""
    a = await Node.start(db, "node-a")
    await leader_of([a], 15)
    b, c = await Node.start(db, "node-b"), await Node.start(db, "node-c")
    try:
        await c.command("enqueue", "c0")
        await c.expect("DIAL", 10)
        await c.command("answer", "c0", "s1")
        await b.command("enqueue", "c1")  # waits: the seat talks
        b.signal(signal.SIGSTOP)
        await c.command("hangup", "c0", "s1")  # the leader offers c1 to the seat; b cannot dial it
        await wait_for(lambda: _offered(db, "c1", 1), 10, "the offer of epoch 1 committed")
        a.signal(signal.SIGKILL)
        await c.expect("ROUTING", 10)
        await wait_for(lambda: _offered(db, "c1", 2), 10, "the offer of epoch 2 committed")
        b.signal(signal.SIGCONT)
        line = await b.expect("DIAL", 15)
        assert line.split()[1:4] == ["c1", "s1", "2"]
        assert [line for line in b.said("LOG") if "offer fenced at the seat" in line], b.lines
        assert b.dials() == [("c1", 2, True)]
        await b.command("hangup", "c1", "s1")
        assert assert_one_call_at_a_time(await fence_log(db)) == ["c0", "c1"]
    finally:
        for n in (a, b, c):
            await n.close()


async def _offered(url: str, call_id: str, epoch: int) -> bool:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM events WHERE kind = 'SEATOFFER' AND call_id = $1 AND (data::jsonb->>'epoch')::int = $2",
            call_id, epoch))
    finally:
        await conn.close()


async def test_an_offer_no_node_dials_is_taken_back_and_the_seat_goes_on(db: str) -> None:  # noqa: F811
    """The node of the offered caller is frozen and never dials: the leader's ring timer takes the
    offer back and withdraws it at the fence too, so the seat can be offered again (without the
    withdrawal the fence would hold it for that call forever).  The frozen node, woken, refuses
    the withdrawn offers it finds and dials only a current one."""
    a = await Node.start(db, "node-a", RING_TIMEOUT_S="1.0")
    await leader_of([a], 15)
    b, c = await Node.start(db, "node-b", RING_TIMEOUT_S="1.0"), await Node.start(db, "node-c", RING_TIMEOUT_S="1.0")
    try:
        await c.command("enqueue", "c0")
        await c.expect("DIAL", 10)
        await c.command("answer", "c0", "s1")
        await b.command("enqueue", "c1")
        await c.command("enqueue", "c2")
        b.signal(signal.SIGSTOP)
        await c.command("hangup", "c0", "s1")  # s1 is offered to c1, whose node is frozen
        await wait_for(lambda: _offers_of(db, "c1", 2), 20, "c1 offered again after its ring timer")
        b.signal(signal.SIGCONT)
        line = await b.expect("DIAL", 20)
        assert line.split()[1] == "c1"
        await b.command("answer", "c1", "s1")
        await b.command("hangup", "c1", "s1")
        line = await c.expect("DIAL", 15, 2)
        assert line.split()[1] == "c2"
        await c.command("answer", "c2", "s1")
        await c.command("hangup", "c2", "s1")
        assert b.said("RONA"), b.lines  # it heard that offers were taken back
        assert [x for x in b.said("LOG") if "offer fenced at the seat" in x], b.lines  # and refused them
        assert len(b.dials()) == 1, b.lines
        history = await fence_log(db)
        assert any(k == "SEATRELEASE" and d.get("withdrawn") for k, _, d in history), history
        assert assert_one_call_at_a_time(history) == ["c0", "c1", "c2"]
    finally:
        for n in (a, b, c):
            await n.close()


async def _offers_of(url: str, call_id: str, at_least: int) -> bool:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        n = await conn.fetchval("SELECT count(*) FROM events WHERE kind = 'SEATOFFER' AND call_id = $1", call_id)
    finally:
        await conn.close()
    return int(n) >= at_least


async def test_a_node_that_restarts_without_its_calls_closes_them_and_frees_the_seat(db: str) -> None:  # noqa: F811
    """A node that is not the leader dies (kill -9) with a caller talking to the seat and one
    waiting; it comes back with no call alive.  It closes both as lost (callbacks), releases the
    seat at the fence, and the seat goes to the next caller of the other node."""
    a = await Node.start(db, "node-a")
    await leader_of([a], 15)
    b = await Node.start(db, "node-b")
    try:
        await b.command("enqueue", "c1")
        await b.expect("DIAL", 10)
        await b.command("answer", "c1", "s1")
        await b.command("enqueue", "c2")
        await a.command("enqueue", "c3")
        b.signal(signal.SIGKILL)
        await b.close()
        b = await Node.start(db, "node-b", LIVE_CALLS="")
        line = await a.expect("DIAL", 15)
        assert line.split()[1] == "c3"
        await a.command("answer", "c3", "s1")
        await a.command("hangup", "c3", "s1")
        assert assert_one_call_at_a_time(await fence_log(db)) == ["c1", "c3"]
        async def closed() -> tuple[set[str], set[str]]:
            conn = await asyncpg.connect(plain_dsn(db))
            try:
                return ({r["call_id"] for r in await conn.fetch(
                    "SELECT call_id FROM events WHERE kind = 'CALLEND' AND data::jsonb->>'reason' = 'lost_node_failure'")},
                        {r["call_id"] for r in await conn.fetch("SELECT call_id FROM events WHERE kind = 'CALLBACK'")})
            finally:
                await conn.close()

        async def both_closed() -> bool:
            lost, callbacks = await closed()
            return lost == {"c1", "c2"} and {"c1", "c2"} <= callbacks

        try:
            await wait_for(both_closed, 10, "c1 and c2 closed as lost, with callbacks")
        except AssertionError:
            print(b.lines, await closed())
            raise
        lost, callbacks = await closed()
        assert lost == {"c1", "c2"}, lost
        assert {"c1", "c2"} <= callbacks, callbacks
    finally:
        await a.close()
        await b.close()


async def test_a_node_gone_for_good_has_its_calls_closed_by_the_leader(db: str) -> None:  # noqa: F811
    """A node that is not the leader dies (kill -9) and does not come back, with a caller talking
    to the seat and one waiting: after the grace period the leader closes both as lost (callbacks),
    frees the seat at the fence, and the seat goes to the next caller of the other node."""
    a = await Node.start(db, "node-a", NODE_GRACE_S="2")
    await leader_of([a], 15)
    b = await Node.start(db, "node-b", NODE_GRACE_S="2")
    try:
        await b.command("enqueue", "c1")
        await b.expect("DIAL", 10)
        await b.command("answer", "c1", "s1")
        await b.command("enqueue", "c2")
        await a.command("enqueue", "c3")
        b.signal(signal.SIGKILL)
        line = await a.expect("DIAL", 20)
        assert line.split()[1] == "c3"
        assert [x for x in a.said("LOG") if "node gone" in x], a.lines
        await a.command("answer", "c3", "s1")
        await a.command("hangup", "c3", "s1")
        assert assert_one_call_at_a_time(await fence_log(db)) == ["c1", "c3"]

        async def closed() -> bool:
            conn = await asyncpg.connect(plain_dsn(db))
            try:
                lost = {r["call_id"] for r in await conn.fetch(
                    "SELECT call_id FROM events WHERE kind = 'CALLEND' AND data::jsonb->>'reason' = 'lost_node_failure'")}
                callbacks = {r["call_id"] for r in await conn.fetch("SELECT call_id FROM events WHERE kind = 'CALLBACK'")}
            finally:
                await conn.close()
            return lost == {"c1", "c2"} and {"c1", "c2"} <= callbacks

        await wait_for(closed, 10, "c1 and c2 closed as lost, with callbacks")
    finally:
        await a.close()
        await b.close()
