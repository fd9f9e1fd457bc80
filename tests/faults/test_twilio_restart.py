"""A Twilio caller waits in the queue, the whole node is killed and started again: the caller's
next webhook continues the call in the same queue place, and the caller reaches a seat.

A real node (``handoff122 serve``); Twilio's side is the signed webhooks Twilio would post
(``tests.twilio.conftest.TwilioPhone``), sent to the node's API over HTTP.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.faults.harness import NodePorts, api, boot, callbacks, crash, queue, seat, seats_yaml
from tests.twilio.conftest import PUBLIC, TOKEN, TwilioPhone

pytestmark = pytest.mark.sip

IMMOBILE = "1 2 2"  # -> rescue


async def test_twilio_caller_in_queue_keeps_the_place_across_a_node_restart(tmp_path: Path) -> None:
    ports = NodePorts.pick(workers=1)
    seats = seats_yaml(("s1", "rescue", free_port(), "not_ready"))
    env = {"HANDOFF_TWILIO_AUTH_TOKEN": TOKEN, "HANDOFF_PUBLIC_BASE_URL": PUBLIC, "HANDOFF_WRAP_UP_S": "0",
           "HANDOFF_TWILIO_RECLAIM_S": "10"}
    node = boot(tmp_path, ports, name="before", seats_yaml=seats, env=env)
    restarted = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports.api}", timeout=10) as http:
            phone = TwilioPhone(http, "CA" + "5" * 32, "+8613800000055")
            gone = TwilioPhone(http, "CA" + "6" * 32, "+8613800000066")  # hangs up while the node is down
            for p in (phone, gone):
                await p.dial_in()
                await p.keys(IMMOBILE)
                await p.hold_poll()
                assert p.doc is not None and p.doc.find("Redirect") is not None
                node.wait_for(lambda p=p: "ENTERQUEUE" in [e["kind"] for e in node.call(p.call_id)["events"]])
            node.wait_for(lambda: queue(node, "rescue")["waiting"] == 2)

            crash(node)
            restarted = boot(tmp_path, ports, name="after", seats_yaml=seats, env=env, token=node.token)
            # the callers are still waiting: not closed as lost, still in the queue, no callback
            # (the API process serves pushed views: wait for the restored queue to reach it)
            restarted.wait_for(lambda: queue(restarted, "rescue")["waiting"] == 2, timeout=10)
            rec = restarted.call(phone.call_id)
            assert rec["ended_at"] is None, rec
            assert phone.call_id not in callbacks(restarted)

            await phone.hold_poll()                 # the next webhook continues (no 404)
            assert phone.doc is not None and phone.doc.find("Redirect") is not None
            # the caller who never came back is closed as lost, with a callback: no ghost in the queue
            lost = restarted.wait_for(lambda: (c := restarted.call(gone.call_id))["end_reason"] and c, timeout=30)
            assert lost["end_reason"] == "lost_node_failure", lost
            assert callbacks(restarted)[gone.call_id]["caller"] == "+8613800000066"
            restarted.wait_for(lambda: queue(restarted, "rescue")["waiting"] == 1, timeout=10)
            assert restarted.call(phone.call_id)["ended_at"] is None
            assert api(restarted, "PUT", "/api/v1/seats/s1/status", json={"status": "available"}).status_code == 200
            dial = await phone.hold_until_dial()
            assert dial.find("Sip") is not None and "s1" in (dial.find("Sip").text or "")
            await phone.seat_answers()
            await phone.dial_ends("completed", "12")
            done = restarted.wait_for(lambda: (c := restarted.call(phone.call_id))["end_reason"] and c)
            assert done["end_reason"] == "completed" and done["seat_id"] == "s1", done
            restarted.wait_for(lambda: seat(restarted, "s1")["status"] == "available")
    finally:
        if node.proc.poll() is None:
            node.stop()
        if restarted is not None:
            restarted.stop()
