"""The front door trusts nobody (issue 12): forged identity, REFER, relaying through us, local
dial failures.  Real peers only: SIPp callers from other loopback sources, pjsua2 seat phones,
SIPp or a bare UDP socket as the party a caller would like us to reach."""

from __future__ import annotations

import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, sipp_media_port
from tests.node_harness import RunningNode, seat_reports, start_node, start_seat
from tests.sipp_driver import digits_xml, render, run_sipp

pytestmark = pytest.mark.sip

TRUNK = "127.0.0.3"      # configured as a trunk source
STRANGER = "127.0.0.2"   # anyone else
HOSTILE_PAI = '<sip:1 2"x' + "7" * 300 + f"@{STRANGER}>"
FORGED = "\n".join([
    f"P-Asserted-Identity: {HOSTILE_PAI}",
    f"P-Preferred-Identity: <sip:110@{STRANGER}>",
    f'Remote-Party-ID: "police" <sip:110@{STRANGER}>;party=calling',
    "X-Handoff-Skill: police_dispatch",
    "X-Handoff-Call-Id: c-0000000000000000",
])


def _seats(*rows: tuple[str, str, str]) -> str:
    lines = ["seats:"]
    for sid, skill, contact in rows:
        lines += [f"  - id: {sid}", f"    name: {sid}", f"    contact: {contact}", f"    skills: [{skill}]",
                  "    status: available"]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    tmp = tmp_path_factory.mktemp("edge-trust")
    p1, p2, p9 = free_port(), free_port(), free_port()
    seats = _seats(("s1", "intake_guidance", f"sip:s1@127.0.0.1:{p1}"),
                   ("s2", "intake_guidance", f"sip:s2@127.0.0.1:{p2}"),
                   # a contact this gateway cannot dial (it has no TLS transport): a local failure
                   ("s9", "accident_query", f"sip:s9@127.0.0.1:{p9};transport=tls"))
    n = start_node(tmp, workers=2, seats_yaml=seats,
                   env={"HANDOFF_TRUNK_SOURCES": TRUNK, "HANDOFF_ANSWER_DELAY_S": "0", "HANDOFF_WRAP_UP_S": "0"})
    start_seat(n, "s1", p1, "--answer-after", "0.3")
    start_seat(n, "s2", p2, "--answer-after", "0.3")
    yield n
    assert n.stop() == 0, n.log_path.read_text()[-3000:]


def _statuses(node: RunningNode) -> dict[str, str]:
    return {s["id"]: s["status"] for s in node.get("/api/v1/seats").json()}


def _hostile_call(node: RunningNode, source: str) -> None:
    r = run_sipp("uac_hostile_identity.xml", node.sip_port, local_ip=source, service="122",
                 from_user="+86(138)0013-8000", forged=FORGED, first="1200", stay="3500",
                 digits=digits_xml("0", 300))
    assert r.ok, r.stdout + r.log


def _answered_reports(node: RunningNode, n: int) -> list[dict]:
    def got():
        reps = [r for sid in ("s1", "s2") for r in seat_reports(node, sid)]
        return reps if len(reps) >= n else None

    return sorted(node.wait_for(got, timeout=40), key=lambda r: r.get("n", 0))


def test_forged_identity_from_a_stranger_is_removed_and_the_seat_gets_a_clean_number(node: RunningNode) -> None:
    before = len([r for sid in ("s1", "s2") for r in seat_reports(node, sid)])
    _hostile_call(node, STRANGER)
    rep = _answered_reports(node, before + 1)[-1]
    # The seat leg was dialled (PJSIP accepted its From) and answered; the number is the caller's
    # own From, normalised; nothing of the forged PAI, nor the forged skill or call id.
    assert rep["answered"], rep
    assert rep["caller"] == "+8613800138000" and rep["pai"] == "+8613800138000", rep
    assert rep["skill"] == "intake_guidance" and rep["call_id"] != "c-0000000000000000", rep
    call = node.wait_for(lambda: (c := node.call(rep["call_id"])).get("ended_at") and c)
    assert call["caller"] == "+8613800138000" and call["seat_id"] in ("s1", "s2")
    start = next(e for e in call["events"] if e["kind"] == "CALLSTART")
    assert start["data"]["caller_raw"].startswith('"sipp" <sip:+86(138)0013-8000@')
    assert "SEATFAILED" not in [e["kind"] for e in call["events"]]
    node.wait_for(lambda: set(_statuses(node).values()) == {"available"}, timeout=20)


