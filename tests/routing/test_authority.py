"""The routing authority on the real PostgreSQL: one leader, rising epochs, failover after kill -9
and after a freeze, and fencing of a deposed leader's offers at the seat (issue 14).

Leaders that are killed or frozen are real processes (a small campaigner run with ``python -c``),
so the database sees exactly what it would see from a crashed or paused node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.schema import schema_drift
from routing.authority import (
    RoutingAuthority,
    add_seat,
    claim_offer,
    connect_worker,
    plain_dsn,
    release,
    seat_state,
    start_dialing,
)
from tests.conftest import own_pg_database

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]

ROOT = Path(__file__).resolve().parents[2]

CAMPAIGNER = r"""
import asyncio, sys
from routing.authority import RoutingAuthority, claim_offer, connect_worker

url, node = sys.argv[1], sys.argv[2]

def say(*words):
    print(*words, flush=True)

async def main():
    auth = RoutingAuthority(url, node, on_elected=lambda e: say("ELECTED", e),
                            on_demoted=lambda e: say("DEMOTED", e))
    worker = await connect_worker(url)
    campaign = asyncio.create_task(auth.run())
    say("READY")
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd, epoch, seat, call = line.decode().split()
        try:
            ok = await claim_offer(worker, int(epoch), seat, call)
        except Exception:  # the worker session ended while we were frozen: a new one, same epoch
            worker = await connect_worker(url)
            ok = await claim_offer(worker, int(epoch), seat, call)
        say("CLAIM", ok)
    campaign.cancel()

