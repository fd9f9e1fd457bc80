"""Blind transfer to a skill, end to end: pjsua2 caller and seats through a real node.

The caller reaches seat s1 (online determination, tone 1000 Hz); s1 transfers them over HTTP to
insurance claims with a note; seat s2 (tone 700 Hz) rings with the same call id and the note on its
screen pop.  The caller is never hung up: it stays on the line for the whole call, hears s1 and
then s2, and one recording covers the lot.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from recordings.wav import read_pcm16, rms, tone_power
from tests.conftest import free_port
from tests.node_harness import RunningNode, caller_result, seat_reports, start_caller, start_node, start_seat

pytestmark = pytest.mark.sip
DISPUTE = "1 2 1 2 2 2 1"   # -> online_determination
NOTE = "责任已认定：甲方全责，请理赔"


def token(node: RunningNode, role: str, seat_id: str | None = None) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", "token", "create", "--role", role, "--data-dir", str(node.data_dir)]
    if seat_id:
        cmd += ["--seat", seat_id]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


def post(node: RunningNode, path: str, tok: str, body: dict) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{node.api_port}{path}", json=body, timeout=10,
                      headers={"Authorization": f"Bearer {tok}"})


def status(node: RunningNode, seat_id: str) -> dict:
    return next(s for s in node.get("/api/v1/seats").json() if s["id"] == seat_id)


def share(samples: Any, rate: int, hz: float) -> float:
    return tone_power(samples, rate, hz) / max(1.0, rms(samples) ** 2)


def loudest(samples: Any, rate: int, hz: float) -> float:
    """The tone's largest share of any half second: where a party spoke, whatever came around it."""
    step = rate // 2
    return max((share(samples[i:i + step], rate, hz) for i in range(0, max(1, len(samples) - step), step // 2)),
               default=0.0)


def test_blind_transfer_to_a_skill_keeps_the_caller_the_record_and_the_recording(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    seats = ("seats:\n"
             f"  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n    status: available\n"
             f"  - id: s2\n    contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n    status: available\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000")
        start_seat(node, "s2", p2, "--answer-after", "1.0", "--tone", "700", record=tmp_path / "s2.wav")
        s1_tok, s2_tok = token(node, "seat", "s1"), token(node, "seat", "s2")
        caller = start_caller(node, DISPUTE, gap="0.6", stay="16", record=tmp_path / "caller.wav")
        s1 = node.wait_for(lambda: (s := status(node, "s1"))["status"] == "on_call" and s, timeout=60)
        call_id = s1["call_id"]

        # refused: another seat, a bad target, a call that is not talking
        assert post(node, f"/api/v1/calls/{call_id}/transfer", s2_tok, {"to_skill": "insurance_claim"}).status_code == 403
        assert post(node, f"/api/v1/calls/{call_id}/transfer", s1_tok, {"to_skill": "nowhere"}).status_code == 422
        assert post(node, "/api/v1/calls/c-0000000000000000/transfer", node.token,
                    {"to_skill": "rescue"}).status_code == 404
        # let s1 and the caller talk for two seconds of audio before the transfer
        node.wait_for(lambda: time.time() - float(s1["since"]) >= 2.0)

        r = post(node, f"/api/v1/calls/{call_id}/transfer", s1_tok,
                 {"to_skill": "insurance_claim", "mode": "blind", "note": NOTE})
        assert r.status_code == 200, r.text
        assert r.json()["from_seat"] == "s1"

        assert status(node, "s1")["status"] == "wrap_up"
        node.wait_for(lambda: status(node, "s2")["status"] == "on_call", timeout=30)
        offer = httpx.get(f"http://127.0.0.1:{node.api_port}/api/v1/seats/s2/offer", timeout=10,
                          headers={"Authorization": f"Bearer {s2_tok}"}).json()
        info = offer["info"]
        assert offer["call_id"] == call_id and offer["skill"] == "insurance_claim"
        assert info["transfer_note"] == NOTE and info["transferred_from"] == "s1"
        assert info["ivr"]["skill"] == "online_determination"   # the IVR record travels with the caller
        assert info["screen_pop"]["answers"], info

        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "caller", res   # never hung up by the transfer
        s2rep = node.wait_for(lambda: seat_reports(node, "s2"))[0]
        assert s2rep["call_id"] == call_id and s2rep["skill"] == "insurance_claim"
        assert s2rep["caller_tone_s"] >= 1.0, s2rep                    # s2 heard the caller

        # the caller heard s1, then s2: its own recording, first half vs. last seconds
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert share(heard[-rate * 3:], rate, 700) > 0.1
        assert share(heard[-rate * 3:], rate, 1000) < 0.05
        assert loudest(heard, rate, 1000) > 0.3                         # ... after s1 earlier
        # one recording for the whole call, with both seats in it
        call = node.wait_for(lambda: (c := node.call(call_id)).get("recording_id") and c)
        rec = tmp_path / "call.wav"
        rec.write_bytes(node.get(f"/api/v1/recordings/{call['recording_id']}").content)
        rate, samples = read_pcm16(rec)
        assert len(samples) / rate >= res["duration_s"] - 1.5
        assert loudest(samples, rate, 1000) > 0.1 and share(samples[-rate * 3:], rate, 700) > 0.1
        causes = [e["data"]["cause"] for e in call["events"] if e["kind"] == "JOURNEY"]
        assert "transferred" in causes and causes.count("seat_answered") == 2, causes
        assert node.journey_errors() == []
        rep = node.wait_for(lambda: (x := node.get("/api/v1/reports/daily").json())["total"]["transfers"] == 1 and x)
        assert {r["skill"]: r["answered"] for r in rep["skills"]}["insurance_claim"] == 1
    finally:
        node.stop()


def test_blind_transfer_to_a_named_seat_rings_that_seat_only(tmp_path: Path) -> None:
    p1, p2, p3 = free_port(), free_port(), free_port()
    seats = ("seats:\n"
             f"  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n    status: available\n"
             f"  - id: s3\n    contact: sip:s3@127.0.0.1:{p3}\n    skills: [insurance_claim]\n    status: available\n"
             f"  - id: s2\n    contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n    status: available\n"
             "  - id: s4\n    contact: sip:s4@127.0.0.1:9\n    skills: [insurance_claim]\n    status: logged_out\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000")
        start_seat(node, "s2", p2, "--answer-after", "0.5", "--tone", "700")
        start_seat(node, "s3", p3, "--answer-after", "0.5", "--tone", "900")
        caller = start_caller(node, DISPUTE, gap="0.6", stay="10", record=tmp_path / "caller.wav")
        s1 = node.wait_for(lambda: (s := status(node, "s1"))["status"] == "on_call" and s, timeout=60)
        call_id = s1["call_id"]
        for target, code in (("s1", 409), ("s4", 409), ("nobody", 404)):
            r = post(node, f"/api/v1/calls/{call_id}/transfer", node.token, {"to_seat": target})
            assert r.status_code == code, (target, r.text)
        r = post(node, f"/api/v1/calls/{call_id}/transfer", node.token, {"to_seat": "s2", "note": "请您接"})
        assert r.status_code == 200 and r.json()["to_seat"] == "s2", r.text
        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "caller", res
        s2 = node.wait_for(lambda: seat_reports(node, "s2"))[0]
        assert s2["call_id"] == call_id
        assert seat_reports(node, "s3") == []
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert share(heard[-rate * 3:], rate, 700) > 0.1
        assert node.journey_errors() == []
    finally:
        node.stop()
