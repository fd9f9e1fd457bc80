"""The SIP edge against real peers: SIPp and pjsua2 callers through the Kamailio front door."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import wave
from pathlib import Path

import pytest

from recordings.wav import read_pcm16, rms
from tests.conftest import ROOT, serve_port_args
from tests.node_harness import RunningNode, run_caller, start_node
from tests.sipp_driver import digits_xml, run_sipp

pytestmark = pytest.mark.sip


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory):
    # 2 workers x 2 callers = capacity 4; a short ring before answer so a caller can CANCEL.
    n = start_node(tmp_path_factory.mktemp("edge"), workers=2, env={"HANDOFF_ANSWER_DELAY_S": "1.0"})
    yield n
    assert n.stop() == 0, n.log_path.read_text()[-3000:]


def _newest_call(node: RunningNode, after: float) -> dict:
    def find():
        calls = [c for c in node.calls(10) if c["started_at"] >= after - 1 and c.get("ended_at")]
        return calls[0] if calls else None

    return node.wait_for(find, timeout=30)


def _keys(call: dict) -> str:
    return "".join(k["digit"] for k in call["ivr"]["keys"])


def _no_media_leaks(node: RunningNode) -> None:
    def clean():
        m = node.metrics()
        vals = {}
        for line in m.splitlines():
            for name in ("handoff122_gateway_media_calls", "handoff122_gateway_media_players",
                         "handoff122_gateway_media_recorders"):
                if line.startswith(name + " "):
                    vals[name] = float(line.split()[-1])
        return len(vals) == 3 and all(v == 0 for v in vals.values())

    node.wait_for(clean, timeout=15)


def test_122_with_rfc4733_digits_through_the_front_door(node: RunningNode) -> None:
    # SIPp replays one capture per digit, RTP sequence numbers and all; they ascend 1 < 2 < ... < 9 < 0,
    # so one SIPp call can press each digit once, in that order (a replayed capture is a duplicate
    # to any RTP stack).  1 2 0: new accident, nobody injured, then "a person" at the next question.
    t0 = time.time()
    r = run_sipp("uac_122_dtmf.xml", node.sip_port, service="122", first="1500", stay="1500",
                 digits=digits_xml("120", 1200))
    assert r.ok, r.stdout + r.log
    call = _newest_call(node, t0)
    assert _keys(call) == "120"
    assert [a["node"] for a in call["ivr"]["answers"]] == ["welcome", "injury", "movable"]
    assert call["ivr"]["skill"] == "intake_guidance"
    assert call["ivr"]["priority"] == 3
    assert call["ivr"]["reason"] == "asked_for_human"
    # The first key came during the (long) welcome prompt: barge-in, recorded as such.
    assert call["ivr"]["keys"][0]["barge_in"] is True
    _no_media_leaks(node)


def test_a_call_over_tcp(node: RunningNode) -> None:
    t0 = time.time()
    r = run_sipp("uac_122_dtmf.xml", node.sip_port, transport="t1", service="122", first="1500", stay="800",
                 digits=digits_xml("3", 500))
    assert r.ok, r.stdout + r.log
    call = _newest_call(node, t0)
    assert call["ivr"]["skill"] == "insurance_claim" and call["ended_by"] == "caller"


def test_other_numbers_get_404(node: RunningNode) -> None:
    r = run_sipp("uac_expect_code.xml", node.sip_port, service="999", code="404", ra_check="false")
    assert r.ok, r.stdout + r.log


def test_cancel_before_answer_leaves_nothing_behind(node: RunningNode) -> None:
    r = run_sipp("uac_cancel.xml", node.sip_port, service="122")
    assert r.ok, r.stdout + r.log
    _no_media_leaks(node)


def test_caller_bye_during_the_welcome_prompt(node: RunningNode) -> None:
    t0 = time.time()
    r = run_sipp("uac_122_dtmf.xml", node.sip_port, service="122", first="1000", stay="0", digits="")
    assert r.ok, r.stdout + r.log
    call = _newest_call(node, t0)
    assert call["ended_by"] == "caller"
    assert call["end_reason"] == "caller_hangup_in_ivr"
    _no_media_leaks(node)


def test_reinvite_hold_and_resume(node: RunningNode) -> None:
    r = run_sipp("uac_hold.xml", node.sip_port, service="122")
    assert r.ok, r.stdout + r.log
    _no_media_leaks(node)


def test_over_capacity_gets_503_and_calls_in_progress_are_untouched(node: RunningNode) -> None:
    results: dict[str, object] = {}

    def hold_four() -> None:
        results["held"] = run_sipp("uac_122_dtmf.xml", node.sip_port, calls=4, concurrency=4, rate=10,
                                   service="122", first="500", stay="9000", digits="")

    t = threading.Thread(target=hold_four)
    t.start()
    node.wait_for(lambda: sum(1 for c in node.calls(10) if not c.get("ended_at")) >= 4, timeout=20)
    r = run_sipp("uac_expect_code.xml", node.sip_port, service="122", code="503", ra_check="true")
    assert r.ok, r.stdout + r.log
    t.join(60)
    held = results["held"]
    assert held.ok and held.successful == 4, held.stdout + held.log  # type: ignore[attr-defined]


def test_malformed_sip_and_garbage_leave_the_node_answering(node: RunningNode) -> None:
    workers = node.worker_pids()
    assert workers
    died_before = sum(x.get("event") == "worker_died" for x in node.logs())
    junk = [
        os.urandom(600),
        b"\x00\x01\x02 not sip at all\r\n\r\n",
        b"INVITE sip:122@127.0.0.1 SIP/2.0\r\nVia: broken\r\nCSeq: nonsense\r\nContent-Length: 99999\r\n\r\nv=0",
        b"INVITE  SIP/2.0\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKx\r\n\r\n",
    ]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(40):
        for j in junk:
            s.sendto(j, ("127.0.0.1", node.sip_port))
    tcp = socket.create_connection(("127.0.0.1", node.sip_port), timeout=5)
    tcp.sendall(junk[2] + junk[0])
    tcp.close()
    s.close()
    t0 = time.time()
    r = run_sipp("uac_122_dtmf.xml", node.sip_port, service="122", first="1500", stay="1000",
                 digits=digits_xml("0", 500))
    assert r.ok, r.stdout + r.log
    call = _newest_call(node, t0)
    assert call["ivr"]["skill"] == "intake_guidance"
    # the same worker processes serve: none crashed and was restarted by the garbage
    assert node.worker_pids() == workers
    for pid in workers.values():
        os.kill(pid, 0)
    started = next(e for e in node.call(call["id"])["events"] if e["kind"] == "CALLSTART")
    assert started["data"]["worker_id"] in workers
    assert sum(x.get("event") == "worker_died" for x in node.logs()) == died_before


@pytest.mark.parametrize("method", ["rfc4733", "info"])
def test_handoff122_call_with_both_dtmf_methods(node: RunningNode, tmp_path: Path, method: str) -> None:
    t0 = time.time()
    heard = tmp_path / "heard.wav"
    result = run_caller(node, "1 2 2", gap=1.0, stay=1.5, dtmf=method, record=heard)
    assert result["answered"] is True
    assert result["digits_sent"] == "122"
    call = _newest_call(node, t0)
    assert _keys(call) == "122"
    assert call["ivr"]["skill"] == "rescue" and call["ivr"]["priority"] == 2
    # What the caller heard is a valid, non-silent WAV (the prompts).
    with wave.open(str(heard)) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1
    _, samples = read_pcm16(heard)
    assert rms(samples) > 100
    # The call's own recording is sealed, catalogued and downloadable.
    rec = node.get(f"/api/v1/recordings/{call['recording_id']}")
    assert rec.status_code == 200 and rec.headers["content-type"].startswith("audio/wav")
    rec_path = tmp_path / "call.wav"
    rec_path.write_bytes(rec.content)
    _, rec_samples = read_pcm16(rec_path)
    assert len(rec_samples) > 8000 * 3 and rms(rec_samples) > 100


@pytest.mark.parametrize(("keys", "skill", "priority", "reason"), [
    ("1 2 1 2 2 2 2", "intake_guidance", 4, "eligible_self_settlement"),
    ("1 2 1 2 2 1", "online_review", 3, "facility_damage"),
    ("2", "accident_query", 4, "earlier_accident_query"),
])
def test_ivr_paths_over_sip(node: RunningNode, keys: str, skill: str, priority: int, reason: str) -> None:
    t0 = time.time()
    result = run_caller(node, keys, gap=0.7, stay=1.0)
    assert result["answered"] and result["hung_up_by"] == "caller"
    call = _newest_call(node, t0)
    assert _keys(call) == keys.replace(" ", "")
    assert (call["ivr"]["skill"], call["ivr"]["priority"], call["ivr"]["reason"]) == (skill, priority, reason)
    assert call["end_reason"] == "abandoned"  # no seat in this node: the caller waited, then left


def test_recordings_dir_broken_the_call_goes_on_and_is_flagged(tmp_path: Path) -> None:
    n = start_node(tmp_path, workers=1)
    partial = n.data_dir / "recordings" / ".partial"
    try:
        # As if the disk were full: nothing can be created where the recorder writes.
        partial.rmdir()
        partial.write_text("not a directory")
        t0 = time.time()
        result = run_caller(n, "2", gap=0.5, stay=1.5)
        assert result["answered"] and result["hung_up_by"] == "caller"  # the call went on
        call = _newest_call(n, t0)
        assert call["ivr"]["skill"] == "accident_query"
        assert call["flags"].get("recording_failed"), call
        n.wait_for(lambda: "recording_failed" in n.log_path.read_text())
    finally:
        partial.unlink(missing_ok=True)
        partial.mkdir(exist_ok=True)
        assert n.stop() == 0


def test_worker_killed_mid_call(node: RunningNode) -> None:
    t0 = time.time()
    bg = threading.Thread(target=lambda: run_sipp("uac_122_dtmf.xml", node.sip_port, service="122", first="500",
                                                  stay="20000", digits="", timeout=40))
    bg.start()
    live = node.wait_for(lambda: [c for c in node.calls(5) if not c.get("ended_at") and c["started_at"] >= t0 - 1],
                         timeout=20)
    call_id = live[0]["id"]
    detail = node.call(call_id)
    start = next(e for e in detail["events"] if e["kind"] == "CALLSTART")
    worker_id = start["data"]["worker_id"]
    old_pid = node.worker_pids()[worker_id]
    os.kill(old_pid, signal.SIGKILL)
    ended = node.wait_for(lambda: (c := node.call(call_id)).get("ended_at") and c, timeout=20)
    assert ended["end_reason"] == "lost_worker_failure"
    node.wait_for(lambda: node.worker_pids().get(worker_id, old_pid) != old_pid, timeout=20)
    bg.join(60)
    # New callers are served (the front door routes around, then back to, the new worker).
    for _ in range(3):
        r = run_sipp("uac_122_dtmf.xml", node.sip_port, service="122", first="500", stay="500", digits="")
        assert r.ok, r.stdout + r.log


def test_direct_mode_without_kamailio(tmp_path: Path) -> None:
    n = start_node(tmp_path, workers=1, args=["--kamailio", "off"])
    try:
        assert "kamailio not found: running one media worker directly" in n.log_path.read_text()
        t0 = time.time()
        r = run_sipp("uac_122_dtmf.xml", n.sip_port, service="122", first="1500", stay="500",
                     digits=digits_xml("3", 300))
        assert r.ok, r.stdout + r.log
        assert _newest_call(n, t0)["ivr"]["skill"] == "insurance_claim"
        r = run_sipp("uac_expect_code.xml", n.sip_port, service="110", code="404", ra_check="false")
        assert r.ok, r.stdout + r.log
    finally:
        assert n.stop() == 0


def _serve(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "v"), *args],
                          capture_output=True, text=True, timeout=60)


def test_bad_configuration_exits_with_one_line(tmp_path: Path) -> None:
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    port = busy.getsockname()[1]
    try:
        p = _serve([*serve_port_args(port), "--api-port", "0"], tmp_path)
        assert p.returncode == 2 and "already in use" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    finally:
        busy.close()
    bad_seats = tmp_path / "seats.yaml"
    bad_seats.write_text("seats:\n  - id: s1\n    contact: sip:s1@127.0.0.1:5091\n    skills: [flying]\n")
    p = _serve(["--seats", str(bad_seats), "--api-port", "0"], tmp_path)
    assert p.returncode == 2 and "flying" in p.stderr, p.stderr
    p = _serve(["--flow", str(tmp_path / "missing.yaml"), "--api-port", "0"], tmp_path)
    assert p.returncode == 2 and "missing.yaml" in p.stderr, p.stderr
    bad_flow = tmp_path / "flow.yaml"
    bad_flow.write_text((ROOT / "ivr" / "flows" / "default.yaml").read_text().replace("goto: movable", "goto: nowhere")
                        .replace("skill: rescue", "skill: towing"))
    p = _serve(["--flow", str(bad_flow), "--api-port", "0"], tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "nowhere" in p.stderr and "towing" in p.stderr, p.stderr
    p = _serve(["--workers", "0"], tmp_path)
    assert p.returncode == 2 and "workers" in p.stderr, p.stderr
