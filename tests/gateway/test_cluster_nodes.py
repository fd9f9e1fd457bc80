"""Two full nodes in cluster mode (issue 14): ``handoff122 serve --cluster true`` twice, each with
its own Kamailio and workers on its own ports, sharing one PostgreSQL; pjsua2 callers on both
nodes and one pjsua2 seat that reports every INVITE it gets (``others``: how many calls it already
had when the INVITE came).  The seat's history is also read back from the fence (event log)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, own_pg_database
from tests.gateway.test_handoff import HUMAN, seats_yaml
from tests.node_harness import RunningNode, caller_result, seat_reports, start_caller, start_node, start_seat
from tests.routing.test_cluster import assert_one_call_at_a_time, enqueued, fence_log

pytestmark = [pytest.mark.sip, pytest.mark.postgres, pytest.mark.timeout(300)]


@pytest.fixture
def pg_db() -> Iterator[str]:
    """A database of its own (one cluster per database: the advisory lock is per database)."""
    with own_pg_database("handoff_cluster", migrated=True) as url:
        yield url


def cluster_node(tmp_path: Path, name: str, db: str, seats: str) -> RunningNode:
    return start_node(tmp_path / name, workers=1, seats_yaml=seats, token=False,
                      args=["--cluster", "true", "--cluster-node-id", name, "--db-url", db, "--api-port", "0",
                            "--wrap-up-s", "0"])


def routing_lines(node: RunningNode) -> list[dict]:
    """The node's log lines that say it routes for the cluster (one per election it won)."""
    return [x for x in node.logs() if x.get("event") == "routing for the cluster"]


def seat_history(db: str) -> list[tuple[str, str | None, dict]]:
    return asyncio.run(fence_log(db))