def test_a_trunk_is_believed_but_its_number_is_normalised_and_bounded(node: RunningNode) -> None:
    before = len([r for sid in ("s1", "s2") for r in seat_reports(node, sid)])
    _hostile_call(node, TRUNK)
    rep = _answered_reports(node, before + 1)[-1]
    # From a trunk the P-Asserted-Identity counts: its digits only, at most 32 of them.
    assert rep["answered"], rep
    assert rep["caller"] == "12" + "7" * 30 and rep["pai"] == rep["caller"], rep
    call = node.wait_for(lambda: (c := node.call(rep["call_id"])).get("ended_at") and c)
    raw = next(e for e in call["events"] if e["kind"] == "CALLSTART")["data"]["caller_raw"]
    assert raw.startswith('<sip:1 2"x777') and len(raw) == 200
    assert "SEATFAILED" not in [e["kind"] for e in call["events"]]
    node.wait_for(lambda: set(_statuses(node).values()) == {"available"}, timeout=20)


def test_a_local_dial_failure_never_marks_the_seat_unreachable(node: RunningNode) -> None:
    t0 = time.time()
    caller = subprocess.Popen(
        ["sipp", f"127.0.0.1:{node.sip_port}", "-sf", str(render(
            "uac_122_dtmf.xml", service="122", first="1200", stay="4000", digits=digits_xml("2", 300))),
         "-m", "1", "-i", "127.0.0.1", "-p", str(free_port()), "-cp", str(free_port()), "-mi", "127.0.0.1",
         "-mp", str(sipp_media_port()), "-nostdin", "-timeout", "40s", "-timeout_error"],
        cwd=tempfile.mkdtemp(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def failed_locally():
            live = [c for c in node.calls(5) if c["started_at"] >= t0 - 1]
            for c in live:
                for e in node.call(c["id"])["events"]:
                    if e["kind"] == "SEATFAILED":
                        return e
            return None

        ev = node.wait_for(failed_locally, timeout=30)
        assert ev["seat_id"] == "s9" and ev["data"]["reason"] == "local_error", ev
        assert _statuses(node)["s9"] == "available"
        assert "local_error" in node.log_path.read_text()
    finally:
        assert caller.wait(60) == 0
    assert _statuses(node)["s9"] == "available"


def _target_heard(workdir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in workdir.glob("*_messages.log"))


@pytest.fixture
def target(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    workdir = tmp_path / "target"
    workdir.mkdir()
    uas = subprocess.Popen(["sipp", "-sf", str(render("uas_answer.xml")), "-i", "127.0.0.1", "-p", str(port),
                            "-m", "1", "-cp", str(free_port()), "-mi", "127.0.0.1", "-mp", str(sipp_media_port()),
                            "-nostdin", "-trace_msg"], cwd=workdir, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    yield port, workdir
    uas.send_signal(signal.SIGTERM)
    try:
        uas.wait(10)
    except subprocess.TimeoutExpired:
        uas.kill()
        uas.wait()


def test_a_callers_refer_is_refused_at_the_front_door_and_nobody_is_called(node: RunningNode, target) -> None:
    port, workdir = target
    r = run_sipp("uac_refer.xml", node.sip_port, local_ip=STRANGER, service="122", refer_code="403",
                 target=f"sip:900990099@127.0.0.1:{port}")
    assert r.ok, r.stdout + r.log
    assert "INVITE" not in _target_heard(workdir)


def test_the_worker_itself_refuses_a_transfer(tmp_path: Path, target) -> None:
    # No front door: the REFER reaches the media worker, whose caller leg refuses it (603).
    port, workdir = target
    n = start_node(tmp_path, workers=1, args=["--kamailio", "off"], token=False)
    try:
        r = run_sipp("uac_refer.xml", n.sip_port, service="122", refer_code="603",
                     target=f"sip:900990099@127.0.0.1:{port}")
        assert r.ok, r.stdout + r.log
        assert "INVITE" not in _target_heard(workdir)
    finally:
        assert n.stop() == 0


def _request(method: str, ruri: str, front: int, src: socket.socket, *, to_tag: bool, extra: str = "") -> bytes:
    host, port = src.getsockname()
    tag = ";tag=abc123" if to_tag else ""
    return (f"{method} {ruri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{method.lower()}{int(time.time() * 1000)}\r\n"
            f"Route: <sip:127.0.0.1:{front};lr>\r\n"
            f"Max-Forwards: 70\r\n"
            f"From: <sip:13800138000@{host}>;tag=x1\r\n"
            f"To: <{ruri}>{tag}\r\n"
            f"Call-ID: crafted-{method}-{to_tag}@{host}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:13800138000@{host}:{port}>\r\n"
            f"{extra}Content-Length: 0\r\n\r\n").encode()


def test_a_crafted_route_through_the_front_door_reaches_nobody(node: RunningNode) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    lport = listener.getsockname()[1]
    src = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    src.bind((STRANGER, 0))
    src.settimeout(3)
    cases = [("MESSAGE", f"sip:bob@127.0.0.1:{lport}", False, "Content-Type: text/plain\r\n"),
             ("INVITE", f"sip:122@127.0.0.1:{lport}", False, ""),
             ("OPTIONS", f"sip:bob@127.0.0.1:{lport}", False, ""),
             ("MESSAGE", f"sip:bob@127.0.0.1:{lport}", True, ""),
             ("BYE", f"sip:bob@127.0.0.1:{lport}", True, ""),
             ("INVITE", f"sip:122@127.0.0.1:{lport}", True, "")]
    answers = {}
    try:
        for method, ruri, to_tag, extra in cases:
            src.sendto(_request(method, ruri, node.sip_port, src, to_tag=to_tag, extra=extra),
                       ("127.0.0.1", node.sip_port))
            status = src.recv(65535).split(b"\r\n", 1)[0].decode()
            answers[(method, to_tag)] = status
        # every one refused at the front door with a final answer of its own (an OPTIONS is a
        # health check: the front door answers it itself)
        for (method, to_tag), status in answers.items():
            allowed = ("200", "405") if (method, to_tag) == ("OPTIONS", False) else ("403", "404", "405")
            assert status.split()[1] in allowed, (method, to_tag, status)
        listener.settimeout(1.0)  # the last request left the front door's hands a while ago
        with pytest.raises(TimeoutError):
            got = listener.recv(65535)
            pytest.fail(f"the listener received: {got[:200]!r}")
    finally:
        listener.close()
        src.close()
    print("crafted requests:", answers)


@pytest.mark.parametrize(("header", "number"), [
    ('"sipp" <sip:+86(138)0013-8000@127.0.0.2:5060>;tag=1', "+8613800138000"),
    ('<sip:1 2"x@h>', "12"),
    ("<sip:" + "9" * 300 + "@h>", "9" * 32),
    ("<tel:+49-30-1234567>", "+49301234567"),
    ('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=x', "anonymous"),
    ("", "anonymous"),
    ("<sip:\uff11\uff12\uff13@h>", "anonymous"),  # full-width digits are not ASCII digits
])
def test_caller_numbers_are_digits_with_a_leading_plus_at_most_32(header: str, number: str) -> None:
    from gateway.worker.service import normalise_number, raw_caller

    assert normalise_number(header) == number
    raw = raw_caller(header + "\r\nInjected: x" + "y" * 300)
    assert len(raw) <= 200 and "\r" not in raw and "\n" not in raw


@pytest.mark.parametrize(("env", "word"), [
    ({"HANDOFF_TRUNK_SOURCES": "10.0.0.0/8,not-an-ip"}, "trunk_sources"),
    ({"HANDOFF_SCANNER_USER_AGENTS": "friendly-scanner,evil|.*"}, "scanner_user_agents"),
    ({"HANDOFF_TLS_PORT": "5061"}, "tls_cert"),
])
def test_bad_edge_settings_exit_with_one_line(tmp_path: Path, env: dict[str, str], word: str) -> None:
    import os
    import sys

    p = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "v"),
                        "--api-port", "0"], capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and word in p.stderr, p.stderr
