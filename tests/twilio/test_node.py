"""The Twilio webhooks as ``handoff122 serve`` mounts them: ``api.node.build_api`` on the node's loop.

The node here is what ``build_api`` reads of ``gateway.node`` (settings, engine, routing, call
records, catalog, flow, node id), built from the same parts; the API runs on its own uvicorn
thread and every webhook hops to this test's loop, the control loop, as in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from api.node import RunningApi, build_api
from gateway.settings import Settings
from ivr.flow import DEFAULT_FLOW_PATH
from ivr.loader import load_flow
from recordings.catalog import Catalog
from routing.service import RoutingService
from routing.status import SeatStatus
from routing.store.calls import CallRecords
from routing.store.database import create_schema
from tests.api.scratch import scratch_engine
from tests.conftest import free_port
from tests.twilio.conftest import PUBLIC, TOKEN, TwilioPhone, seat


@dataclass
class NodeParts:
    """An ``api.node.ApiHost`` built from the same parts as ``gateway.node.Node``."""

    settings: Settings
    engine: Any
    routing: RoutingService
    calls: CallRecords
    catalog: Catalog
    flow: Any
    node_id: str = "twilio-node"
    # no media here: transfers, hold and monitoring answer 409 ("this node carries no calls")
    transfer_call: Any = None
    hold_call: Any = None
    monitor_call: Any = None
    consult_call: Any = None

    def install_flow(self, flow: Any) -> None:
        self.flow = flow

    def media_stats(self) -> dict[str, float]:
        return {}


@asynccontextmanager
async def serving(db_url: str, tmp_path: Path, auth_token: str | None) -> AsyncIterator[tuple[NodeParts, RunningApi]]:
    settings = Settings(data_dir=tmp_path, db_url=db_url, api_port=free_port(), twilio_auth_token=auth_token,
                        public_base_url=PUBLIC, ring_timeout=30.0)
    async with scratch_engine(db_url) as engine:
        await create_schema(engine)
        catalog = Catalog(engine, settings.recordings_dir)
        await catalog.create_schema()
        routing = RoutingService.from_settings(settings, engine, node_id="twilio-node")
        await routing.start([seat("s1", ["rescue"])])
        node = NodeParts(settings=settings, engine=engine, routing=routing, calls=CallRecords(engine),
                         catalog=catalog, flow=load_flow(DEFAULT_FLOW_PATH))
        api = await build_api(node)
        try:
            yield node, api
        finally:
            await api.stop()
            await routing.stop()


async def test_serve_mounts_the_webhooks_beside_the_api(db_url: str, tmp_path: Path) -> None:
    async with serving(db_url, tmp_path, TOKEN) as (node, api), httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        phone = TwilioPhone(http, "CA" + "7" * 32, "+8613800000077")
        await phone.dial_in()
        await phone.keys("1 2 2")  # vehicle cannot move -> rescue
        dial = await phone.hold_until_dial()
        assert dial.attrib["timeout"] == "28"  # from the node's ring_timeout (30 s), just before the ACD's
        assert dial.attrib["action"].startswith(f"{PUBLIC}/twilio/dial-status?")
        await phone.seat_answers()
        assert node.routing.acd.seat_view("s1", 0.0)["status"] == SeatStatus.ON_CALL.value
        await phone.dial_ends("completed", "20")

        # the same server's REST API sees the call the webhooks drove
        await node.routing.writer.flush()
        supervisor = await api.ctx.tokens.create("supervisor")
        r = await http.get(f"/api/v1/calls/{phone.call_id}", headers={"Authorization": f"Bearer {supervisor}"})
        assert r.status_code == 200, r.text
        rec = r.json()
        assert (rec["ingress"], rec["seat_id"], rec["end_reason"], rec["ended_by"]) == (
            "twilio", "s1", "completed", "seat")
        assert api.twilio.ended and not api.twilio.live


async def test_without_an_auth_token_every_webhook_is_refused(db_url: str, tmp_path: Path) -> None:
    async with serving(db_url, tmp_path, None) as (node, api), httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        phone = TwilioPhone(http, "CA" + "8" * 32, "+8613800000088")
        r = await phone.post("/twilio/voice", {"CallSid": phone.sid, "From": phone.caller, "To": "+86122"})
        assert r.status_code == 403, r.text
        await node.routing.writer.flush()
        assert await node.calls.list(limit=5) == []
        assert not api.twilio.live