def test_two_cluster_nodes_share_one_seat_one_invite_at_a_time(tmp_path: Path, pg_db: str) -> None:
    """Callers on both nodes reach the one seat in the order they queued, whichever node they
    called; the seat never has a second INVITE while it has a call."""
    p1 = free_port()
    seats = seats_yaml(("s1", "intake_guidance", p1))
    a = cluster_node(tmp_path, "node-a", pg_db, seats)
    b: RunningNode | None = None
    try:
        a.wait_for(lambda: routing_lines(a), timeout=30)
        b = cluster_node(tmp_path, "node-b", pg_db, seats)
        start_seat(a, "s1", p1, "--answer-after", "0.5", "--hangup-after", "2")
        callers = []
        for n, (number, node) in enumerate((("1001", a), ("2001", b), ("1002", a), ("2002", b)), start=1):
            callers.append(start_caller(node, HUMAN, stay=90, number=number))
            a.wait_for(lambda n=n: enqueued(pg_db) >= n, timeout=30)  # queued in this order
        results = [caller_result(p, timeout=180) for p in callers]
        assert all(r["answered"] and r["bridged"] for r in results), results
        reps = a.wait_for(lambda: (r := seat_reports(a, "s1")) and len(r) >= 4 and r, timeout=60)
        assert [r["caller"] for r in reps] == ["1001", "2001", "1002", "2002"], reps
        assert [r["others"] for r in reps] == [0, 0, 0, 0], reps
        assert assert_one_call_at_a_time(seat_history(pg_db)) == [r["call_id"] for r in reps]
        assert a.journey_errors() == [] and b.journey_errors() == []
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_kill_9_of_the_leaders_control_process_with_callers_queued_on_the_other_node(
        tmp_path: Path, pg_db: str) -> None:
    """The leader's control process is killed while its caller talks to the seat and two callers
    wait on the other node: the other node routes within 3 s; the conversation goes on (its media
    worker carries it, the restarted control process adopts it); the waiting callers get the seat
    in their order, one INVITE at a time."""
    p1 = free_port()
    seats = seats_yaml(("s1", "intake_guidance", p1))
    a = cluster_node(tmp_path, "node-a", pg_db, seats)
    b: RunningNode | None = None
    try:
        a.wait_for(lambda: routing_lines(a), timeout=30)
        b = cluster_node(tmp_path, "node-b", pg_db, seats)
        start_seat(a, "s1", p1, "--answer-after", "0.5", "--hangup-after", "6")
        first = start_caller(a, HUMAN, stay=90, number="1001")
        a.wait_for(lambda: any(x.get("event") == "bridged" for x in a.logs()), timeout=30)
        waiting = []
        for n, number in enumerate(("2001", "2002"), start=2):
            waiting.append(start_caller(b, HUMAN, stay=90, number=number))
            b.wait_for(lambda n=n: enqueued(pg_db) >= n, timeout=30)
        control = int((a.data_dir / "run" / "control.pid").read_text())
        killed = time.time()
        os.kill(control, signal.SIGKILL)
        line = b.wait_for(lambda: routing_lines(b), timeout=30)[0]
        failover = float(line["ts"]) - killed
        print(f"\nkill -9 of the leader's control process -> the other node routing: {failover * 1000:.0f} ms "
              f"(restore {line.get('restore_s')} s)")
        assert failover <= 3.0
        results = [caller_result(p, timeout=180) for p in (first, *waiting)]
        assert all(r["answered"] and r["bridged"] for r in results), results
        reps = a.wait_for(lambda: (r := seat_reports(a, "s1")) and len(r) >= 3 and r, timeout=60)
        assert [r["caller"] for r in reps] == ["1001", "2001", "2002"], reps
        assert [r["others"] for r in reps] == [0, 0, 0], reps
        assert assert_one_call_at_a_time(seat_history(pg_db)) == [r["call_id"] for r in reps]
        assert b.journey_errors() == []
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_a_frozen_leader_control_process_is_fenced(tmp_path: Path, pg_db: str) -> None:
    """The leader's control process is frozen (SIGSTOP) while a caller of the other node talks to
    the seat and another waits: the other node takes over after the lease and gives the seat to the
    waiting caller when the first hangs up; woken (SIGCONT), the old leader steps down and no offer
    of its epoch reaches the seat (one INVITE at a time, every offer of the epoch current then)."""
    p1 = free_port()
    seats = seats_yaml(("s1", "intake_guidance", p1))
    a = cluster_node(tmp_path, "node-a", pg_db, seats)
    b: RunningNode | None = None
    control = 0
    try:
        a.wait_for(lambda: routing_lines(a), timeout=30)
        b = cluster_node(tmp_path, "node-b", pg_db, seats)
        start_seat(a, "s1", p1, "--answer-after", "0.5", "--hangup-after", "5")
        first = start_caller(b, HUMAN, stay=90, number="2001")
        b.wait_for(lambda: any(x.get("event") == "bridged" for x in b.logs()), timeout=30)
        second = start_caller(b, HUMAN, stay=90, number="2002")
        b.wait_for(lambda: enqueued(pg_db) >= 2, timeout=30)
        control = int((a.data_dir / "run" / "control.pid").read_text())
        frozen = time.time()
        os.kill(control, signal.SIGSTOP)
        line = b.wait_for(lambda: routing_lines(b), timeout=30)[0]
        print(f"\nSIGSTOP of the leader's control process -> the other node routing: "
              f"{(float(line['ts']) - frozen) * 1000:.0f} ms")
        results = [caller_result(p, timeout=180) for p in (first, second)]
        assert all(r["answered"] and r["bridged"] for r in results), results
        os.kill(control, signal.SIGCONT)
        control = 0
        a.wait_for(lambda: any("no longer the routing authority" in str(x.get("event")) for x in a.logs()),
                   timeout=30)
        stale = [x["event"] for x in a.logs() if "fenced" in str(x.get("event"))]
        print(f"the old leader after SIGCONT: {stale or 'demoted before it decided anything'}")
        reps = a.wait_for(lambda: (r := seat_reports(a, "s1")) and len(r) >= 2 and r, timeout=60)
        assert [r["caller"] for r in reps] == ["2001", "2002"], reps
        assert [r["others"] for r in reps] == [0, 0], reps
        assert assert_one_call_at_a_time(seat_history(pg_db)) == [r["call_id"] for r in reps]
        assert b.journey_errors() == []
    finally:
        if control:
            os.kill(control, signal.SIGCONT)
        a.stop()
        if b is not None:
            b.stop()
