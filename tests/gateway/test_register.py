"""Seat phones that REGISTER with digest auth: a real softphone nobody here wrote (baresip).

baresip registers at the front door as seat s102 with its password (the node only knows the HA1
from the seats file), auto-answers the hand-off and plays a 1000 Hz tone from a file while it
records what it hears.  A second baresip with a wrong password is refused and its seat stays
logged out; killing the first (no de-registration) lets its registration expire: logged out.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import signal
import struct
import subprocess
import wave
from pathlib import Path
from typing import Any

import httpx
import pytest

from recordings.wav import read_pcm16
from tests.conftest import free_port
from tests.gateway.test_transfer import loudest, status
from tests.node_harness import RunningNode, run_caller, start_node

pytestmark = [pytest.mark.sip, pytest.mark.skipif(shutil.which("baresip") is None, reason="needs baresip-core")]
REALM = "handoff122"


def ha1(user: str, password: str) -> str:
    return hashlib.md5(f"{user}:{REALM}:{password}".encode()).hexdigest()


def tone_wav(path: Path, hz: float, seconds: float = 60.0, rate: int = 8000) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / rate)))
                               for i in range(int(seconds * rate))))


def baresip(tmp: Path, name: str, node: RunningNode, user: str, password: str) -> tuple[subprocess.Popen[bytes], Path]:
    conf = tmp / f"baresip-{name}"
    conf.mkdir()
    tone_wav(conf / "tone.wav", 1000)
    heard = conf / "heard.wav"
    port = free_port()
    (conf / "config").write_text(
        "poll_method epoll\n"
        f"sip_listen 127.0.0.1:{port}\n"
        f"audio_player aufile,{heard}\n"
        f"audio_source aufile,{conf / 'tone.wav'}\n"
        "audio_alert aufile,/dev/null\n"
        "module_path /usr/lib/baresip/modules\n"
        "module g711.so\nmodule aufile.so\n"
        "module_app account.so\nmodule_app menu.so\n")
    (conf / "accounts").write_text(
        f"<sip:{user}@127.0.0.1:{node.sip_port};transport=udp>;auth_pass={password};answermode=auto;"
        "regint=10;audio_codecs=PCMU,PCMA\n")
    log = conf / "out.log"
    p = subprocess.Popen(["baresip", "-f", str(conf)], stdin=subprocess.DEVNULL, stdout=log.open("wb"),
                         stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(conf)})
    node.seats.append(p)
    return p, conf


def put_status(node: RunningNode, seat_id: str, st: str) -> httpx.Response:
    return httpx.put(f"http://127.0.0.1:{node.api_port}/api/v1/seats/{seat_id}/status", timeout=10,
                     headers={"Authorization": f"Bearer {node.token}"}, json={"status": st, "reason": None})


def test_a_registered_softphone_takes_the_handoff_and_loses_it_when_its_registration_expires(tmp_path: Path) -> None:
    seats = ("seats:\n"
             f"  - id: s102\n    register: {{username: s102, ha1: {ha1('s102', 'right-pass')}}}\n"
             "    skills: [intake_guidance]\n"
             f"  - id: s103\n    register: {{username: s103, ha1: {ha1('s103', 'its-pass')}}}\n"
             "    skills: [rescue]\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        assert "right-pass" not in (node.data_dir / "run").joinpath("kamailio", "kamailio.cfg").read_text()
        # not registered: cannot be made available (nothing to ring)
        assert status(node, "s102")["status"] == "logged_out"
        assert put_status(node, "s102", "available").status_code == 409

        good, _ = baresip(tmp_path, "good", node, "s102", "right-pass")
        bad, bad_conf = baresip(tmp_path, "bad", node, "s103", "wrong-pass")
        seat: dict[str, Any] = node.wait_for(lambda: (s := status(node, "s102"))["contact"] and s, timeout=20)
        assert seat["contact"].startswith("sip:s102") and "@127.0.0.1:" in seat["contact"]   # where it registered from
        r = put_status(node, "s102", "available")
        assert r.status_code == 200, r.text

        res = run_caller(node, "0", stay=6, record=tmp_path / "caller.wav")
        assert res["answered"] and res["bridged"], res
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert loudest(heard, rate, 1000) > 0.3          # the caller heard the softphone
        call = node.wait_for(lambda: (c := node.calls(1)[0]).get("end_reason") and c)
        assert call["seat_id"] == "s102"

        # the wrong password: 403 from the front door, the seat stays logged out without a phone
        node.wait_for(lambda: "403" in (bad_conf / "out.log").read_text(errors="replace"), timeout=20)
        s103 = status(node, "s103")
        assert s103["status"] == "logged_out" and not s103["contact"]
        assert put_status(node, "s103", "available").status_code == 409

        # the phone dies without de-registering: its registration expires, the seat is logged out
        node.wait_for(lambda: status(node, "s102")["status"] in ("wrap_up", "available"))
        put_status(node, "s102", "available")
        good.send_signal(signal.SIGKILL)
        good.wait()
        gone = node.wait_for(lambda: (s := status(node, "s102"))["status"] == "logged_out" and s, timeout=40)
        assert not gone["contact"] and "registration" in (gone.get("reason") or ""), gone
        bad.send_signal(signal.SIGKILL)
    finally:
        node.stop()
