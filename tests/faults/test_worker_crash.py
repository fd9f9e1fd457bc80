"""``kill -9`` of one media worker during the IVR, the queue and a conversation.

Every call of the dead worker is recorded ``lost_worker_failure`` with a callback, its recording
sealed by the control process; the call on the other worker goes on untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import wave
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.faults.harness import (
    NodePorts,
    api,
    boot,
    callbacks,
    kill_worker,
    queue,
    seat,
    seats_yaml,
    start_seat_sim,
)
from tests.node_harness import RunningNode, caller_result, start_caller

pytestmark = pytest.mark.sip

HUMAN = "0"          # -> intake_guidance (the bystander, talking to seat sb)
IMMOBILE = "1 2 2"   # -> rescue (the victim, for seat sv)


def worker_of(node: RunningNode, call_id: str) -> int:
    return next(x["worker_id"] for x in node.logs() if x.get("event") == "call_started" and x.get("call_id") == call_id)


def new_call(node: RunningNode, known: set[str]) -> str:
    return node.wait_for(lambda: next((c["id"] for c in node.calls() if c["id"] not in known), None))


@pytest.mark.parametrize("phase", ["ivr", "queue", "talk"])
def test_worker_kill_loses_only_its_calls_each_with_a_callback_and_a_sealed_recording(tmp_path: Path,
                                                                                   phase: str) -> None:
    pb, pv = free_port(), free_port()
    victim_seat = "available" if phase == "talk" else "not_ready"
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=seats_yaml(
        ("sb", "intake_guidance", pb, "available"), ("sv", "rescue", pv, victim_seat)),
        env={"HANDOFF_WRAP_UP_S": "1"})
    sims = [start_seat_sim(tmp_path, "sb", pb, "--answer-after", "0.3"),
            start_seat_sim(tmp_path, "sv", pv, "--answer-after", "0.3")]
    bystander = start_caller(node, HUMAN, stay=30, gap=0.5)
    victim = None
    try:
        by_id = new_call(node, set())
        node.wait_for(lambda: node.call(by_id)["seat_answered_at"], timeout=30)   # talking to sb
        victim = start_caller(node, "1" if phase == "ivr" else IMMOBILE, stay=60, gap=0.5)
        v_id = new_call(node, {by_id})
        if phase == "queue":
            node.wait_for(lambda: queue(node, "rescue")["waiting"] == 1, timeout=30)
        elif phase == "talk":
            node.wait_for(lambda: node.call(v_id)["seat_answered_at"], timeout=30)
        else:
            node.wait_for(lambda: any(x.get("event") == "dtmf" and x.get("call_id") == v_id for x in node.logs()))
        assert worker_of(node, v_id) != worker_of(node, by_id), "the two callers share a worker"

        kill_worker(node, worker_of(node, v_id))

        rec = node.wait_for(lambda: (c := node.call(v_id))["end_reason"] and c, timeout=30)
        assert rec["end_reason"] == "lost_worker_failure", rec
        assert rec["ended_at"] is not None
        cb = node.wait_for(lambda: callbacks(node).get(v_id))
        assert cb["caller"] == rec["caller"] and cb["info"]["lost"] == "lost_worker_failure", cb
        assert cb["info"]["lost_in"] == {"ivr": "in_ivr", "queue": "queued", "talk": "talking"}[phase]  # journey stages
        assert cb["info"]["ivr"]["answers"], cb
        # the recording of the dead worker's call is sealed by the control process
        rid = node.wait_for(lambda: node.call(v_id)["recording_id"])
        wav = node.wait_for(lambda: (r := node.get(f"/api/v1/recordings/{rid}")).status_code == 200 and r)
        (tmp_path / "victim.wav").write_bytes(wav.content)
        with wave.open(str(tmp_path / "victim.wav")) as w:
            frames, width, channels = w.getnframes(), w.getsampwidth(), w.getnchannels()
        # the header the dead worker never wrote was repaired: it declares every byte on disk
        assert frames > 0 and len(wav.content) - frames * width * channels in (44, 46, 58), len(wav.content)
        assert not list((node.data_dir / "recordings" / ".partial").glob(f"{rid}*"))
        # the seat is not penalised: after the conversation's wrap-up it is available again
        if phase == "talk":
            node.wait_for(lambda: seat(node, "sv")["status"] == "available", timeout=20)
        else:
            assert queue(node, "rescue")["waiting"] == 0
            assert seat(node, "sv")["status"] == "not_ready"
        # the other worker's conversation goes on to its natural end
        res = caller_result(bystander, timeout=60)
        assert res["answered"] and res["bridged"] and res["hung_up_by"] == "caller", res
        done = node.wait_for(lambda: (c := node.call(by_id))["end_reason"] and c)
        assert done["end_reason"] == "completed", done
        assert by_id not in callbacks(node)
        # the dead worker is replaced
        node.wait_for(lambda: len(node.worker_pids()) == 2)
        assert api(node, "GET", "/healthz").status_code == 200
    finally:
        for p in (bystander, victim):
            if p is not None and p.poll() is None:
                p.kill()
        for s in sims:
            s.terminate()
            try:
                s.wait(5)
            except subprocess.TimeoutExpired:
                s.kill()
        node.stop()


def dispatcher_targets(node: RunningNode) -> dict[str, dict[str, object]]:
    """Kamailio's view of each worker (``dispatcher.list``): duid -> flags and call load (DLGLOAD)."""
    from gateway.kamailio import KamailioRpc
    from gateway.local_sockets import unix_socket_path

    listed = KamailioRpc(unix_socket_path(node.data_dir / "run" / "kamailio", "kamailio-rpc.sock")).call("dispatcher.list")
    out: dict[str, dict[str, object]] = {}
    for rec in listed["RECORDS"]:
        for target in rec["SET"]["TARGETS"]:
            dest = target["DEST"]
            out[str(dest["ATTRS"]["DUID"])] = {"flags": dest["FLAGS"], "load": (dest.get("RUNTIME") or {}).get("DLGLOAD")}
    return out


def test_a_replaced_worker_takes_callers_again_at_once(tmp_path: Path) -> None:
    """The front door forgets the dead worker's calls: its replacement is not counted full
    (issue 13: ``bench faults`` saw 503s while a replaced worker sat idle)."""
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=seats_yaml(("s1", "intake_guidance", free_port(),
                                                                            "not_ready")))
    # four callers stay in the IVR (no key): two on each worker, the node is full
    first = [start_caller(node, "", stay=120) for _ in range(4)]
    extra = []
    try:
        node.wait_for(lambda: len(node.calls()) == 4, timeout=40)
        assert {t["load"] for t in dispatcher_targets(node).values()} == {2}
        victim = next(iter(node.worker_pids().values()))
        os.kill(victim, signal.SIGKILL)
        # the replacement answers OPTIONS: back in use, with no load left from the dead calls
        node.wait_for(lambda: victim not in node.worker_pids().values() and len(node.worker_pids()) == 2, timeout=20)
        targets = node.wait_for(lambda: (t := dispatcher_targets(node)) and all(x["flags"] == "AP" for x in t.values())
                                and t, timeout=20)
        assert sorted(t["load"] for t in targets.values()) == [0, 2], targets
        # two new callers are answered (before the fix: 503, the replacement counted full)
        extra = [start_caller(node, "", stay=2) for _ in range(2)]
        for p in extra:
            res = caller_result(p, timeout=60)
            assert res["answered"], res
        assert node.journey_errors() == []
    finally:
        for p in [*first, *extra]:
            if p.poll() is None:
                p.kill()
        node.stop()
