"""Queues configured in the seats file, end to end: escalation over SIP, refusal of a bad section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.node_harness import caller_result, seat_reports, start_caller, start_node, start_seat

IMMOBILE = "1 2 2"   # -> rescue p2


def test_escalation_offers_a_waiting_caller_to_a_second_skill(tmp_path: Path) -> None:
    """Nobody staffs rescue; after 3 s waiting the rescue queue also offers the caller to police
    dispatch, where the only seat is: the caller goes through Kamailio, that seat answers."""
    p1 = free_port()
    seats = (
        "seats:\n"
        f"  - {{id: s1, name: dispatch 1, contact: 'sip:s1@127.0.0.1:{p1}', skills: [police_dispatch],"
        " status: available}\n"
        "queues:\n"
        "  rescue: {strategy: fewest_calls, sl_threshold_s: 10, wrap_up_s: 2, announce_every_s: 5,\n"
        "           escalate: [{after_s: 3, also: police_dispatch}]}\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        rescue = next(q for q in node.get("/api/v1/queues").json() if q["skill"] == "rescue")
        assert rescue["policy"] == {"strategy": "fewest_calls", "sl_threshold_s": 10.0, "wrap_up_s": 2.0,
                                    "announce_every_s": 5.0, "escalate": [{"after_s": 3.0, "also": "police_dispatch"}]}
        start_seat(node, "s1", p1, "--answer-after", "0.3")
        caller = start_caller(node, IMMOBILE, gap=0.8, stay=12)
        res = caller_result(caller)
        assert res["answered"] and res["bridged"] and res["hung_up_by"] == "caller", res
        rep = seat_reports(node, "s1")[0]
        call = node.wait_for(lambda: (c := node.call(rep["call_id"]))["end_reason"] and c)
        assert call["seat_id"] == "s1" and call["ivr"]["skill"] == "rescue"
        ev = {e["kind"]: e for e in call["events"]}
        escalate, enter, offer = ev["ESCALATE"], ev["ENTERQUEUE"], ev["OFFER"]
        assert escalate["data"]["also"] == "police_dispatch" and escalate["skill"] == "rescue"
        # not offered before the rule said so, and offered as soon as it did
        assert escalate["at"] - enter["at"] >= 3.0 - 0.05
        assert offer["at"] >= escalate["at"] and offer["seat_id"] == "s1"
        q = node.wait_for(lambda: next(q for q in node.get("/api/v1/queues").json() if q["skill"] == "police_dispatch"))
        assert q["seats_by_status"]["wrap_up"] + q["seats_by_status"]["available"] == 1
        assert node.journey_errors() == []
    finally:
        node.stop()


@pytest.mark.parametrize(("section", "needles"), [
    ("queues:\n  rescue: {strategy: fastest, wrap_up_s: -1}\n",
     ["line 6: queues.rescue.strategy", "fastest", "line 6: queues.rescue.wrap_up_s"]),
    ("queues:\n  towing: {wrap_up_s: 5}\n  rescue:\n    escalate: [{after_s: 5, also: rescue}]\n",
     ["line 6: queues.towing: unknown skill 'towing'", "line 8: queues.rescue.escalate[0].also"]),
])
def test_a_bad_queues_section_stops_serve_naming_each_problem(tmp_path: Path, section: str, needles: list[str]) -> None:
    seats = tmp_path / "seats.yaml"
    seats.write_text("seats:\n  - id: s1\n    contact: sip:s1@127.0.0.1:5091\n    skills: [rescue]\n" + section)
    p = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "v"),
                        "--seats", str(seats), "--sip-port", str(free_port()), "--api-port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    for needle in needles:
        assert needle in p.stderr, (needle, p.stderr)
