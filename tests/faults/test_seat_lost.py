"""A seat's network vanishes mid-conversation: no BYE, no RTP (``kill -STOP`` of its phone).

A real pjsua2 caller through Kamailio talks to seat s1 (a pjsua2 phone, tone 1000 Hz); s1's process
is stopped.  The media worker's watchdog hears no RTP for ``seat_media_timeout_s`` and gives the
leg up; the caller, never hung up, goes back to the head of its queue hearing hold audio and is
put through to seat s2 (tone 700 Hz).  s1 is ``not_ready`` with the reason ``seat_media_timeout``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from recordings.wav import read_pcm16, rms, tone_power
from tests.conftest import free_port
from tests.faults.harness import NodePorts, api, boot, seat, seat_invites, seats_yaml, start_seat_sim
from tests.node_harness import RunningNode, caller_result, start_caller

pytestmark = pytest.mark.sip

HUMAN = "0"                 # -> intake_guidance
TIMEOUT_S = 9.0             # the default seat_media_timeout_s
#: generous: the watchdog polls once a second, then the re-offer, the ring and the answer
DETECTED_WITHIN_S = TIMEOUT_S + 12


def share(samples: Any, rate: int, hz: float) -> float:
    return tone_power(samples, rate, hz) / max(1.0, rms(samples) ** 2)


def journey(node: RunningNode, call_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in node.call(call_id)["events"] if e["kind"] == "JOURNEY"]


def stop_sims(*sims: subprocess.Popen[bytes] | None) -> None:
    for s in sims:
        if s is None or s.poll() is not None:
            continue
        os.kill(s.pid, signal.SIGCONT)
        s.terminate()
        try:
            s.wait(5)
        except subprocess.TimeoutExpired:
            s.kill()


def test_a_seat_whose_network_vanishes_hands_the_caller_to_the_next_seat_within_the_timeout(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=seats_yaml(
        ("s1", "intake_guidance", p1, "available"), ("s2", "intake_guidance", p2, "not_ready")))
    s1 = s2 = None
    caller = None
    try:
        s1 = start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3", "--tone", "1000")
        s2 = start_seat_sim(tmp_path, "s2", p2, "--answer-after", "0.5", "--tone", "700",
                            "--record", str(tmp_path / "s2.wav"))
        caller = start_caller(node, HUMAN, stay=45, record=tmp_path / "caller.wav")
        talking = node.wait_for(lambda: (s := seat(node, "s1"))["status"] == "on_call" and s, timeout=60)
        call_id = talking["call_id"]
        assert api(node, "PUT", "/api/v1/seats/s2/status", json={"status": "available"}).status_code == 200
        node.wait_for(lambda: time.time() - float(talking["since"]) >= 2.0)   # two seconds of conversation

        os.kill(s1.pid, signal.SIGSTOP)   # s1's network is gone: no RTP, no BYE, no answer to anything
        stopped_at = time.time()

        on_s2 = node.wait_for(lambda: (s := seat(node, "s2"))["status"] == "on_call" and s,
                              timeout=DETECTED_WITHIN_S + 20)
        assert on_s2["call_id"] == call_id
        assert float(on_s2["since"]) - stopped_at <= DETECTED_WITHIN_S, float(on_s2["since"]) - stopped_at
        # the lost seat's part is stored; the call record is not ended by it (the caller is still there)
        node.wait_for(lambda: any(m["cause"] == "seat_leg_lost" for m in journey(node, call_id)))
        live = node.call(call_id)
        assert live["end_reason"] is None and live["ended_at"] is None, live
        lost = next(x for x in node.logs() if x.get("event") == "seat_media_timeout")
        assert lost["call_id"] == call_id and lost["silent_s"] >= TIMEOUT_S - 0.01, lost

        # s1: not ready with the reason, not a ring-no-answer
        s1_now = seat(node, "s1")
        assert s1_now["status"] == "not_ready" and s1_now["reason"] == "seat_media_timeout", s1_now
        q = next(x for x in api(node, "GET", "/api/v1/queues").json() if x["skill"] == "intake_guidance")
        assert q["rona"] == 0, q
        # s2's screen pop: the IVR record, and the previous seat's line was lost
        offer = api(node, "GET", "/api/v1/seats/s2/offer").json()
        assert offer["call_id"] == call_id and offer["info"]["lost_seat"] == "s1", offer
        assert offer["info"]["seat_lost"][0]["reason"] == "seat_media_timeout"
        assert offer["info"]["ivr"]["skill"] == "intake_guidance" and offer["info"]["screen_pop"]

        res = caller_result(caller, timeout=90)
        assert res["answered"] and res["hung_up_by"] == "caller", res   # the caller's leg never got a BYE
        assert res["longest_silence_s"] < TIMEOUT_S + 3, res           # only the dead seat's own silence
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert share(heard[-rate * 3:], rate, 700) > 0.1                # talking to s2 at the end
        assert share(heard[-rate * 3:], rate, 1000) < 0.05
        s2_rep = node.wait_for(lambda: [r for r in seat_invites(tmp_path, "s2") if "answered" in r])[0]
        assert s2_rep["call_id"] == call_id and s2_rep["caller_tone_s"] >= 1.0, s2_rep   # s2 heard the caller

        call = node.wait_for(lambda: (c := node.call(call_id))["end_reason"] and c.get("recording_id") and c)
        assert call["end_reason"] == "completed" and call["seat_id"] == "s2", call
        moves = journey(node, call_id)
        lost_moves = [m for m in moves if m["cause"] == "seat_leg_lost"]
        assert len(lost_moves) == 1 and lost_moves[0]["from"] == "talking" and lost_moves[0]["to"] == "queued"
        assert "s1" in lost_moves[0]["detail"] and "seat_media_timeout" in lost_moves[0]["detail"]
        assert [m["cause"] for m in moves].count("seat_answered") == 2
        # one recording for the whole call: s1, the hold audio, s2
        recs = {e["data"].get("recording_id") for e in node.call(call_id)["events"] if e["kind"] == "CALLEND"}
        assert recs == {call["recording_id"]}
        assert node.journey_errors() == []
    finally:
        stop_sims(s1, s2)
        if caller is not None and caller.poll() is None:
            caller.kill()
        node.stop()


def test_a_caller_who_came_later_does_not_overtake_the_requeued_caller(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    node = boot(tmp_path, NodePorts.pick(workers=2), env={"HANDOFF_WRAP_UP_S": "1"}, seats_yaml=seats_yaml(
        ("s1", "intake_guidance", p1, "available"), ("s2", "intake_guidance", p2, "not_ready")))
    s1 = s2 = None
    first = later = None
    try:
        s1 = start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3", "--tone", "1000")
        s2 = start_seat_sim(tmp_path, "s2", p2, "--answer-after", "0.3", "--tone", "700", "--hangup-after", "3")
        first = start_caller(node, HUMAN, stay=60)
        a_id = node.wait_for(lambda: (s := seat(node, "s1"))["status"] == "on_call" and s["call_id"], timeout=60)
        later = start_caller(node, HUMAN, stay=60)
        b_id = node.wait_for(lambda: next((c["id"] for c in node.calls() if c["id"] != a_id and c["queued_at"]),
                                          None), timeout=60)

        os.kill(s1.pid, signal.SIGSTOP)
        node.wait_for(lambda: any(m["cause"] == "seat_leg_lost" for m in journey(node, a_id)), timeout=DETECTED_WITHIN_S)
        # back in the queue in front of the caller who was already waiting
        entered = node.wait_for(lambda: (e := [x for x in node.call(a_id)["events"] if x["kind"] == "ENTERQUEUE"])
                                and len(e) == 2 and e)
        assert entered[1]["data"]["position"] == 1, entered
        assert node.call(b_id)["seat_id"] is None
        assert api(node, "PUT", "/api/v1/seats/s2/status", json={"status": "available"}).status_code == 200

        # s2 takes the re-queued caller first, then (after its 3 s talk and 1 s wrap-up) the later one
        reps = node.wait_for(lambda: (r := [x for x in seat_invites(tmp_path, "s2") if "answered" in x])
                             and len(r) >= 2 and r, timeout=60)
        assert [r["call_id"] for r in reps[:2]] == [a_id, b_id], reps
        for p in (first, later):
            res = caller_result(p, timeout=90)
            assert res["answered"] and res["hung_up_by"] in ("caller", "remote"), res
        assert node.journey_errors() == []
    finally:
        stop_sims(s1, s2)
        for p in (first, later):
            if p is not None and p.poll() is None:
                p.kill()
        node.stop()


def test_a_long_hold_is_not_a_lost_seat_but_a_seat_that_vanishes_on_hold_is(tmp_path: Path) -> None:
    """The gateway's hold happens in its bridge (no re-INVITE): the phone keeps sending RTP, so a
    hold longer than the timeout is no loss; a phone that vanishes while the caller is on hold is."""
    p1, p2 = free_port(), free_port()
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=seats_yaml(
        ("s1", "intake_guidance", p1, "available"), ("s2", "intake_guidance", p2, "not_ready")))
    s1 = s2 = None
    caller = None
    try:
        s1 = start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3", "--tone", "1000")
        s2 = start_seat_sim(tmp_path, "s2", p2, "--answer-after", "0.3", "--tone", "700")
        caller = start_caller(node, HUMAN, stay=40, record=tmp_path / "caller.wav")
        call_id = node.wait_for(lambda: (s := seat(node, "s1"))["status"] == "on_call" and s["call_id"], timeout=60)
        assert api(node, "POST", f"/api/v1/calls/{call_id}/hold", json={}).status_code == 200
        held_at = time.time()
        assert api(node, "PUT", "/api/v1/seats/s2/status", json={"status": "available"}).status_code == 200
        node.wait_for(lambda: time.time() - held_at >= TIMEOUT_S + 3, timeout=TIMEOUT_S + 10)
        assert node.call(call_id)["seat_id"] == "s1" and seat(node, "s1")["status"] == "on_call"
        assert not [x for x in node.logs() if x.get("event") == "seat_media_timeout"]

        os.kill(s1.pid, signal.SIGSTOP)   # gone while the caller hears the hold message
        on_s2 = node.wait_for(lambda: (s := seat(node, "s2"))["status"] == "on_call" and s,
                              timeout=DETECTED_WITHIN_S + 20)
        assert on_s2["call_id"] == call_id
        s1_now = seat(node, "s1")
        assert s1_now["status"] == "not_ready" and s1_now["reason"] == "seat_media_timeout", s1_now
        lost = [m for m in journey(node, call_id) if m["cause"] == "seat_leg_lost"]
        assert len(lost) == 1 and lost[0]["from"] == "on_hold" and lost[0]["to"] == "queued", lost
        res = caller_result(caller, timeout=90)
        assert res["answered"] and res["hung_up_by"] == "caller", res
        assert res["longest_silence_s"] < 3.0, res    # hold audio, then the queue's: never silence
        assert node.journey_errors() == []
    finally:
        stop_sims(s1, s2)
        if caller is not None and caller.poll() is None:
            caller.kill()
        node.stop()
