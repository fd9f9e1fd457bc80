"""The seat phone's own transfer key: a REFER on the seat leg becomes our blind transfer.

Seat s1's phone (pjsua2) REFERs the call to ``sip:insurance_claim@...`` two seconds after answering.
The worker never follows a REFER itself: the control process turns a known skill into its own
transfer, so the caller, never hung up, reaches seat s2.  A REFER to any other URI changes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recordings.wav import read_pcm16
from tests.conftest import free_port
from tests.gateway.test_transfer import share
from tests.node_harness import caller_result, seat_reports, start_caller, start_node, start_seat

pytestmark = pytest.mark.sip
DISPUTE = "1 2 1 2 2 2 1"


def test_a_refer_from_the_seat_phone_transfers_to_the_skill_it_names(tmp_path: Path) -> None:
    p1, p2, p3 = free_port(), free_port(), free_port()
    seats = ("seats:\n"
             f"  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n    status: available\n"
             f"  - id: s2\n    contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n    status: available\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000",
                   "--refer-to", f"sip:insurance_claim@127.0.0.1:{node.sip_port}", "--refer-after", "2")
        start_seat(node, "s2", p2, "--answer-after", "0.5", "--tone", "700")
        res = caller_result(start_caller(node, DISPUTE, gap="0.6", stay="12", record=tmp_path / "caller.wav"))
        assert res["answered"] and res["hung_up_by"] == "caller", res
        s2 = node.wait_for(lambda: seat_reports(node, "s2"))[0]
        s1 = node.wait_for(lambda: seat_reports(node, "s1"))[0]
        assert s2["call_id"] == s1["call_id"] and s2["skill"] == "insurance_claim"
        assert s1.get("refer_status") == 603          # the REFER itself is never followed by PJSIP
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert share(heard[-rate * 3:], rate, 700) > 0.1   # the caller ends up talking to s2
        call = node.call(s1["call_id"])
        details = [e["data"]["detail"] for e in call["events"] if e["kind"] == "JOURNEY"
                   and e["data"]["cause"] == "transferred"]
        assert len(details) == 1 and "refer:s1" in details[0], details
        assert node.journey_errors() == []
    finally:
        node.stop()

    # a REFER to anything but a skill: refused, the conversation goes on with the same seat
    node = start_node(tmp_path / "second", workers=2, seats_yaml=seats.replace(str(p1), str(p3)))
    try:
        start_seat(node, "s1", p3, "--answer-after", "0.3", "--tone", "1000",
                   "--refer-to", "sip:13800000000@127.0.0.1:9", "--refer-after", "1")
        res = caller_result(start_caller(node, DISPUTE, gap="0.6", stay="6"))
        assert res["answered"] and res["bridged"], res
        call = node.calls(1)[0]
        assert call["seat_id"] == "s1"
        assert "transferred" not in [e["data"].get("cause") for e in node.call(call["id"])["events"]]
        assert any(x.get("event") == "seat_refer_refused" for x in node.logs())
    finally:
        node.stop()


def test_a_refer_naming_a_seat_transfers_to_that_seat_only_while_it_is_available(tmp_path: Path) -> None:
    p1, p2, p3, p4 = free_port(), free_port(), free_port(), free_port()
    seats = ("seats:\n"
             f"  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n    status: available\n"
             f"  - id: s2\n    contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n    status: available\n"
             # s3 shares s2's skill: the call must still go to s2, the seat the REFER named
             f"  - id: s3\n    contact: sip:s3@127.0.0.1:{p3}\n    skills: [insurance_claim]\n    status: available\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000",
                   "--refer-to", f"sip:s2@127.0.0.1:{node.sip_port}", "--refer-after", "2")
        start_seat(node, "s2", p2, "--answer-after", "0.5", "--tone", "700")
        start_seat(node, "s3", p3, "--answer-after", "0.5", "--tone", "500")
        res = caller_result(start_caller(node, DISPUTE, gap="0.6", stay="12", record=tmp_path / "caller.wav"))
        assert res["answered"] and res["hung_up_by"] == "caller", res
        s2 = node.wait_for(lambda: seat_reports(node, "s2"))[0]
        s1 = node.wait_for(lambda: seat_reports(node, "s1"))[0]
        assert s2["call_id"] == s1["call_id"]
        assert s1.get("refer_status") == 603
        assert seat_reports(node, "s3") == []            # offered to the named seat only
        rate, heard = read_pcm16(tmp_path / "caller.wav")
        assert share(heard[-rate * 3:], rate, 700) > 0.1   # the caller ends up talking to s2
        call = node.call(s1["call_id"])
        details = [e["data"]["detail"] for e in call["events"] if e["kind"] == "JOURNEY"
                   and e["data"]["cause"] == "transferred"]
        assert len(details) == 1 and "s2" in details[0] and "refer:s1" in details[0], details
        assert node.journey_errors() == []
    finally:
        node.stop()

    # the named seat is not available (logged out): refused with the reason, s1 keeps the caller
    node = start_node(tmp_path / "second", workers=2,
                      seats_yaml=seats.replace(str(p1), str(p4)).replace(
                          f"contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n    status: available",
                          f"contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n    status: logged_out"))
    try:
        start_seat(node, "s1", p4, "--answer-after", "0.3", "--tone", "1000",
                   "--refer-to", f"sip:s2@127.0.0.1:{node.sip_port}", "--refer-after", "1")
        res = caller_result(start_caller(node, DISPUTE, gap="0.6", stay="6"))
        assert res["answered"] and res["bridged"] and res["hung_up_by"] == "caller", res
        call = node.calls(1)[0]
        assert call["seat_id"] == "s1"
        assert "transferred" not in [e["data"].get("cause") for e in node.call(call["id"])["events"]]
        refused = [x for x in node.logs() if x.get("event") == "seat_refer_refused"]
        assert refused and refused[0]["target"] == "s2" and "not available" in refused[0]["reason"], refused
    finally:
        node.stop()
