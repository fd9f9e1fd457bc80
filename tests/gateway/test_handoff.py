"""Live hand-off without hang-up, end to end: pjsua2 callers and seats through a real node."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from recordings.wav import read_pcm16, rms, tone_power
from tests.conftest import free_port, sipp_media_port
from tests.node_harness import (
    RunningNode,
    caller_result,
    run_caller,
    seat_reports,
    start_caller,
    start_node,
    start_seat,
)
from tests.sipp_driver import digits_xml, render, run_sipp

pytestmark = pytest.mark.sip

ELIGIBLE_DISPUTE = "1 2 1 2 2 2 1"   # -> online_determination p3
IMMOBILE = "1 2 2"                    # -> rescue p2
HUMAN = "0"                           # -> intake_guidance p3


def seats_yaml(*seats: tuple[str, str, int | str]) -> str:
    lines = ["seats:"]
    for sid, skill, port in seats:
        contact = port if isinstance(port, str) else f"sip:{sid}@127.0.0.1:{port}"
        lines += [f"  - id: {sid}", f"    name: {sid}", f"    contact: {contact}", f"    skills: [{skill}]",
                  "    status: available"]
    return "\n".join(lines) + "\n"


def seat_status(node: RunningNode, seat_id: str) -> dict:
    return next(s for s in node.get("/api/v1/seats").json() if s["id"] == seat_id)


def events_of(call: dict) -> list[str]:
    return [e["kind"] for e in call["events"]]


def tone_share(path: Path, hz: float) -> float:
    rate, samples = read_pcm16(path)
    return tone_power(samples, rate, hz) / max(1.0, rms(samples) ** 2)


def test_eligible_caller_reaches_the_online_determination_seat_audio_both_ways(tmp_path: Path) -> None:
    p1 = free_port()
    node = start_node(tmp_path, workers=2, seats_yaml=seats_yaml(("s1", "online_determination", p1)))
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.5", record=tmp_path / "s1.wav")
        t0 = time.time()
        res = run_caller(node, ELIGIBLE_DISPUTE, gap=0.8, stay=5, record=tmp_path / "caller.wav")
        assert res["answered"] and res["bridged"], res
        assert res["hung_up_by"] == "caller"
        rep = node.wait_for(lambda: seat_reports(node, "s1"))[0]
        assert rep["skill"] == "online_determination" and rep["call_id"].startswith("c-")
        assert rep["caller_tone_s"] >= 1.0, rep          # the seat heard the caller
        assert res["seat_tone_s"] >= 1.0, res            # the caller heard the seat
        call = node.wait_for(lambda: (c := node.call(rep["call_id"]))["end_reason"] == "completed" and c)
        assert call["started_at"] >= t0 - 1
        assert call["seat_id"] == "s1" and call["seat_answered_at"]
        assert call["ivr"]["skill"] == "online_determination" and call["ivr"]["priority"] == 3
        kinds = events_of(call)
        for k in ("CALLSTART", "IVRDONE", "ENTERQUEUE", "OFFER", "CONNECT", "COMPLETE"):
            assert k in kinds, kinds
        # The call recording covers IVR and conversation: both parties audible.
        node.wait_for(lambda: node.call(rep["call_id"]).get("recording_id"))
        rec = node.get(f"/api/v1/recordings/{call['recording_id']}")
        assert rec.status_code == 200
        path = tmp_path / "call.wav"
        path.write_bytes(rec.content)
        rate, samples = read_pcm16(path)
        # the conversation: from the seat's answer (the recording starts when the caller is answered)
        # to the end, less its first half second (the bridge settling)
        start = float(call["seat_answered_at"]) - float(call.get("answered_at") or call["started_at"]) + 0.5
        talk = samples[int(start * rate):]
        assert len(talk) >= rate, (start, len(samples) / rate)
        energy = rms(talk) ** 2
        assert tone_power(talk, rate, 440) / energy > 0.1
        assert tone_power(talk, rate, 1000) / energy > 0.1
        # The seat is in wrap-up after the call.
        assert seat_status(node, "s1")["status"] in ("wrap_up", "available")
        assert node.journey_errors() == []
    finally:
        node.stop()


def test_ring_no_answer_goes_to_the_next_seat_without_silence(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    node = start_node(tmp_path, workers=2, args=["--ring-timeout", "3"],
                      seats_yaml=seats_yaml(("s1", "rescue", p1), ("s2", "rescue", p2)))
    try:
        start_seat(node, "s1", p1, "--answer-after", "never")
        # s2 logs in only once s1 is ringing, so s1 is certainly offered first.
        caller = start_caller(node, IMMOBILE, gap=0.8, stay=12, record=tmp_path / "caller.wav")
        node.wait_for(lambda: seat_status(node, "s1")["status"] == "reserved", timeout=40)
        start_seat(node, "s2", p2, "--answer-after", "0.5")
        res = caller_result(caller)
        assert res["answered"] and res["bridged"], res
        assert res["hung_up_by"] == "caller"           # never hung up on
        assert res["longest_silence_s"] < 3.0, res      # hold message, never silence
        s1 = seat_status(node, "s1")
        assert s1["status"] == "not_ready"
        rep2 = seat_reports(node, "s2")[0]
        call = node.wait_for(lambda: (c := node.call(rep2["call_id"]))["end_reason"] and c)
        kinds = events_of(call)
        assert kinds.count("OFFER") == 2 and "RINGNOANSWER" in kinds and call["seat_id"] == "s2"
        assert node.journey_errors() == []
    finally:
        node.stop()


@pytest.mark.parametrize("how", ["declines", "unreachable"])
def test_seat_failure_keeps_the_caller(tmp_path: Path, how: str) -> None:
    p1, p2 = free_port(), free_port()
    # Unreachable: nothing listens on p1; over TCP the refused connection is reported at once
    # (over UDP only the ring timer could tell, which is the ring-no-answer path).
    s1_contact = f"sip:s1@127.0.0.1:{p1};transport=tcp" if how == "unreachable" else p1
    node = start_node(tmp_path, workers=2, args=["--ring-timeout", "4"],
                      seats_yaml=seats_yaml(("s1", "intake_guidance", s1_contact), ("s2", "intake_guidance", p2)))
    try:
        if how == "declines":
            start_seat(node, "s1", p1, "--respond", "603")
        caller = start_caller(node, HUMAN, stay=10)
        # s1 is tried first and fails; only then does s2 log in
        node.wait_for(lambda: any("SEATFAILED" in events_of(node.call(c["id"])) for c in node.calls(5)), timeout=40)
        start_seat(node, "s2", p2, "--answer-after", "0.3")
        res = caller_result(caller)
        assert res["answered"] and res["bridged"] and res["hung_up_by"] == "caller", res
        rep = seat_reports(node, "s2")[0]
        call = node.wait_for(lambda: (c := node.call(rep["call_id"]))["end_reason"] and c)
        assert "SEATFAILED" in events_of(call) and call["seat_id"] == "s2"
        failed = next(e for e in call["events"] if e["kind"] == "SEATFAILED")
        # the SIP/PJSIP words stay with the event, for the people who look into it later
        assert failed["data"]["detail"], failed
        if how == "declines":
            assert failed["data"]["reason"] == "declined"
        if how == "unreachable":
            assert seat_status(node, "s1")["status"] == "not_ready"
        else:  # the seat's own 603 is a seat-leg SIP error, counted once
            assert 'handoff122_sip_errors_total{code="603",leg="seat"} 1.0' in node.metrics()
            assert 'handoff122_seat_ring_seconds_count{outcome="declined",skill="intake_guidance"} 1.0' \
                in node.metrics()
        assert node.journey_errors() == []
    finally:
        node.stop()


def test_caller_abandons_while_the_seat_rings(tmp_path: Path) -> None:
    p1 = free_port()
    node = start_node(tmp_path, workers=2, seats_yaml=seats_yaml(("s1", "intake_guidance", p1)))
    try:
        start_seat(node, "s1", p1, "--answer-after", "never")
        caller = start_caller(node, HUMAN, hangup_at=6)
        node.wait_for(lambda: seat_status(node, "s1")["status"] == "reserved", timeout=30)
        res = caller_result(caller)
        assert res["hung_up_by"] == "caller"
        rep = node.wait_for(lambda: seat_reports(node, "s1"))[0]
        assert rep["answered"] is False                 # the seat leg was cancelled
        call = node.wait_for(lambda: (c := node.call(rep["call_id"]))["end_reason"] and c)
        assert call["end_reason"] == "abandoned" and "ABANDON" in events_of(call)
        node.wait_for(lambda: seat_status(node, "s1")["status"] == "available")
        q = next(x for x in node.get("/api/v1/queues").json() if x["skill"] == "intake_guidance")
        assert q["abandoned"] == 1 and q["waiting"] == 0
        assert node.journey_errors() == []
    finally:
        node.stop()


def test_order_is_kept_and_a_more_urgent_caller_goes_first(tmp_path: Path) -> None:
    """One intake seat, busy: a p4 caller queues, then a p3 caller; the p3 caller is served first."""
    p1 = free_port()
    node = start_node(tmp_path, workers=3, env={"HANDOFF_WRAP_UP_S": "1"},
                      seats_yaml=seats_yaml(("s1", "intake_guidance", p1)))

    def waiting(priority: int) -> bool:
        return any(c["priority"] == priority and c["queued_at"] and not c["ended_at"] and not c["seat_id"]
                   for c in node.calls(10))

    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--hangup-after", "10")
        first = start_caller(node, HUMAN, stay=60)                      # p3, takes the seat
        node.wait_for(lambda: seat_status(node, "s1")["status"] == "on_call", timeout=30)
        low = start_caller(node, "1 2 1 2 2 2 2", gap=0.5, stay=60)     # eligible, no dispute: p4
        node.wait_for(lambda: waiting(4), timeout=30)
        high = start_caller(node, HUMAN, stay=60)                       # p3, arrives later
        node.wait_for(lambda: waiting(3), timeout=30)
        results = [caller_result(p, timeout=180) for p in (first, low, high)]
        assert all(r["answered"] and r["bridged"] for r in results), results
        reps = node.wait_for(lambda: (r := seat_reports(node, "s1")) and len(r) >= 3 and r, timeout=60)
        calls = {c["id"]: c for c in node.calls(10)}
        order = [calls[r["call_id"]]["priority"] for r in reps[:3]]
        assert order == [3, 3, 4], order
        assert len({r["call_id"] for r in reps[:3]}) == 3
        assert node.journey_errors() == []
    finally:
        node.stop()


def test_sipp_as_the_seat_checks_the_handoff_headers(tmp_path: Path) -> None:
    p1 = free_port()
    node = start_node(tmp_path, workers=2, seats_yaml=seats_yaml(("s1", "rescue", p1)))
    try:
        scenario = render("uas_seat_headers.xml", skill="rescue")
        workdir = tempfile.mkdtemp()
        uas = subprocess.Popen(["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(p1), "-m", "1",
                                "-cp", str(free_port()), "-mi", "127.0.0.1", "-mp", str(sipp_media_port()), "-nostdin",
                                "-trace_msg", "-trace_logs", "-timeout", "90s", "-timeout_error"],
                               cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        res = run_caller(node, IMMOBILE, gap=0.8, stay=3)
        assert res["answered"] and res["hung_up_by"] == "caller"
        out, err = uas.communicate(timeout=60)
        assert uas.returncode == 0, out[-2000:] + err[-1000:]
        logs = "".join(p.read_text() for p in Path(workdir).glob("*_logs.log"))
        assert "HANDOFF c-" in logs and "rescue" in logs
        assert node.journey_errors() == []
    finally:
        node.stop()


def test_sipp_as_the_caller_is_handed_to_a_seat(tmp_path: Path) -> None:
    p1 = free_port()
    node = start_node(tmp_path, workers=2, seats_yaml=seats_yaml(("s1", "intake_guidance", p1)))
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3")
        r = run_sipp("uac_122_dtmf.xml", node.sip_port, service="122", first="1200", stay="4000",
                     digits=digits_xml("0", 300))
        assert r.ok, r.stdout + r.log
        rep = node.wait_for(lambda: seat_reports(node, "s1"))[0]
        assert rep["answered"] and rep["skill"] == "intake_guidance" and rep["caller"] == "13800138000"
        call = node.wait_for(lambda: (c := node.call(rep["call_id"]))["end_reason"] and c)
        assert call["seat_id"] == "s1" and call["ended_by"] == "caller" and "CONNECT" in events_of(call)
        assert node.journey_errors() == []
    finally:
        node.stop()
