"""Encrypted transport as an option (issue 12): SIP over TLS at the front door (Kamailio's tls
module) and SRTP (SDES) on the worker's legs when the peer offers it.  pjsua2 on both sides: the
caller simulator over TLS insisting on SRTP, the seat simulator accepting SRTP."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.kamailio import module_dir
from tests.conftest import free_port
from tests.node_harness import seat_reports, start_node, start_seat

pytestmark = pytest.mark.sip


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_a_caller_over_tls_with_srtp_reaches_a_seat_over_srtp(tmp_path: Path) -> None:
    assert Path(module_dir(), "tls.so").exists(), "Debian package kamailio-tls-modules (./dev setup) is missing"
    cert, key = _self_signed(tmp_path)
    p1, tls_port = free_port(), free_port()
    seats = (f"seats:\n  - id: s1\n    name: s1\n    contact: sip:s1@127.0.0.1:{p1}\n"
             f"    skills: [intake_guidance]\n    status: available\n")
    node = start_node(tmp_path, workers=1, seats_yaml=seats,
                      env={"HANDOFF_TLS_PORT": str(tls_port), "HANDOFF_TLS_CERT": str(cert),
                           "HANDOFF_TLS_KEY": str(key), "HANDOFF_ANSWER_DELAY_S": "0"})
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--srtp", "optional", record=tmp_path / "s1.wav")
        p = subprocess.run([sys.executable, "-m", "gateway.cli", "call", "--to",
                            f"sip:122@127.0.0.1:{tls_port};transport=tls", "--digits", "0", "--stay", "4",
                            "--srtp", "mandatory", "--record", str(tmp_path / "heard.wav")],
                           capture_output=True, text=True, timeout=120)
        lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
        assert lines, p.stderr[-2000:] + node.log_path.read_text()[-2000:]
        res = json.loads(lines[-1])
        print("\ncaller:", res)
        # SIP over TLS to the front door, SRTP only (mandatory: plain RTP would have been refused),
        # and the caller heard the seat's tone through the worker's bridge.
        assert res["answered"] and res["srtp"] and res["bridged"], res
        rep = node.wait_for(lambda: seat_reports(node, "s1"))[0]
        print("seat:", rep)
        assert rep["answered"] and rep["srtp"], rep
        assert rep["caller_tone_s"] > 0.4, rep  # the seat heard the caller: audio both ways over SRTP
    finally:
        assert node.stop() == 0
