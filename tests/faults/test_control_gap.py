"""What happens on the wire while the control process is away ends each call with its true end.

Real processes throughout: ``handoff122 serve`` (supervisor, control process, pjsua2 media workers,
Kamailio), pjsua2 callers and seat phones.  To make "while the control process is away" a window a
test can act in, the supervisor is paused (``SIGSTOP``) before the control process is killed
(``kill -9``): nothing starts it again until the supervisor is resumed.  Meanwhile the workers run
on their own: a caller or a seat hangs up, a worker dies.  The restarted control process must
learn of it from the workers (their snapshot and replayed events, ``gateway.worker.gap``) or the
supervisor (which worker died), never guess ``lost_node_failure``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port
from tests.faults.harness import (
    NodePorts,
    api,
    boot,
    callbacks,
    control_pid,
    queue,
    seat,
    seat_invites,
    seats_yaml,
    start_seat_sim,
)
from tests.faults.test_control_crash import _alive, kill_control, on_call_with
from tests.node_harness import RunningNode, caller_result, start_caller

pytestmark = pytest.mark.sip

HUMAN = "0"  # -> intake_guidance


@contextlib.contextmanager
def control_away(node: RunningNode) -> Iterator[None]:
    """The control process killed and kept away (its supervisor paused) for the ``with`` body."""
    old = control_pid(node)
    assert old and _alive(old)
    readies = sum(1 for x in node.logs() if x.get("event") == "node_ready")
    lost = sum(1 for x in node.logs() if x.get("event") == "control_lost")
    node.proc.send_signal(signal.SIGSTOP)
    try:
        os.kill(old, signal.SIGKILL)
        node.wait_for(lambda: not _alive(old), timeout=10)
        # every worker noticed (its gap started)
        node.wait_for(lambda: sum(1 for x in node.logs() if x.get("event") == "control_lost") >= lost + 2,
                      timeout=10)
        yield
    finally:
        node.proc.send_signal(signal.SIGCONT)
    node.wait_for(lambda: sum(1 for x in node.logs() if x.get("event") == "node_ready") > readies, timeout=60)
    assert control_pid(node) != old


def ended(node: RunningNode, call_id: str) -> dict[str, Any]:
    return node.wait_for(lambda: (c := node.call(call_id))["end_reason"] and c, timeout=20)


def stop_all(*procs: subprocess.Popen[Any] | None) -> None:
    for p in procs:
        if p is None or p.poll() is not None:
            continue
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()


@pytest.mark.parametrize("who", ["caller", "seat"])
def test_a_conversation_that_ends_while_the_control_is_away_is_completed_not_lost(tmp_path: Path,
                                                                                   who: str) -> None:
    p1 = free_port()
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=seats_yaml(("s1", "intake_guidance", p1, "available")),
                env={"HANDOFF_WRAP_UP_S": "60"})
    seat_args = ["--answer-after", "0.3"] + (["--hangup-after", "8"] if who == "seat" else [])
    sim = start_seat_sim(tmp_path, "s1", p1, *seat_args)
    caller = start_caller(node, HUMAN, gap=0.5, stay=15 if who == "caller" else 90)
    try:
        call_id = node.wait_for(lambda: on_call_with(node, "s1"), timeout=40)["call_id"]
        with control_away(node):
            res = caller_result(caller, timeout=60)   # the call ends with nobody to tell
            assert res["bridged"], res
            assert res["hung_up_by"] == ("caller" if who == "caller" else "remote"), res
            node.wait_for(lambda: seat_invites(tmp_path, "s1"), timeout=10)
        done = ended(node, call_id)
        assert done["end_reason"] == "completed" and done["ended_by"] == who, done
        assert done["seat_id"] == "s1" and done["recording_id"], done
        assert call_id not in callbacks(node)
        assert node.wait_for(lambda: seat(node, "s1")["status"] == "wrap_up", timeout=10)
        assert any(x.get("event") == "call_adopted" and x.get("call_id") == call_id and x.get("ended_meanwhile")
                   for x in node.logs())
        assert not any(x.get("event") == "call_lost" for x in node.logs())
        assert node.journey_errors() == []
    finally:
        stop_all(caller, sim)
        node.stop()


def test_a_queued_caller_who_hangs_up_while_the_control_is_away_is_abandoned_not_called_back(
        tmp_path: Path) -> None:
    p1 = free_port()
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=seats_yaml(("s1", "intake_guidance", p1, "not_ready")))
    sim = start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3")
    caller = start_caller(node, HUMAN, gap=0.5, stay=15)
    try:
        node.wait_for(lambda: queue(node, "intake_guidance")["waiting"] == 1, timeout=40)
        call_id = node.wait_for(lambda: next((c["id"] for c in node.calls() if c["queued_at"]), None))
        node.wait_for(lambda: "ENTERQUEUE" in [e["kind"] for e in node.call(call_id)["events"]])
        with control_away(node):
            res = caller_result(caller, timeout=60)
            assert res["answered"] and not res["bridged"] and res["hung_up_by"] == "caller", res
        done = ended(node, call_id)
        assert done["end_reason"] == "abandoned" and done["ended_by"] == "caller", done
        assert call_id not in callbacks(node)          # waited 15 s: under callback_after_s (30 s)
        assert queue(node, "intake_guidance")["waiting"] == 0
        # the seat becomes available: nothing is offered to it (a ghost would be offered at once)
        assert api(node, "PUT", "/api/v1/seats/s1/status", json={"status": "available"}).status_code == 200
        assert seat(node, "s1")["status"] == "available" and seat_invites(tmp_path, "s1") == []
        assert node.journey_errors() == []
    finally:
        stop_all(caller, sim)
        node.stop()


def test_a_worker_that_dies_while_the_control_is_away_loses_its_calls_as_worker_failures(tmp_path: Path) -> None:
    p1 = free_port()
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=seats_yaml(("s1", "intake_guidance", p1, "available")),
                env={"HANDOFF_WRAP_UP_S": "1"})
    sim = start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3")
    caller = start_caller(node, HUMAN, gap=0.5, stay=90)
    try:
        call_id = node.wait_for(lambda: on_call_with(node, "s1"), timeout=40)["call_id"]
        wid = next(x["worker_id"] for x in node.logs() if x.get("event") == "call_started"
                   and x.get("call_id") == call_id)
        victim = node.worker_pids()[wid]
        with control_away(node):
            os.kill(victim, signal.SIGKILL)
            node.wait_for(lambda: not _alive(victim), timeout=10)
        done = ended(node, call_id)
        assert done["end_reason"] == "lost_worker_failure", done
        # the front door ended the dead worker's dialog: the caller is told (BYE), not left in silence
        res = caller_result(caller, timeout=30)
        assert res["bridged"] and res["hung_up_by"] == "remote", res
        assert any(x.get("event") == "worker_dialogs_ended" and x.get("worker_id") == wid and x.get("load_reset")
                   for x in node.logs())
        cb = callbacks(node)
        assert call_id in cb, cb
        assert node.worker_pids()[wid] != victim
        assert node.wait_for(lambda: seat(node, "s1")["status"] in ("wrap_up", "available"), timeout=10)
        assert node.journey_errors() == []
    finally:
        stop_all(caller, sim)
        node.stop()


def test_a_warm_transfer_under_way_at_a_control_crash_is_cancelled_cleanly(tmp_path: Path) -> None:
    """Decision (docs/DURABILITY.md): the worker cancels the consult when the control process goes
    away; the caller is back with seat 1 at once, seat 2's leg ends and its reservation is released
    by the restarted control process: no seat stays reserved."""
    from tests.gateway.test_transfer import post, token
    from tests.gateway.test_transfer_warm import DISPUTE
    from tests.gateway.test_transfer_warm import seats_yaml as warm_seats

    p1, p2 = free_port(), free_port()
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=warm_seats(p1, p2), env={"HANDOFF_WRAP_UP_S": "60"})
    sims = [start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3"),
            start_seat_sim(tmp_path, "s2", p2, "--answer-after", "0.5")]
    caller = start_caller(node, DISPUTE, gap=0.6, stay=40)
    try:
        call_id = node.wait_for(lambda: on_call_with(node, "s1"), timeout=60)["call_id"]
        r = post(node, f"/api/v1/calls/{call_id}/transfer", token(node, "seat", "s1"), {"to_seat": "s2", "mode": "warm"})
        assert r.status_code == 200 and r.json()["stage"] == "consulting", r.text
        node.wait_for(lambda: any(x.get("event") == "consult_answered" and x.get("seat_id") == "s2"
                                  for x in node.logs()), timeout=20)

        kill_control(node)

        assert any(x.get("event") == "consult_dropped" and x.get("call_id") == call_id for x in node.logs())
        s2_call = node.wait_for(lambda: seat_invites(tmp_path, "s2"), timeout=10)[0]
        assert s2_call["answered"] and s2_call["ended_by"] == "remote", s2_call   # its leg got a BYE
        assert seat(node, "s2")["status"] == "available"                       # not reserved, no penalty
        s1 = node.wait_for(lambda: on_call_with(node, "s1"), timeout=20)
        assert s1["call_id"] == call_id
        assert any(x.get("event") == "call_adopted" and x.get("call_id") == call_id and x.get("stage") == "talking"
                   for x in node.logs())
        # seat 1 may start the transfer again
        r = post(node, f"/api/v1/calls/{call_id}/transfer", token(node, "seat", "s1"), {"to_seat": "s2", "mode": "warm"})
        assert r.status_code == 200 and r.json()["stage"] == "consulting", r.text
        res = caller_result(caller, timeout=90)
        assert res["bridged"] and res["hung_up_by"] == "caller" and res["received_requests"] == [], res
        done = ended(node, call_id)
        assert done["end_reason"] == "completed", done
        assert node.wait_for(lambda: seat(node, "s2")["status"] in ("available", "wrap_up"), timeout=10)
        assert node.journey_errors() == []
    finally:
        stop_all(caller, *sims)
        node.stop()
