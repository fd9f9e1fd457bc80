"""The node's PostgreSQL crashes and comes back while calls go on (the test's own instance).

No call is dropped; API reads answer 503 with Retry-After meanwhile; the events buffered in the
node catch up, so every call record is complete and every recording sealed afterwards.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.faults.harness import NodePorts, api, boot, seats_yaml, start_seat_sim
from tests.faults.services import OwnPostgres
from tests.node_harness import caller_result, run_caller, start_caller

pytestmark = pytest.mark.sip

HUMAN = "0"


@pytest.fixture
def own_pg() -> Iterator[OwnPostgres]:
    pg = OwnPostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.close()


def test_postgres_crash_mid_call_loses_no_call_and_no_event(tmp_path: Path, own_pg: OwnPostgres) -> None:
    p1, p2 = free_port(), free_port()
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=seats_yaml(
        ("s1", "intake_guidance", p1, "available"), ("s2", "intake_guidance", p2, "available")),
        args=["--db-url", own_pg.url], env={"HANDOFF_WRAP_UP_S": "0"})
    seats = [start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3"),
             start_seat_sim(tmp_path, "s2", p2, "--answer-after", "0.3")]
    try:
        assert api(node, "GET", "/api/v1/calls").status_code == 200
        first = start_caller(node, HUMAN, stay=6, gap=0.5)
        a_id = node.wait_for(lambda: next((c["id"] for c in node.calls() if c["seat_answered_at"]), None))

        own_pg.stop("immediate")                 # the database crashes while A talks
        r = api(node, "GET", "/api/v1/calls")
        assert r.status_code == 503 and r.headers["Retry-After"].isdigit(), (r.status_code, r.text)
        assert api(node, "GET", f"/api/v1/calls/{a_id}").status_code == 503
        assert httpx.get(f"http://127.0.0.1:{node.api_port}/healthz", timeout=5).status_code == 200

        second = run_caller(node, HUMAN, gap=0.5, stay=2)   # a whole call during the outage
        assert second["answered"] and second["bridged"], second
        res = caller_result(first, timeout=60)
        assert res["answered"] and res["bridged"] and res["hung_up_by"] == "caller", res

        own_pg.start()
        done = node.wait_for(lambda: [c for c in api(node, "GET", "/api/v1/calls").json()
                                      if c["end_reason"] == "completed"], timeout=60)
        node.wait_for(lambda: len([c for c in api(node, "GET", "/api/v1/calls").json()
                                   if c["end_reason"] == "completed" and c["recording_id"]]) == 2, timeout=60)
        calls = api(node, "GET", "/api/v1/calls").json()
        assert len(calls) == 2 and len(done) >= 1
        for c in calls:
            full = api(node, "GET", f"/api/v1/calls/{c['id']}").json()
            kinds = [e["kind"] for e in full["events"]]
            for k in ("CALLSTART", "IVRDONE", "ENTERQUEUE", "OFFER", "CONNECT", "COMPLETE", "CALLEND"):
                assert k in kinds, (c["id"], kinds)
            assert full["seat_id"] in ("s1", "s2") and full["ended_at"]
            node.wait_for(lambda cid=c["recording_id"]: api(node, "GET", f"/api/v1/recordings/{cid}").status_code == 200)
        assert not list((node.data_dir / "recordings" / ".partial").glob("*.wav"))
        node.stop()
        verify = subprocess.run([sys.executable, "-m", "gateway.cli", "recordings", "verify", "--data-dir",
                                 str(node.data_dir), "--db-url", own_pg.url], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        for seat in seats:
            seat.terminate()
            seat.wait(5)
        node.stop()
