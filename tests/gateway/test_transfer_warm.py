"""Warm (consult) transfer, end to end: pjsua2 caller and seats through a real node.

The caller (440 Hz) reaches seat s1 (1000 Hz); s1 consults s2 (700 Hz) over HTTP: the caller hears
hold audio (neither seat), s1 and s2 hear each other; then s1 completes (s2 keeps the caller, s1
gets a BYE) or cancels (the caller is back with s1, s2 free again without penalty).  The caller's
own record of what it received shows no re-INVITE, REFER or BYE from the hand-off.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from recordings.wav import read_pcm16, rms
from tests.conftest import free_port
from tests.gateway.test_transfer import loudest, post, share, status, token
from tests.node_harness import caller_result, seat_reports, start_caller, start_node, start_seat

pytestmark = pytest.mark.sip
DISPUTE = "1 2 1 2 2 2 1"   # -> online_determination
NOTE = "甲方全责，请接手理赔 / liability clear, please take the claim"


def seats_yaml(p1: int, p2: int, extra: str = "") -> str:
    return ("seats:\n"
            f"  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n    status: available\n"
            f"  - id: s2\n    contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n    status: available\n"
            + extra)


def journey(call: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in call["events"] if e["kind"] == "JOURNEY"]


def first_at(call: dict[str, Any], cause: str) -> float:
    return next(e["at"] for e in journey(call) if e["data"]["cause"] == cause)


def window(path: Path, origin: float, start: float, end: float) -> tuple[Any, int]:
    rate, samples = read_pcm16(path)
    a, b = int((start - origin) * rate), int((end - origin) * rate)
    assert 0 <= a < b <= len(samples), (path.name, a, b, len(samples))
    return samples[a:b], rate


def test_warm_transfer_completed_hands_the_caller_to_seat_2(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    node = start_node(tmp_path, workers=2, seats_yaml=seats_yaml(p1, p2))
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000", record=tmp_path / "s1.wav")
        start_seat(node, "s2", p2, "--answer-after", "1.0", "--tone", "700", record=tmp_path / "s2.wav")
        s1_tok, s2_tok = token(node, "seat", "s1"), token(node, "seat", "s2")
        caller = start_caller(node, DISPUTE, gap="0.6", stay="22", record=tmp_path / "caller.wav")
        s1 = node.wait_for(lambda: (s := status(node, "s1"))["status"] == "on_call" and s, timeout=60)
        call_id = s1["call_id"]
        node.wait_for(lambda: time.time() - float(s1["since"]) >= 2.0)

        # another seat may not start it, and there is nothing to complete yet
        assert post(node, f"/api/v1/calls/{call_id}/transfer", s2_tok,
                    {"to_seat": "s2", "mode": "warm"}).status_code == 403
        assert post(node, f"/api/v1/calls/{call_id}/transfer/complete", s1_tok, {}).status_code == 409

        r = post(node, f"/api/v1/calls/{call_id}/transfer", s1_tok, {"to_seat": "s2", "mode": "warm", "note": NOTE})
        assert r.status_code == 200, r.text
        assert r.json()["stage"] == "consulting" and r.json()["to_seat"] == "s2", r.json()
        # seat 2 is reserved for this call (never offered another) and its screen pop has the note
        s2 = status(node, "s2")
        assert s2["status"] == "reserved" and s2["call_id"] == call_id, s2
        offer = httpx.get(f"http://127.0.0.1:{node.api_port}/api/v1/seats/s2/offer", timeout=10,
                          headers={"Authorization": f"Bearer {s2_tok}"}).json()
        assert offer["call_id"] == call_id and offer["info"]["transfer_note"] == NOTE, offer
        assert offer["info"]["transferred_from"] == "s1" and offer["info"]["screen_pop"]["answers"], offer
        # a second consult while one is under way is refused
        assert post(node, f"/api/v1/calls/{call_id}/transfer", s1_tok,
                    {"to_skill": "insurance_claim", "mode": "warm"}).status_code == 409

        node.wait_for(lambda: any(x.get("event") == "consult_answered" and x.get("seat_id") == "s2"
                                  for x in node.logs()), timeout=20)
        answered_at = time.time()
        node.wait_for(lambda: time.time() - answered_at >= 2.5)   # s1 and s2 talk for a while
        r = post(node, f"/api/v1/calls/{call_id}/transfer/complete", s1_tok, {})
        assert r.status_code == 200, r.text
        assert r.json()["state"] == "completed" and r.json()["seat_id"] == "s2" and r.json()["stage"] == "talking"
        assert status(node, "s1")["status"] == "wrap_up"
        assert status(node, "s2")["status"] == "on_call" and status(node, "s2")["call_id"] == call_id

        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "caller", res
        assert res["received_requests"] == [], res          # no re-INVITE, UPDATE, REFER or BYE ever
        s1rep = node.wait_for(lambda: seat_reports(node, "s1"))[0]
        assert s1rep["ended_by"] == "remote", s1rep         # s1 got the BYE
        s2rep = node.wait_for(lambda: seat_reports(node, "s2"))[0]
        assert s2rep["call_id"] == call_id and s2rep["answered"], s2rep

        call = node.wait_for(lambda: (c := node.call(call_id)).get("recording_id") and c, timeout=30)
        causes = [e["data"]["cause"] for e in journey(call)]
        assert causes.count("consult_started") == 1 and causes.count("consult_completed") == 1, causes
        started, completed = first_at(call, "consult_started"), first_at(call, "consult_completed")
        assert completed - started >= 3.0

        # during the consult the caller hears hold audio, not a seat
        hold, rate = window(tmp_path / "caller.wav", call["started_at"], started + 1.6, completed - 0.3)
        assert share(hold, rate, 1000) < 0.02 and share(hold, rate, 700) < 0.02, "the caller heard a seat"
        assert rms(hold) > 100, "the caller heard silence on hold"
        # ... while s1 and s2 hear each other (and neither hears the caller)
        connected = next(e["at"] for e in call["events"] if e["kind"] == "CONNECT")
        at_s1, _ = window(tmp_path / "s1.wav", connected, started + 1.6, completed - 0.3)
        assert share(at_s1, rate, 700) > 0.1 and share(at_s1, rate, 440) < 0.02
        rate, at_s2 = read_pcm16(tmp_path / "s2.wav")
        first = at_s2[int(0.3 * rate):int(1.8 * rate)]
        assert share(first, rate, 1000) > 0.1 and share(first, rate, 440) < 0.02
        # after the hand-over the caller and s2 hear each other
        assert s2rep["caller_tone_s"] >= 1.0, s2rep
        assert loudest(at_s2[-rate * 5:], rate, 440) > 0.3 and share(at_s2[-rate * 3:], rate, 1000) < 0.02
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert share(heard[-rate * 3:], rate, 700) > 0.1 and share(heard[-rate * 3:], rate, 1000) < 0.02
        assert loudest(heard, rate, 1000) > 0.3                           # s1 earlier

        # one recording of the whole call: IVR .. s1 .. consult .. s2
        rec = tmp_path / "call.wav"
        rec.write_bytes(node.get(f"/api/v1/recordings/{call['recording_id']}").content)
        rate, samples = read_pcm16(rec)
        assert len(samples) / rate >= res["duration_s"] - 1.5
        assert loudest(samples, rate, 1000) > 0.1 and share(samples[-rate * 3:], rate, 700) > 0.1
        assert node.journey_errors() == []
        rep = node.wait_for(lambda: (x := node.get("/api/v1/reports/daily").json())["total"]["transfers"] == 1 and x)
        assert rep["total"]["answered"] >= 1
    finally:
        node.stop()


def test_warm_transfer_cancelled_gives_the_caller_back_to_seat_1(tmp_path: Path) -> None:
    p1, p2, p3 = free_port(), free_port(), free_port()
    extra = (f"  - id: s3\n    contact: sip:s3@127.0.0.1:{p3}\n    skills: [insurance_claim]\n    status: available\n"
             "  - id: s4\n    contact: sip:s4@127.0.0.1:9\n    skills: [insurance_claim]\n    status: logged_out\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats_yaml(p1, p2, extra))
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000", "--hangup-after", "16",
                   record=tmp_path / "s1.wav")
        start_seat(node, "s2", p2, "--answer-after", "0.8", "--tone", "700", record=tmp_path / "s2.wav")
        start_seat(node, "s3", p3, "--respond", "486")
        s1_tok = token(node, "seat", "s1")
        caller = start_caller(node, DISPUTE, gap="0.6", stay="40", record=tmp_path / "caller.wav")
        s1 = node.wait_for(lambda: (s := status(node, "s1"))["status"] == "on_call" and s, timeout=60)
        call_id = s1["call_id"]
        url = f"/api/v1/calls/{call_id}/transfer"

        # refusals: itself, a seat that is not available, nobody free in a skill, an unknown seat
        for body, code in (({"to_seat": "s1"}, 409), ({"to_seat": "s4"}, 409), ({"to_skill": "rescue"}, 409),
                           ({"to_seat": "nobody"}, 404)):
            r = post(node, url, s1_tok, {**body, "mode": "warm"})
            assert r.status_code == code, (body, r.text)
        assert "no seat available" in post(node, url, s1_tok, {"to_skill": "rescue", "mode": "warm"}).json()["detail"]
        assert post(node, f"{url}/cancel", s1_tok, {}).status_code == 409          # nothing to cancel

        # s3 refuses (486): the consult ends by itself, s1 has the caller again, s3 is not penalised
        r = post(node, url, s1_tok, {"to_seat": "s3", "mode": "warm"})
        assert r.status_code == 200, r.text
        node.wait_for(lambda: any(e["data"]["cause"] == "consult_cancelled" for e in journey(node.call(call_id))))
        assert status(node, "s3")["status"] == "available"

        r = post(node, url, s1_tok, {"to_seat": "s2", "mode": "warm", "note": "请协助"})
        assert r.status_code == 200, r.text
        # seat 2 answered, but s1 cancels before completing it
        node.wait_for(lambda: sum(x.get("event") == "consult_answered" and x.get("seat_id") == "s2"
                                  for x in node.logs()) >= 1, timeout=20)
        answered_at = time.time()
        node.wait_for(lambda: time.time() - answered_at >= 1.5)
        r = post(node, f"{url}/cancel", s1_tok, {})
        assert r.status_code == 200 and r.json()["state"] == "cancelled" and r.json()["seat_id"] == "s1", r.text
        s2 = status(node, "s2")
        assert s2["status"] == "available" and s2["call_id"] is None, s2                   # free, no penalty
        assert status(node, "s1")["status"] == "on_call"
        s2rep = node.wait_for(lambda: seat_reports(node, "s2"))[0]
        assert s2rep["ended_by"] == "remote" and s2rep["answered"], s2rep

        # s1 hangs up in the end: the one BYE the caller ever gets, from the end of the conversation
        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "remote", res
        assert res["received_requests"] == ["BYE"], res
        call = node.wait_for(lambda: (c := node.call(call_id)).get("recording_id") and c, timeout=30)
        causes = [e["data"]["cause"] for e in journey(call)]
        assert causes.count("consult_started") == 2 and causes.count("consult_cancelled") == 2, causes
        assert "consult_completed" not in causes
        cancelled = [e["at"] for e in journey(call) if e["data"]["cause"] == "consult_cancelled"][-1]
        # after the cancel the caller hears s1 again, never s2
        back, rate = window(tmp_path / "caller.wav", call["started_at"], cancelled + 0.8, cancelled + 2.8)
        assert share(back, rate, 1000) > 0.1 and share(back, rate, 700) < 0.02
        assert node.journey_errors() == []
    finally:
        node.stop()


def test_warm_transfer_needs_a_free_call_in_the_worker(tmp_path: Path) -> None:
    """One caller per worker and two pjsua2 calls: caller + seat 1 take both, so the consult leg
    cannot be made.  409 with the reason, and nothing else changes."""
    p1, p2 = free_port(), free_port()
    node = start_node(tmp_path, workers=1, seats_yaml=seats_yaml(p1, p2),
                      env={"HANDOFF_WORKER_CALLERS": "1", "HANDOFF_WORKER_MAX_CALLS": "2"})
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000")
        start_seat(node, "s2", p2, "--answer-after", "0.3", "--tone", "700")
        caller = start_caller(node, DISPUTE, gap="0.6", stay="8", record=tmp_path / "caller.wav")
        s1 = node.wait_for(lambda: (s := status(node, "s1"))["status"] == "on_call" and s, timeout=60)
        r = post(node, f"/api/v1/calls/{s1['call_id']}/transfer", node.token, {"to_seat": "s2", "mode": "warm"})
        assert r.status_code == 409 and "no free call in this worker" in r.json()["detail"], r.text
        assert status(node, "s2")["status"] == "available"
        assert status(node, "s1")["status"] == "on_call"
        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "caller" and res["received_requests"] == [], res
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert share(heard[-rate * 2:], rate, 1000) > 0.1                  # still talking to s1
        assert node.journey_errors() == []
    finally:
        node.stop()


def test_seat_1_hanging_up_completes_and_a_caller_hanging_up_ends_every_leg(tmp_path: Path) -> None:
    """Call A: s1 hangs up during the consult after s2 answered: s2 keeps the caller (as Asterisk
    does).  Call B: the caller hangs up while s4 still rings for the consult: every leg ends, s3 goes
    to wrap-up and s4 straight back to available."""
    p1, p2, p3, p4 = free_port(), free_port(), free_port(), free_port()
    extra = (f"  - id: s3\n    contact: sip:s3@127.0.0.1:{p3}\n    skills: [online_determination]\n"
             "    status: not_ready\n"
             f"  - id: s4\n    contact: sip:s4@127.0.0.1:{p4}\n    skills: [insurance_claim]\n    status: available\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats_yaml(p1, p2, extra))
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000", "--hangup-after", "7")
        start_seat(node, "s2", p2, "--answer-after", "0.5", "--tone", "700")
        start_seat(node, "s3", p3, "--answer-after", "0.3", "--tone", "1000")
        start_seat(node, "s4", p4, "--answer-after", "never", "--tone", "900")   # rings, never answers
        caller = start_caller(node, DISPUTE, gap="0.6", stay="22", record=tmp_path / "a.wav")
        s1 = node.wait_for(lambda: (s := status(node, "s1"))["status"] == "on_call" and s, timeout=60)
        call_a = s1["call_id"]
        r = post(node, f"/api/v1/calls/{call_a}/transfer", node.token, {"to_seat": "s2", "mode": "warm"})
        assert r.status_code == 200, r.text
        node.wait_for(lambda: any(e["data"]["cause"] == "consult_completed" for e in journey(node.call(call_a))),
                      timeout=20)
        done = next(e for e in journey(node.call(call_a)) if e["data"]["cause"] == "consult_completed")
        assert "seat 1 hung up" in done["data"]["detail"], done
        # s2 took the caller over (on_call, or already in wrap-up if the caller's stay ran out on a
        # loaded machine); the caller's last seconds below are s2's tone either way
        assert status(node, "s2")["status"] in ("on_call", "wrap_up")
        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "caller" and res["received_requests"] == [], res
        rate, heard = read_pcm16(tmp_path / "a.wav")
        assert share(heard[-rate * 3:], rate, 700) > 0.1

        # call B: s3 takes it, consults s4 (ringing), the caller hangs up meanwhile
        for seat_id, st in (("s1", "not_ready"), ("s3", "available")):   # s3 (not s1) takes call B
            assert httpx.put(f"http://127.0.0.1:{node.api_port}/api/v1/seats/{seat_id}/status", json={"status": st},
                             headers={"Authorization": f"Bearer {node.token}"}, timeout=10).status_code == 200
        caller = start_caller(node, DISPUTE, gap="0.6", hangup_at="14", record=tmp_path / "b.wav")
        s3 = node.wait_for(lambda: (s := status(node, "s3"))["status"] == "on_call" and s, timeout=60)
        call_b = s3["call_id"]
        r = post(node, f"/api/v1/calls/{call_b}/transfer", token(node, "seat", "s3"),
                 {"to_skill": "insurance_claim", "mode": "warm"})
        assert r.status_code == 200 and r.json()["to_seat"] == "s4", r.text     # s2 is busy with call A's caller
        assert status(node, "s4")["status"] == "reserved"
        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "caller" and res["received_requests"] == [], res
        node.wait_for(lambda: status(node, "s4")["status"] == "available" and status(node, "s3")["status"] == "wrap_up")
        s4rep = node.wait_for(lambda: seat_reports(node, "s4"))[0]
        assert s4rep["call_id"] == call_b and not s4rep["answered"], s4rep
        call = node.wait_for(lambda: (c := node.call(call_b)).get("recording_id") and c, timeout=30)
        moves = [(e["data"]["from"], e["data"]["cause"]) for e in journey(call)]
        assert ("consulting", "caller_hung_up") in moves, moves
        assert node.journey_errors() == []
    finally:
        node.stop()


def test_seat_1_leaving_before_seat_2_answers_sends_the_caller_to_seat_2(tmp_path: Path) -> None:
    """s1 hangs up while s2 still rings for the consult: the consult becomes a blind transfer to s2
    (the caller keeps hearing hold audio, s2 is rung again and takes the caller)."""
    p1, p2 = free_port(), free_port()
    node = start_node(tmp_path, workers=2, seats_yaml=seats_yaml(p1, p2))
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000", "--hangup-after", "2.5")
        start_seat(node, "s2", p2, "--answer-after", "5", "--tone", "700")
        caller = start_caller(node, DISPUTE, gap="0.6", stay="22", record=tmp_path / "caller.wav")
        s1 = node.wait_for(lambda: (s := status(node, "s1"))["status"] == "on_call" and s, timeout=60)
        call_id = s1["call_id"]
        r = post(node, f"/api/v1/calls/{call_id}/transfer", node.token, {"to_seat": "s2", "mode": "warm", "note": NOTE})
        assert r.status_code == 200, r.text
        node.wait_for(lambda: status(node, "s2")["status"] == "on_call", timeout=30)
        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "caller" and res["received_requests"] == [], res
        reports = node.wait_for(lambda: (r := seat_reports(node, "s2")) and len(r) >= 2 and r)
        assert [x["answered"] for x in reports] == [False, True], reports   # the consult INVITE, then the transfer
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert share(heard[-rate * 3:], rate, 700) > 0.1
        call = node.wait_for(lambda: (c := node.call(call_id)).get("recording_id") and c, timeout=30)
        moves = [(e["data"]["from"], e["data"]["cause"]) for e in journey(call)]
        assert ("consulting", "transferred") in moves and ("talking", "consult_started") in moves, moves
        assert node.journey_errors() == []
    finally:
        node.stop()
