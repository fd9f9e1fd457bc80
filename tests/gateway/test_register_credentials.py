"""Seat phone credentials set through the admin API, with a real softphone (baresip).

Seat s104 has a fixed contact in the seats file and no ``register:``.  An admin gives it digest
credentials through ``PUT /api/v1/seats/s104/credentials`` (the API process hashes the password,
the control process stores the HA1 and loads it into Kamailio at once): a baresip with a wrong
password gets 403 and the seat stays logged out; the right one registers and takes a hand-off.
After a node restart the stored credentials are loaded again.  ``DELETE`` removes them: the phone's
registration is gone at once, the seat is logged out with the reason and the next REGISTER is
refused.  The database and the audit log hold neither the password nor (the audit log) the HA1.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from recordings.wav import read_pcm16
from tests.gateway.test_register import baresip, put_status
from tests.gateway.test_transfer import loudest, status
from tests.node_harness import RunningNode, run_caller, start_node

pytestmark = [pytest.mark.sip, pytest.mark.skipif(__import__("shutil").which("baresip") is None,
                                                  reason="needs baresip-core")]
PASSWORD = "api-pass-7731"
SEATS = ("seats:\n"
         "  - id: s104\n    name: 王五\n    contact: sip:s104@127.0.0.1:9\n    skills: [intake_guidance]\n"
         "    status: logged_out\n"
         "  - id: s105\n    contact: sip:s105@127.0.0.1:9\n    skills: [rescue]\n")


def token(node: RunningNode, role: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", role,
                          "--data-dir", str(node.data_dir)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def credentials(node: RunningNode, tok: str, seat_id: str, body: dict[str, Any] | None) -> httpx.Response:
    url = f"http://127.0.0.1:{node.api_port}/api/v1/seats/{seat_id}/credentials"
    headers = {"Authorization": f"Bearer {tok}"}
    if body is None:
        return httpx.delete(url, headers=headers, timeout=10)
    return httpx.put(url, headers=headers, json=body, timeout=10)


def db_rows(node: RunningNode) -> list[tuple[Any, ...]]:
    db = node.data_dir / "handoff122.sqlite3"
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT seat_id, username, ha1 FROM seat_credentials").fetchall()


def db_bytes(node: RunningNode) -> bytes:
    return b"".join(p.read_bytes() for p in node.data_dir.glob("handoff122.sqlite3*") if p.is_file())


def test_credentials_set_through_the_api_let_a_softphone_register_until_they_are_removed(tmp_path: Path) -> None:
    node = start_node(tmp_path, workers=2, seats_yaml=SEATS)
    admin = token(node, "admin")
    try:
        # refusals: not an admin 403, bad bodies 422, unknown seat 404; nothing is stored
        assert credentials(node, node.token, "s104", {"username": "s104", "password": PASSWORD}).status_code == 403
        for bad in ({"username": "s104"}, {"username": "s104", "password": PASSWORD, "ha1": "0" * 32},
                    {"username": "s104", "ha1": "xyz"}, {"username": "bad user", "password": PASSWORD},
                    {"username": "s104", "password": "short"}):
            r = credentials(node, admin, "s104", bad)
            assert r.status_code == 422 and PASSWORD not in r.text, (bad, r.text)
        assert credentials(node, admin, "nope", {"username": "nope", "password": PASSWORD}).status_code == 404
        assert db_rows(node) == []

        r = credentials(node, admin, "s104", {"username": "s104", "password": PASSWORD})
        assert r.status_code == 200, r.text
        assert r.json()["register"] == {"username": "s104", "has_credentials": True}
        assert PASSWORD not in r.text and "ha1" not in r.text
        expected_ha1 = hashlib.md5(f"s104:handoff122:{PASSWORD}".encode()).hexdigest()
        assert db_rows(node) == [("s104", "s104", expected_ha1)]
        assert PASSWORD.encode() not in db_bytes(node)
        # a username is one seat's; an HA1 may be given instead of a password
        assert credentials(node, admin, "s105", {"username": "s104", "password": PASSWORD}).status_code == 409
        given = hashlib.md5(b"s105:handoff122:other-pass").hexdigest()
        r = credentials(node, admin, "s105", {"username": "s105", "ha1": given.upper()})
        assert r.status_code == 200 and r.json()["register"]["username"] == "s105", r.text
        assert sorted(db_rows(node)) == [("s104", "s104", expected_ha1), ("s105", "s105", given)]
        assert expected_ha1 not in node.get("/api/v1/seats/s104").text

        # a wrong password: 403 from the front door, the seat stays logged out with its fixed contact
        bad, bad_conf = baresip(tmp_path, "bad", node, "s104", "wrong-pass")
        node.wait_for(lambda: "403" in (bad_conf / "out.log").read_text(errors="replace"), timeout=20)
        s104 = status(node, "s104")
        assert s104["status"] == "logged_out" and s104["contact"] == "sip:s104@127.0.0.1:9", s104
        bad.send_signal(signal.SIGKILL)
        bad.wait()

        # the right one registers and takes the hand-off
        good, _ = baresip(tmp_path, "good", node, "s104", PASSWORD)
        node.wait_for(lambda: status(node, "s104")["contact"].startswith("sip:s104")
                      and status(node, "s104")["contact"] != "sip:s104@127.0.0.1:9", timeout=20)
        assert put_status(node, "s104", "available").status_code == 200
        res = run_caller(node, "0", stay=5, record=tmp_path / "caller.wav")
        assert res["answered"] and res["bridged"], res
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert loudest(heard, rate, 1000) > 0.3          # the caller heard the softphone
        assert node.wait_for(lambda: (c := node.calls(1)[0]).get("end_reason") and c)["seat_id"] == "s104"
        good.send_signal(signal.SIGKILL)
        good.wait()
    finally:
        node.stop()

    # a restart loads the stored credentials again (the seats file still has none)
    node = start_node(tmp_path, workers=2, seats_yaml=SEATS)
    admin = token(node, "admin")
    try:
        assert status(node, "s104")["register"] == {"username": "s104", "has_credentials": True}
        again, again_conf = baresip(tmp_path, "again", node, "s104", PASSWORD)
        node.wait_for(lambda: ":9" not in status(node, "s104")["contact"] and status(node, "s104")["contact"],
                      timeout=20)
        assert put_status(node, "s104", "available").status_code == 200

        # removed: the registration goes at once, the seat is logged out with the reason ...
        r = credentials(node, admin, "s104", None)
        assert r.status_code == 200, r.text
        gone = r.json()
        assert gone["status"] == "logged_out" and "credentials removed" in gone["reason"], gone
        assert gone["register"] is None and gone["contact"] == "sip:s104@127.0.0.1:9", gone
        assert sorted(db_rows(node)) == [("s104", None, None), ("s105", "s105", given)]
        # ... and the phone's next REGISTER is refused; the seat never gets it back
        node.wait_for(lambda: "403" in (again_conf / "out.log").read_text(errors="replace"), timeout=30)
        s104 = status(node, "s104")
        assert s104["status"] == "logged_out" and s104["contact"] == "sip:s104@127.0.0.1:9", s104
        assert put_status(node, "s104", "available").status_code == 200   # its fixed contact, as in the file
        again.send_signal(signal.SIGKILL)

        # the audit log says who set and removed them, without the secret
        audit = httpx.get(f"http://127.0.0.1:{node.api_port}/api/v1/audit?kind=seat.credentials",
                          headers={"Authorization": f"Bearer {admin}"}, timeout=10)
        assert audit.status_code == 200, audit.text
        entries = audit.json()
        assert [(e["target"], e["detail"]["op"]) for e in entries] == [
            ("s104", "remove"), ("s105", "set"), ("s104", "set")], entries
        assert entries[1]["detail"]["given"] == "ha1" and entries[2]["detail"]["given"] == "password"
        assert all(e["actor"]["role"] == "admin" for e in entries)
        text = json.dumps(entries)
        assert PASSWORD not in text and expected_ha1 not in text and given not in text
        assert PASSWORD.encode() not in db_bytes(node)
    finally:
        node.stop()
