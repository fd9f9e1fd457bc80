"""Commands through the API process under ``handoff122 serve``: forwarded to the control process,
with its answers and its errors (a real node; Twilio's webhooks posted as Twilio signs them)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.node_harness import RunningNode, start_node
from tests.twilio.conftest import PUBLIC, TOKEN, TwilioPhone

pytestmark = [pytest.mark.sip]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    tmp = tmp_path_factory.mktemp("api-commands")
    seats = "seats:\n  - {id: s1, contact: 'sip:s1@127.0.0.1:9', skills: [rescue], status: available}\n"
    n = start_node(tmp, workers=1, seats_yaml=seats,
                   env={"HANDOFF_TWILIO_AUTH_TOKEN": TOKEN, "HANDOFF_PUBLIC_BASE_URL": PUBLIC})
    try:
        yield n
    finally:
        n.stop()


def admin_token(node: RunningNode) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "admin",
                          "--data-dir", str(node.data_dir)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


async def test_seat_commands_reach_the_control_process_and_its_errors_come_back(node: RunningNode) -> None:
    admin = {"Authorization": f"Bearer {admin_token(node)}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.api_port}", timeout=10, headers=admin) as http:
        r = await http.post("/api/v1/admin/seats", json={"id": "s9", "contact": "sip:s9@127.0.0.1:9",
                                                         "skills": ["video_patrol"], "status": "logged_out"})
        assert r.status_code == 201, r.text
        assert r.json()["id"] == "s9" and r.json()["status"] == "logged_out"
        r = await http.put("/api/v1/seats/s9/status", json={"status": "not_ready", "reason": "meeting"})
        assert r.status_code == 200 and r.json()["status"] == "not_ready", r.text
        r = await http.post("/api/v1/seats/s9/wrap-up/end")
        assert r.status_code == 409, r.text  # IllegalTransition, raised in the control process
        r = await http.put("/api/v1/admin/flow", content="menu: [1, 2", headers={"Content-Type": "application/yaml"})
        assert r.status_code == 422 and "not valid YAML" in r.text, r.text
        r = await http.delete("/api/v1/admin/seats/s9")
        assert r.status_code == 204, r.text
        r = await http.get("/api/v1/seats/s9")
        assert r.status_code == 404


async def test_twilio_webhooks_drive_a_call_through_the_api_process(node: RunningNode) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.api_port}", timeout=10) as http:
        phone = TwilioPhone(http, "CA" + "5" * 32, "+8613800000055")
        await phone.dial_in()
        await phone.keys("1 2 2")  # cannot move -> rescue
        dial = await phone.hold_until_dial()
        assert dial.attrib["action"].startswith(f"{PUBLIC}/twilio/dial-status?")
        await phone.seat_answers()
        seat = node.get("/api/v1/seats/s1").json()
        assert seat["status"] == "on_call" and seat["call_id"] == phone.call_id
        offer = node.get("/api/v1/seats/s1/offer")  # a console reconnecting: asked of the control process
        assert offer.status_code == 200 and offer.json()["call_id"] == phone.call_id, offer.text
        await phone.dial_ends("completed", "20")
    rec = node.wait_for(lambda: (c := node.call(phone.call_id))["end_reason"] and c)
    assert (rec["ingress"], rec["seat_id"], rec["end_reason"]) == ("twilio", "s1", "completed")
