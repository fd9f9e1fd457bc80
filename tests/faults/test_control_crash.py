"""``kill -9`` of the control process alone, then a restart on the same data dir and ports.

The media workers and Kamailio (in its own session) get SIGTERM from the kernel when their parent
dies (``die_with_parent``, ``exec_with_parent_death``) instead of keeping the SIP port for ever;
with the front door gone, no BYE reaches the caller: the line is cut, the caller (or the carrier)
hangs up.  The restarted node ends whatever its crashed predecessor still left
(``clear_leftovers``), closes the lost calls with a reason and a callback, and offers nothing to
a ghost.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.faults.harness import (
    NodePorts,
    api,
    boot,
    callbacks,
    kamailio_pid,
    queue,
    seat,
    seat_invites,
    seats_yaml,
    start_seat_sim,
)
from tests.node_harness import caller_result, run_caller, start_caller

pytestmark = pytest.mark.sip

HUMAN = "0"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def test_control_kill_restart_ends_the_leftovers_and_calls_back_the_waiting_caller(tmp_path: Path) -> None:
    p1 = free_port()
    ports = NodePorts.pick(workers=2)
    seats = seats_yaml(("s1", "intake_guidance", p1, "not_ready"))
    node = boot(tmp_path, ports, name="before", seats_yaml=seats)
    sim = start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3")
    caller = start_caller(node, HUMAN, stay=20, gap=0.5)
    restarted = None
    try:
        node.wait_for(lambda: queue(node, "intake_guidance")["waiting"] == 1, timeout=40)
        call_id = node.wait_for(lambda: next((c["id"] for c in node.calls() if c["queued_at"]), None))
        node.wait_for(lambda: "ENTERQUEUE" in [e["kind"] for e in node.call(call_id)["events"]])
        kam = kamailio_pid(node)
        assert kam and _alive(kam)

        node.proc.kill()                      # the control process only
        node.proc.wait(10)
        node.wait_for(lambda: not _alive(kam), timeout=10)   # Kamailio does not outlive it on the port
        res = caller_result(caller, timeout=60)
        assert res["answered"], res  # the line was cut with the node; the caller hangs up after `stay`

        restarted = boot(tmp_path, ports, name="after", seats_yaml=seats, token=node.token)
        rec = restarted.call(call_id)
        assert rec["end_reason"] == "lost_node_failure" and rec["ended_at"], rec
        assert callbacks(restarted)[call_id]["info"]["lost"] == "lost_node_failure"
        assert queue(restarted, "intake_guidance")["waiting"] == 0
        assert api(restarted, "PUT", "/api/v1/seats/s1/status", json={"status": "available"}).status_code == 200
        assert seat(restarted, "s1")["status"] == "available"
        fresh = run_caller(restarted, HUMAN, gap=0.5, stay=1)   # the restarted front door works
        assert fresh["answered"] and fresh["bridged"], fresh
        invites = restarted.wait_for(lambda: seat_invites(tmp_path, "s1"))
        assert all(i["call_id"] != call_id for i in invites) and invites[0]["n"] == 1
    finally:
        if caller.poll() is None:
            caller.kill()
        sim.terminate()
        try:
            sim.wait(5)
        except subprocess.TimeoutExpired:
            sim.kill()
        if restarted is not None:
            restarted.stop()
