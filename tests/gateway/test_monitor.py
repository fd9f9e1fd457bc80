"""Supervisors listen, whisper and barge, checked by who hears whom.

Real processes only: a pjsua2 caller (440 Hz) through Kamailio and the IVR to a pjsua2 seat
(1000 Hz); the supervisor's phone is a third pjsua2 phone (1500 Hz) that answers the gateway's call
and hangs up after three seconds.  Every phone records what it hears; the monitoring windows are
taken from the MONITOR events the node logged for the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from recordings.wav import read_pcm16
from tests.conftest import free_port
from tests.gateway.test_transfer import loudest, post, share, status, token
from tests.node_harness import caller_result, seat_reports, start_caller, start_node, start_seat

pytestmark = pytest.mark.sip
DISPUTE = "1 2 1 2 2 2 1"
SUP_HZ = 1500


def window(path: Path, origin: float, start: float, end: float) -> tuple[Any, int]:
    rate, samples = read_pcm16(path)
    a, b = int((start - origin) * rate), int((end - origin) * rate)
    assert 0 <= a < b <= len(samples), (path.name, a, b, len(samples))
    return samples[a:b], rate


def test_listen_whisper_and_barge_are_heard_by_the_right_people(tmp_path: Path) -> None:
    p1, psup = free_port(), free_port()
    seats = f"seats:\n  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n" \
            "    status: available\n"
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000", record=tmp_path / "s1.wav")
        start_seat(node, "sup", psup, "--answer-after", "0.3", "--hangup-after", "3", "--tone", str(SUP_HZ),
                   record=tmp_path / "sup.wav")
        caller = start_caller(node, DISPUTE, gap="0.6", stay="20", record=tmp_path / "caller.wav")
        s1 = node.wait_for(lambda: (s := status(node, "s1"))["status"] == "on_call" and s, timeout=60)
        call_id = s1["call_id"]
        contact = f"sip:sup@127.0.0.1:{psup}"
        assert post(node, f"/api/v1/calls/{call_id}/monitor", token(node, "seat", "s1"),
                    {"mode": "listen", "contact": contact}).status_code == 403
        assert post(node, f"/api/v1/calls/{call_id}/monitor", node.token,
                    {"mode": "listen", "contact": "not a uri"}).status_code == 422

        for n, mode in enumerate(("listen", "whisper", "barge"), start=1):
            r = post(node, f"/api/v1/calls/{call_id}/monitor", node.token, {"mode": mode, "contact": contact})
            assert r.status_code == 200, r.text
            node.wait_for(lambda n=n: len(seat_reports(node, "sup")) >= n, timeout=30)
        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "caller", res

        call = node.wait_for(lambda: (c := node.call(call_id)).get("recording_id") and c, timeout=30)
        connected = next(e["at"] for e in call["events"] if e["kind"] == "CONNECT")
        mon = [e for e in call["events"] if e["kind"] == "MONITOR"]
        answered = {e["data"]["leg_id"]: e["at"] for e in mon if e["data"]["state"] == "answered"}
        modes = {e["data"]["leg_id"]: e["data"]["mode"] for e in mon if e["data"]["state"] == "dialing"}
        assert sorted(modes.values()) == ["barge", "listen", "whisper"] and len(answered) == 3, mon
        assert sum(e["data"]["state"] == "ended" for e in mon) == 3

        reports = seat_reports(node, "sup")
        for rep in reports:   # the supervisor always hears both parties
            rate, heard = read_pcm16(Path(rep["recording"]))
            assert loudest(heard, rate, 440) > 0.2 and loudest(heard, rate, 1000) > 0.2, rep
        for leg_id, mode in modes.items():
            t = answered[leg_id]
            at_caller, rate = window(tmp_path / "caller.wav", call["started_at"], t + 0.7, t + 2.3)
            at_seat, _ = window(tmp_path / "s1.wav", connected, t + 0.7, t + 2.3)
            caller_hears, seat_hears = share(at_caller, rate, SUP_HZ), share(at_seat, rate, SUP_HZ)
            assert (caller_hears > 0.1) is (mode == "barge"), (mode, caller_hears)
            assert (seat_hears > 0.1) is (mode in ("whisper", "barge")), (mode, seat_hears)
            if mode != "barge":
                assert caller_hears < 0.02, (mode, caller_hears)
            if mode == "listen":
                assert seat_hears < 0.02, seat_hears

        audit = httpx.get(f"http://127.0.0.1:{node.api_port}/api/v1/audit", params={"kind": "call.monitor"},
                          headers={"Authorization": f"Bearer {node.token}"}, timeout=10).json()
        assert sorted(a["detail"]["mode"] for a in audit if a["target"] == call_id) == ["barge", "listen", "whisper"]
        assert all(a["actor"]["role"] == "supervisor" for a in audit)
        assert node.journey_errors() == []
    finally:
        node.stop()
