"""``kill -9`` of a whole node while a caller waits: no ghost, the caller called back, the seat free.

Real processes throughout: ``handoff122 serve`` (control, pjsua2 media workers, Kamailio), a
pjsua2 caller, a pjsua2 seat phone that reports every INVITE it receives.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.faults.harness import (
    NodePorts,
    api,
    boot,
    callbacks,
    crash,
    queue,
    seat,
    seat_invites,
    seats_yaml,
    start_seat_sim,
)
from tests.node_harness import run_caller, start_caller

pytestmark = pytest.mark.sip

HUMAN = "0"  # -> intake_guidance


def test_whole_node_kill_closes_the_waiting_call_and_calls_the_caller_back(tmp_path: Path) -> None:
    p1 = free_port()
    ports = NodePorts.pick(workers=2)
    seats = seats_yaml(("s1", "intake_guidance", p1, "not_ready"))
    node = boot(tmp_path, ports, name="before", seats_yaml=seats)
    seat_sim = start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3")
    caller = start_caller(node, HUMAN, stay=120, gap=0.5)
    restarted = None
    try:
        # the caller waits: no seat is ready; the queue entry is committed
        node.wait_for(lambda: queue(node, "intake_guidance")["waiting"] == 1, timeout=40)
        call_id = node.wait_for(lambda: next((c["id"] for c in node.calls() if c["queued_at"]), None))
        node.wait_for(lambda: "ENTERQUEUE" in [e["kind"] for e in node.call(call_id)["events"]])
        before = node.call(call_id)
        assert before["ended_at"] is None and before["caller"]

        crash(node)
        caller.kill()  # its leg died with the node's workers (nobody sends it a BYE)
        caller.wait(10)

        restarted = boot(tmp_path, ports, name="after", seats_yaml=seats, token=node.token)
        # the call record is closed with its reason
        rec = restarted.call(call_id)
        assert rec["end_reason"] == "lost_node_failure", rec
        assert rec["ended_at"] is not None and rec["ended_at"] >= before["started_at"]
        assert "CALLEND" in [e["kind"] for e in rec["events"]]
        # the queue forgot the ghost; the caller is on the callback list with number and IVR answers
        assert queue(restarted, "intake_guidance")["waiting"] == 0
        cb = callbacks(restarted)[call_id]
        assert cb["caller"] == before["caller"] and cb["status"] == "pending"
        assert cb["info"]["lost"] == "lost_node_failure"
        assert cb["info"]["ivr"]["answers"], cb  # the key the caller pressed travels with the callback
        # the recording the dead worker left unsealed is sealed by the restarted node, once
        assert rec["recording_id"] == call_id
        wav = restarted.get(f"/api/v1/recordings/{call_id}")
        assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
        assert not list((restarted.data_dir / "recordings" / ".partial").glob("*.wav"))
        verify = subprocess.run([sys.executable, "-m", "gateway.cli", "recordings", "verify", "--data-dir",
                                 str(restarted.data_dir)], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr

        # the only seat becomes available: nothing is offered to it (no ghost) ...
        r = api(restarted, "PUT", "/api/v1/seats/s1/status", json={"status": "available"})
        assert r.status_code == 200, r.text
        assert seat(restarted, "s1")["status"] == "available"
        rec = restarted.call(call_id)
        assert "OFFER" not in [e["kind"] for e in rec["events"]]
        # ... and the first INVITE the seat ever receives is a real caller's, who is bridged
        res = run_caller(restarted, HUMAN, gap=0.5, stay=2)
        assert res["answered"] and res["bridged"], res
        invites = restarted.wait_for(lambda: seat_invites(tmp_path, "s1"))
        assert [i["call_id"] for i in invites] != [call_id] and invites[0]["n"] == 1, invites
        assert all(i["call_id"] != call_id for i in invites)
        restarted.wait_for(lambda: seat(restarted, "s1")["status"] in ("available", "wrap_up"))
    finally:
        if caller.poll() is None:
            caller.kill()
        seat_sim.terminate()
        try:
            seat_sim.wait(5)
        except subprocess.TimeoutExpired:
            seat_sim.kill()
        if node.proc.poll() is None:
            node.stop()
        if restarted is not None:
            restarted.stop()


def test_whole_node_kill_while_a_seat_rings_frees_the_seat_without_penalty(tmp_path: Path) -> None:
    p1 = free_port()
    ports = NodePorts.pick(workers=2)
    seats = seats_yaml(("s1", "intake_guidance", p1, "available"))
    node = boot(tmp_path, ports, name="before", seats_yaml=seats)
    seat_sim = start_seat_sim(tmp_path, "s1", p1, "--answer-after", "never")
    caller = start_caller(node, HUMAN, stay=120, gap=0.5)
    restarted = None
    try:
        node.wait_for(lambda: seat(node, "s1")["status"] == "reserved", timeout=40)   # the seat rings
        call_id = node.wait_for(lambda: next((c["id"] for c in node.calls() if c["queued_at"]), None))
        node.wait_for(lambda: "OFFER" in [e["kind"] for e in node.call(call_id)["events"]])
        crash(node)
        caller.kill()
        caller.wait(10)

        restarted = boot(tmp_path, ports, name="after", seats_yaml=seats, token=node.token)
        # not "not_ready (no answer)" nor "not_ready (restart)": the seat did nothing wrong
        s1 = seat(restarted, "s1")
        assert s1["status"] == "available", s1
        assert restarted.call(call_id)["end_reason"] == "lost_node_failure"
        assert callbacks(restarted)[call_id]["info"]["lost"] == "lost_node_failure"
        assert queue(restarted, "intake_guidance")["waiting"] == 0
    finally:
        if caller.poll() is None:
            caller.kill()
        seat_sim.terminate()
        try:
            seat_sim.wait(5)
        except subprocess.TimeoutExpired:
            seat_sim.kill()
        if node.proc.poll() is None:
            node.stop()
        if restarted is not None:
            restarted.stop()