asyncio.run(main())
"""


class Campaigner:
    """A node's control process reduced to its campaign, in its own OS process."""

    def __init__(self, proc: asyncio.subprocess.Process, node: str) -> None:
        self.proc = proc
        self.node = node
        self.lines: list[str] = []  # everything it said
        self.unread: list[str] = []  # lines no ``expect`` has matched yet

    @classmethod
    async def start(cls, url: str, node: str) -> Campaigner:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CAMPAIGNER, url, node, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        c = cls(proc, node)
        await c.expect("READY", 15)
        return c

    async def expect(self, word: str, timeout: float) -> str:
        """The first line starting with ``word`` that no earlier ``expect`` matched (said already or next)."""
        assert self.proc.stdout is not None
        for line in self.unread:
            if line.startswith(word):
                self.unread.remove(line)
                return line
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.proc.stdout.readline()
                if not raw:
                    raise AssertionError(f"{self.node} exited; it said {self.lines}")
                line = raw.decode().strip()
                self.lines.append(line)
                if line.startswith(word):
                    return line
                self.unread.append(line)

    async def elected(self, timeout: float) -> int:
        return int((await self.expect("ELECTED", timeout)).split()[1])

    async def claim(self, epoch: int, seat: str, call: str) -> bool:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"claim {epoch} {seat} {call}\n".encode())
        await self.proc.stdin.drain()
        return (await self.expect("CLAIM", 15)).split()[1] == "True"

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    async def close(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            await self.proc.wait()


class Partition:
    """A TCP relay to PostgreSQL that can go silent without closing anything, like a cut cable
    or a dropped route: bytes stop flowing both ways, both sockets stay open."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.cut = False
        self.server: asyncio.Server | None = None
        self.sockets: list[asyncio.StreamWriter] = []  # held, so nothing closes behind the cut

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self) -> Partition:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.sockets += [writer, up_writer]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                if not self.cut:
                    dst.write(data)
                    await dst.drain()
            if not self.cut:
                dst.close()

        with contextlib.suppress(OSError):
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for w in self.sockets:
            w.close()


@pytest.fixture
def db() -> Iterator[str]:
    """A database of its own for each test, migrated to head (advisory locks are per database)."""
    with own_pg_database("handoff_auth", migrated=True) as url:
        yield url


async def wait_for(cond, timeout: float, what: str) -> None:
    """Poll ``cond`` (a sync or async predicate) until true; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = cond()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def epochs_logged(url: str) -> list[int]:
    conn = await asyncpg.connect(plain_dsn(url))
    try:
        rows = await conn.fetch("SELECT data FROM events WHERE kind = 'ELECTED' ORDER BY seq")
    finally:
        await conn.close()
    return [int(json.loads(r["data"])["epoch"]) for r in rows]


async def test_schema_has_no_drift(db: str) -> None:
    engine = create_async_engine(db)
    try:
        drift = await schema_drift(engine)
    finally:
        await engine.dispose()
    assert drift == []


async def test_two_campaigners_one_leader_and_epochs_rise(db: str) -> None:
    a = RoutingAuthority(db, "node-a")
    b = RoutingAuthority(db, "node-b")
    tasks = [asyncio.create_task(x.run()) for x in (a, b)]
    try:
        await wait_for(lambda: a.is_leader or b.is_leader, 10, "a leader")
        # The standby keeps campaigning (it polls every 0.1 s) and still does not win.
        await asyncio.sleep(0.5)  # a window for a second leader to appear; it must not
        assert [a.is_leader, b.is_leader].count(True) == 1
        first, second = (a, b) if a.is_leader else (b, a)
        e1 = first.epoch
        assert e1 == 1

        await first.stop()
        await wait_for(lambda: second.is_leader, 5, "the standby to take over")
        assert second.epoch is not None and second.epoch > e1
        assert not first.is_leader

        third = RoutingAuthority(db, "node-c")
        tasks.append(asyncio.create_task(third.run()))
        await asyncio.sleep(0.5)
        assert not third.is_leader and second.is_leader
        e2 = second.epoch
        await second.stop()
        await wait_for(lambda: third.is_leader, 5, "node-c to take over")
        assert third.epoch is not None and third.epoch > e2
        await third.stop()
        assert await epochs_logged(db) == [1, 2, 3]
    finally:
        for x in (a, b):
            await x.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_kill9_of_the_leader_fails_over_within_3s(db: str) -> None:
    a = await Campaigner.start(db, "node-a")
    b = None
    try:
        ea = await a.elected(10)
        b = await Campaigner.start(db, "node-b")
        a.signal(signal.SIGKILL)
        t0 = time.monotonic()
        eb = await b.elected(5)
        took = time.monotonic() - t0
        print(f"\nfailover after kill -9 of the leader: {took * 1000:.0f} ms (epoch {ea} -> {eb})")
        assert eb > ea
        assert took < 3.0
    finally:
        await a.close()
        if b is not None:
            await b.close()


async def test_partitioned_leader_steps_down_before_the_standby_takes_over(db: str) -> None:
    target = make_url(db)
    partition = await Partition(target.host or "127.0.0.1", target.port or 5432).start()
    via_partition = target.set(host="127.0.0.1", port=partition.port).render_as_string(hide_password=False)
    demoted_at: list[float] = []
    a = RoutingAuthority(via_partition, "node-a", on_demoted=lambda e: demoted_at.append(time.monotonic()))
    b = RoutingAuthority(db, "node-b")
    ta = asyncio.create_task(a.run())
    tb: asyncio.Task[None] | None = None
    try:
        await wait_for(lambda: a.is_leader, 10, "node-a to lead through the relay")
        ea = a.epoch
        tb = asyncio.create_task(b.run())
        partition.cut = True
        t0 = time.monotonic()
        await wait_for(lambda: demoted_at, 5, "the cut-off leader to step down")
        await wait_for(lambda: b.is_leader, 10, "node-b to take over")
        elected = time.monotonic() - t0
        stepped_down = demoted_at[0] - t0
        print(f"\npartition of the leader: it stepped down after {stepped_down * 1000:.0f} ms, "
              f"the standby was elected after {elected * 1000:.0f} ms (epoch {ea} -> {b.epoch})")
        assert b.epoch is not None and ea is not None and b.epoch > ea
        assert stepped_down < elected  # never two nodes that both believe they lead
        assert elected < 10.0
    finally:
        await a.stop()
        await b.stop()
        for t in (ta, tb):
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in (ta, tb) if t is not None), return_exceptions=True)
        await partition.close()


async def test_frozen_leader_is_deposed_and_fenced(db: str) -> None:
    worker = await connect_worker(db)
    a = await Campaigner.start(db, "node-a")
    b = None
    try:
        await add_seat(worker, "s1")
        ea = await a.elected(10)
        b = await Campaigner.start(db, "node-b")
        a.signal(signal.SIGSTOP)
        t0 = time.monotonic()
        eb = await b.elected(12)
        took = time.monotonic() - t0
        print(f"\nfailover after kill -STOP of the leader: {took * 1000:.0f} ms (epoch {ea} -> {eb})")
        assert eb > ea
        assert took < 10.0
        a.signal(signal.SIGCONT)

        # Its offer with the old epoch fails, and it finds out it no longer leads.
        assert await a.claim(ea, "s1", "call-late") is False
        assert (await a.expect("DEMOTED", 10)) == f"DEMOTED {ea}"
        assert (await seat_state(worker, "s1"))["state"] == "available"
        assert await start_dialing(worker, "s1", "call-late") is False

        # The new leader's offer goes through and reaches the dial.
        assert await b.claim(eb, "s1", "call-ok") is True
        assert await start_dialing(worker, "s1", "call-ok", "node-b") is True
        # The old leader campaigns again but does not win while node-b lives.
        assert [line for line in a.lines if line.startswith("ELECTED")] == [f"ELECTED {ea}"]
    finally:
        await worker.close()
        await a.close()
        if b is not None:
            await b.close()


