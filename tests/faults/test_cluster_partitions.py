"""Issue 14's cluster fault suite: network partitions (leader and database, leader and bus) and a
PostgreSQL restart under load, with two real nodes (``serve --cluster true``), a pjsua2 seat that
reports every INVITE it gets and pjsua2 callers.

Each case runs in a network namespace of its own (``ip netns``), where the partitions are
nftables rules between one node's loopback alias and a service port (tests/faults/partitions.py,
which runs the case and prints its facts as one JSON line).  The namespace, and every process in
it, is removed afterwards whatever happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.routing.test_cluster import assert_one_call_at_a_time

ROOT = Path(__file__).resolve().parents[2]


def _netns_usable() -> str | None:
    """Why this machine cannot run the cases (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (ip netns, nft)"
    for tool in ("ip", "nft", "mosquitto", "kamailio"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


pytestmark = [pytest.mark.sip, pytest.mark.timeout(420),
              pytest.mark.skipif(_netns_usable() is not None, reason=str(_netns_usable()))]


def run_case(case: str, tmp: Path) -> dict[str, Any]:
    """The case in a namespace of its own, lo up; everything in it killed and the namespace deleted after."""
    ns = f"h122-{case[:12]}-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True, capture_output=True)
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.faults.partitions", case, str(tmp)],
                           cwd=ROOT, capture_output=True, text=True, timeout=400)
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        assert lines, f"the case printed nothing (rc {p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        out: dict[str, Any] = json.loads(lines[-1])
        assert "error" not in out, out["error"]
        return out
    finally:
        left = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in left:  # only what ran in this namespace: what this test started
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def dialed_by_fence(out: dict[str, Any]) -> list[str]:
    """The seat's INVITEs are exactly the fence's dials, in order, one at a time, each by an offer
    of the epoch current at that moment; and no INVITE came while the seat had a call."""
    fence = [(k, c, d) for k, c, d in out["fence"]]
    dialed = assert_one_call_at_a_time(fence)
    assert dialed == [r["call_id"] for r in out["invites"]], (dialed, out["invites"])
    assert [r["others"] for r in out["invites"]] == [0] * len(out["invites"]), out["invites"]
    epochs = [e["epoch"] for e in out["elected"]]
    assert epochs == sorted(set(epochs)), f"epochs went backwards or repeated: {out['elected']}"
    return dialed


def every_caller_ended_once(out: dict[str, Any]) -> None:
    for number, r in out["callers"].items():
        assert r["answered"] and r["bridged"], (number, r)
    assert out["ends"], out
    for call_id, ends in out["ends"].items():
        assert ends.count("CALLEND") == 1, (call_id, ends)
    assert out["journey_errors"] == {"node-a": [], "node-b": []}, out["journey_errors"]


def lines(out: dict[str, Any], node: str, event: str) -> list[dict[str, Any]]:
    return [x for x in out["lines"][node] if event in str(x.get("event"))]


def test_leader_cut_from_the_database_is_replaced_fenced_and_rejoins_as_a_follower(tmp_path: Path) -> None:
    out = run_case("leader_and_database", tmp_path)
    print(f"\nleader cut from PostgreSQL -> node-b routes after {out['failover_s']:.2f} s, a waiting caller "
          f"reached the seat through the new leader {out['first_bridged_under_new_leader_s']:.1f} s after the cut "
          f"(when the talking one hung up); healed, node-a campaigns again after {out['rejoined_s']:.2f} s (case {out['run_s']} s)")
    assert out["failover_s"] <= 30
    dialed_by_fence(out)
    every_caller_ended_once(out)
    # the waiting callers kept their order; node-a's caller after the heal came last
    assert [r["caller"] for r in out["invites"]] == ["2000", "2001", "2002", "1003"], out["invites"]
    b_epoch = lines(out, "node-b", "routing for the cluster")[0]["epoch"]
    # node-a found itself deposed, and after the heal it follows: it never led again
    assert lines(out, "node-a", "no longer the routing authority")
    assert len(lines(out, "node-a", "routing for the cluster")) == 1
    assert out["after_heal"] == {"leader": "node-b", "live": ["node-a", "node-b"]}, out["after_heal"]
    # after the new election, every dial of the seat was of node-b's epoch (none of node-a's)
    elected_at = next(i for i, (k, _, d) in enumerate(out["fence"]) if k == "ELECTED" and d["epoch"] == b_epoch)
    assert {d["epoch"] for k, _, d in out["fence"][elected_at:] if k in ("SEATOFFER", "SEATDIALING")} == {b_epoch}


def test_leader_cut_from_the_bus_routes_on(tmp_path: Path) -> None:
    out = run_case("leader_and_bus", tmp_path)
    lost = out["bus_lost_after_s"]
    print(f"\nleader cut from Mosquitto: routing went on; the node logged the bus lost {lost:.1f} s after the cut "
          f"(case {out['run_s']} s)")
    # the cut was real: node-a's alias could not reach the broker, node-b's could
    assert out["reach_before"] == {"a": True, "b": True} and out["reach_during"] == {"a": False, "b": True}, out
    assert out["reach_after"] == {"a": True}
    dialed_by_fence(out)
    every_caller_ended_once(out)
    assert [r["caller"] for r in out["invites"]] == ["1001", "2001", "1002"], out["invites"]
    # routing never moved: the channel is PostgreSQL, not MQTT
    assert len(out["elected"]) == 1 and out["after"]["leader"] == "node-a", out
    assert not lines(out, "node-b", "routing for the cluster") and not lines(out, "node-a", "no longer the routing")
    # the leader's node was on the bus and says it lost it; only node-a was cut
    assert out["bus_used"] and lost is not None, out
    assert not [x for x in out["lines"]["node-b"] if x.get("event") in ("MQTT connection lost", "MQTT connect failed")]


def test_postgres_restarted_under_load_drops_no_caller(tmp_path: Path) -> None:
    out = run_case("database_restart", tmp_path)
    print(f"\nPostgreSQL down {out['down_s']:.1f} s; from its start command (pg_ctl -w took {out['pg_start_s']:.1f} s) "
          f"routing resumed after {out['routing_resumed_s']:.2f} s and a waiting caller reached the seat after "
          f"{out['first_bridged_after_start_s']:.2f} s (case {out['run_s']} s)")
    dialed_by_fence(out)
    every_caller_ended_once(out)
    assert [r["caller"] for r in out["invites"]] == ["1001", "2001", "1002", "2002"], out["invites"]
    assert len(out["ends"]) == 4, out["ends"]
