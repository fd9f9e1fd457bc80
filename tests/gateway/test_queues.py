"""Queues configured in the seats file, end to end: escalation over SIP, refusal of a bad section."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, serve_port_args
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
                        "--seats", str(seats), *serve_port_args(), "--api-port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    for needle in needles:
        assert needle in p.stderr, (needle, p.stderr)


def test_the_queue_position_is_said_every_announce_interval(tmp_path: Path) -> None:
    """The hold message plays without a gap; the position comes with it every ``announce_every_s``
    of the caller's queue, else every ``hold_announce_interval`` of the node."""
    seats = "seats: []\nqueues:\n  rescue: {announce_every_s: 60}\n"
    node = start_node(tmp_path, workers=2, seats_yaml=seats, env={"HANDOFF_HOLD_ANNOUNCE_INTERVAL": "2"})
    try:
        often = start_caller(node, "2", stay=24)            # accident_query: the node's 2 s
        rarely = start_caller(node, IMMOBILE, gap=0.6, stay=24)  # rescue: its own 60 s
        assert caller_result(often)["answered"] and caller_result(rarely)["answered"]
        by_skill = {c["ivr"]["skill"]: c["id"] for c in node.calls(5)}
        holds = [x for x in node.logs() if x.get("event") == "hold_announced"]

        def said(skill: str) -> list[int | None]:
            return [x["position"] for x in holds if x["call_id"] == by_skill[skill]]

        assert len(said("accident_query")) >= 3 and all(p == 1 for p in said("accident_query")), said("accident_query")
        assert said("rescue")[0] == 1 and len(said("rescue")) >= 3, said("rescue")
        assert said("rescue")[1:] == [None] * (len(said("rescue")) - 1)
        assert node.journey_errors() == []
    finally:
        node.stop()