async def test_deposed_leaders_offer_never_reaches_dialing(db: str) -> None:
    worker = await connect_worker(db)
    a = RoutingAuthority(db, "node-a")
    b = RoutingAuthority(db, "node-b")
    ta = asyncio.create_task(a.run())
    tb: asyncio.Task[None] | None = None
    try:
        for seat in ("s1", "s2", "s3"):
            await add_seat(worker, seat)
        await wait_for(lambda: a.is_leader, 10, "node-a to lead")
        ea = a.epoch
        assert ea is not None
        # Made by the leader while it led: one offer already dialing, one still only offered.
        assert await claim_offer(worker, ea, "s1", "c1")
        assert await start_dialing(worker, "s1", "c1", "node-a")
        assert await claim_offer(worker, ea, "s2", "c2")

        tb = asyncio.create_task(b.run())
        await a.stop()
        await wait_for(lambda: b.is_leader, 5, "node-b to lead")
        eb = b.epoch
        assert eb is not None and eb > ea

        # The offer made before the election but not yet dialed is revoked; the dial fails.
        assert await start_dialing(worker, "s2", "c2", "node-a") is False
        assert (await seat_state(worker, "s2"))["state"] == "available"
        # A late offer from the deposed leader fails at the fence and so cannot be dialed.
        assert await claim_offer(worker, ea, "s3", "c3") is False
        assert await start_dialing(worker, "s3", "c3", "node-a") is False
        assert (await seat_state(worker, "s3"))["state"] == "available"
        # The call already dialing stays: its node owns it until it releases it.
        assert (await seat_state(worker, "s1"))["state"] == "dialing"
        assert await claim_offer(worker, eb, "s1", "c4") is False
        assert await release(worker, "s1", "c1") is True
        assert await release(worker, "s1", "c1") is False
        assert await claim_offer(worker, eb, "s1", "c4") is True

        kinds = [r["kind"] for r in await worker.fetch(
            "SELECT kind FROM events WHERE kind <> 'ELECTED' ORDER BY seq")]
        assert kinds == ["SEATOFFER", "SEATDIALING", "SEATOFFER", "OFFERREVOKED", "SEATRELEASE", "SEATOFFER"]
    finally:
        await a.stop()
        await b.stop()
        for t in (ta, tb):
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in (ta, tb) if t is not None), return_exceptions=True)
        await worker.close()


async def test_concurrent_claims_for_one_seat_exactly_one_wins(db: str) -> None:
    conns = [await connect_worker(db) for _ in range(2)]
    try:
        # Two real elections: epoch 1 is deposed, epoch 2 is current.
        for node in ("node-a", "node-b"):
            auth = RoutingAuthority(db, node)
            task = asyncio.create_task(auth.run())
            await wait_for(lambda auth=auth: auth.is_leader, 10, f"{node} to lead")
            await auth.stop()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        current = int(await conns[0].fetchval("SELECT epoch FROM routing_epoch WHERE id = 1"))
        assert current == 2
        await add_seat(conns[0], "s1")

        for i in range(40):
            # Old epoch against the current one: only the current one may win.
            old, new = await asyncio.gather(claim_offer(conns[0], current - 1, "s1", f"old-{i}"),
                                            claim_offer(conns[1], current, "s1", f"new-{i}"))
            assert (old, new) == (False, True)
            assert await release(conns[0], "s1", f"new-{i}")
            # The same epoch from two connections (two tasks of one leader): the seat's
            # compare-and-set lets exactly one through.
            results = await asyncio.gather(claim_offer(conns[0], current, "s1", f"x-{i}"),
                                           claim_offer(conns[1], current, "s1", f"y-{i}"))
            assert sorted(results) == [False, True]
            holder = (await seat_state(conns[0], "s1"))["call_id"]
            assert holder == (f"x-{i}" if results[0] else f"y-{i}")
            assert await release(conns[1], "s1", holder)
    finally:
        for c in conns:
            await c.close()
