"""Dispositions and the daily report over real calls: pjsua2 callers through Kamailio, a pjsua2 seat.

Three real calls go through a real node: two reach the seat (the seat hangs up after a short
conversation), one abandons in a queue nobody staffs.  The seat saves a disposition for each of
its calls over HTTP; the daily report (JSON and CSV) must count exactly those calls and outcomes.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.node_harness import RunningNode, run_caller, start_node, start_seat

pytestmark = [pytest.mark.sip]
DISPUTE = "1 2 1 2 2 2 1"        # -> online_determination


def token(node: RunningNode, role: str, seat_id: str | None = None) -> str:
    cmd = [sys.executable, "-m", "gateway.cli", "token", "create", "--role", role, "--data-dir", str(node.data_dir)]
    if seat_id:
        cmd += ["--seat", seat_id]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]


def api(node: RunningNode, method: str, path: str, tok: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tok}", **kw.pop("headers", {})}
    return httpx.request(method, f"http://127.0.0.1:{node.api_port}{path}", headers=headers, timeout=10, **kw)


@pytest.fixture
def node(tmp_path: Path) -> Any:
    port = free_port()
    seats = ("seats:\n"
             f"  - id: s101\n    contact: sip:s101@127.0.0.1:{port}\n    skills: [online_determination]\n"
             "    status: available\n"
             "  - id: s102\n    contact: sip:s102@127.0.0.1:9\n    skills: [rescue]\n    status: logged_out\n")
    # a long wrap-up: only the saved disposition can end it within the test
    n = start_node(tmp_path, workers=2, seats_yaml=seats, env={"HANDOFF_WRAP_UP_S": "600"})
    try:
        start_seat(n, "s101", port, "--answer-after", "0.5", "--hangup-after", "1.5")
        yield n
    finally:
        n.stop()


def seat_status(node: RunningNode, seat_id: str) -> str:
    return next(s["status"] for s in node.get("/api/v1/seats").json() if s["id"] == seat_id)


def last_call_id(node: RunningNode, seen: set[str]) -> str:
    return node.wait_for(lambda: next((c["id"] for c in node.calls() if c["id"] not in seen), None))


def test_dispositions_end_wrap_up_and_the_daily_report_counts_the_calls_placed(node: RunningNode) -> None:
    s101, s102, sup = token(node, "seat", "s101"), token(node, "seat", "s102"), node.token
    codes = api(node, "GET", "/api/v1/dispositions", s101).json()["codes"]
    assert codes == ["fast_handled_online", "insurance_claim_opened", "police_on_scene", "query_answered",
                     "not_road_accident", "caller_unreachable"]
    seen: set[str] = set()

    # call 1: fast-handled online
    r1 = run_caller(node, DISPUTE, stay=8)
    assert r1["answered"] and r1.get("bridged"), r1
    c1 = last_call_id(node, seen)
    seen.add(c1)
    node.wait_for(lambda: seat_status(node, "s101") == "wrap_up")
    assert api(node, "PUT", f"/api/v1/calls/{c1}/disposition", s101, json={"code": "made_up"}).status_code == 422
    assert api(node, "PUT", f"/api/v1/calls/{c1}/disposition", s102,
               json={"code": "police_on_scene"}).status_code == 403
    assert api(node, "PUT", "/api/v1/calls/nope/disposition", sup, json={"code": "police_on_scene"}).status_code == 404
    assert seat_status(node, "s101") == "wrap_up", "a refused disposition must not end the wrap-up"
    r = api(node, "PUT", f"/api/v1/calls/{c1}/disposition", s101,
            json={"code": "fast_handled_online", "note": "协议已签"})
    assert r.status_code == 200, r.text
    assert r.json()["wrap_up_ended"] is True and r.json()["seat_id"] == "s101"
    assert seat_status(node, "s101") == "available"

    # call 2: the seat first says police, then corrects itself: the last disposition wins
    r2 = run_caller(node, DISPUTE, stay=8)
    assert r2["answered"] and r2.get("bridged"), r2
    c2 = last_call_id(node, seen)
    seen.add(c2)
    node.wait_for(lambda: seat_status(node, "s101") == "wrap_up")
    assert api(node, "PUT", f"/api/v1/calls/{c2}/disposition", s101, json={"code": "police_on_scene"}).status_code == 200
    assert api(node, "PUT", f"/api/v1/calls/{c2}/disposition", sup,
               json={"code": "not_road_accident", "note": "走错号码"}).status_code == 200

    # call 3: nobody staffs rescue: the caller waits, then hangs up (abandoned)
    r3 = run_caller(node, "1 2 2", stay=6)
    assert r3["answered"] and not r3.get("bridged"), r3

    def report() -> dict[str, Any] | None:
        rep = node.get("/api/v1/reports/daily").json()
        return rep if rep["total"]["calls"] == 3 and rep["total"]["abandoned"] == 1 else None

    rep = node.wait_for(report)
    t = rep["total"]
    assert (t["answered"], t["abandoned"], t["accident_calls"], t["fast_handled"]) == (2, 1, 1, 1), t
    assert t["fast_handled_share"] == 1.0 and t["undisposed"] == 0
    assert t["outcomes"]["fast_handled_online"] == 1 and t["outcomes"]["not_road_accident"] == 1
    assert t["outcomes"]["police_on_scene"] == 0
    assert t["service_level"] == 1.0 and t["asa_s"] is not None and t["aht_s"] is not None
    by_skill = {r["skill"]: r for r in rep["skills"]}
    assert by_skill["online_determination"]["answered"] == 2
    assert by_skill["rescue"]["abandoned"] == 1 and by_skill["rescue"]["answered"] == 0
    assert rep["date"] == node.get("/api/v1/reports/daily", params={"date": rep["date"]}).json()["date"]

    # the same figures as CSV
    r = api(node, "GET", "/api/v1/reports/daily", sup, headers={"Accept": "text/csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    total = next(x for x in rows if x["skill"] == "total")
    assert (total["calls"], total["answered"], total["abandoned"], total["fast_handled"]) == ("3", "2", "1", "1")
    assert total["outcome_not_road_accident"] == "1"

    # the disposition is in the call's own event log, with its note
    node.wait_for(lambda: any(e["kind"] == "DISPOSITION" for e in node.call(c1)["events"]))
    ev = next(e for e in node.call(c1)["events"] if e["kind"] == "DISPOSITION")
    assert ev["data"]["code"] == "fast_handled_online" and ev["data"]["note"] == "协议已签"
    assert node.get("/api/v1/reports/daily", params={"date": "2026-13-01"}).status_code == 422
    assert api(node, "GET", "/api/v1/reports/daily", s101).status_code == 403
    assert not node.journey_errors()
