"""A running API over the real routing service, call records, catalog and tokens.

The test's event loop plays the node's control loop: the routing service and the stores live on
it, and the API runs on its own uvicorn thread reaching them through ``ControlLoopBridge`` like in
``handoff122 serve``.  Tests must therefore talk HTTP with an async client (never block the loop).
"""

from __future__ import annotations

import asyncio
import time
import wave
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from api.audit import AuditLog
from api.context import ApiContext
from api.flow_admin import FlowFileAdmin
from api.server import ApiServer, ControlLoopBridge
from api.tokens import TokenStore
from gateway.settings import Settings
from recordings.catalog import Catalog
from recordings.finalize import finalize
from routing.acd import SeatSpec
from routing.service import RoutingService
from routing.status import SeatStatus
from routing.store.calls import CallRecords
from routing.store.database import create_schema
from tests.api.scratch import scratch_engine
from tests.conftest import ROOT, free_port


async def build_routing(engine: Any, db_url: str, tmp_path: Path, seats: list[SeatSpec], **settings_: Any) -> Any:
    """The routing service exactly as ``gateway.node`` builds it (``settings_``: other settings)."""
    settings = Settings(data_dir=tmp_path, db_url=db_url, **{"ring_timeout": 20.0, **settings_})
    routing = RoutingService.from_settings(settings, engine, node_id="test-node")
    await routing.start(seats)
    return routing


@dataclass
class Node:
    url: str
    server: ApiServer
    routing: Any
    calls: CallRecords
    catalog: Catalog
    tokens: dict[str, str]
    token_store: TokenStore
    flow_path: Path
    tables: AsyncExitStack
    ctx: ApiContext
    installed: list[Any] = field(default_factory=list)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who in self.tokens else {}

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/api/v1/events"


SEATS = [
    SeatSpec(id="s1", contact="sip:s1@127.0.0.1:5091", skills={"rescue": 0, "online_determination": 0},
             name="救援 1", status=SeatStatus.AVAILABLE),
    SeatSpec(id="s2", contact="sip:s2@127.0.0.1:5092", skills={"intake_guidance": 0}, name="引导 1",
             status=SeatStatus.LOGGED_OUT),
]


async def start_node(db_url: str, tmp_path: Path, seats: list[SeatSpec] = SEATS, **settings: Any) -> Node:
    tables = AsyncExitStack()
    engine = await tables.enter_async_context(scratch_engine(db_url))
    await create_schema(engine)
    token_store = TokenStore(engine, cache_s=0.0)
    await token_store.create_schema()
    catalog = Catalog(engine, tmp_path / "recordings")
    await catalog.create_schema()
    routing = await build_routing(engine, db_url, tmp_path, seats, **settings)
    flow_path = tmp_path / "flow.yaml"
    flow_path.write_text((ROOT / "ivr" / "flows" / "default.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    installed: list[Any] = []
    flow_admin = FlowFileAdmin(flow_path, on_installed=installed.append, base_dir=ROOT / "ivr" / "flows")
    ctx = ApiContext(routing=routing, calls=CallRecords(engine), tokens=token_store, recordings=catalog,
                     flow_admin=flow_admin, bridge=ControlLoopBridge(asyncio.get_running_loop()),
                     node_id="test-node", gateway_stats=lambda: {"workers_alive": 2},
                     audit=AuditLog(engine, node_id="test-node"))
    server = ApiServer(create_app(ctx), "127.0.0.1", free_port())
    await server.start_async()
    tokens = {
        "admin": await token_store.create("admin"),
        "supervisor": await token_store.create("supervisor"),
        "seat_s1": await token_store.create("seat", "s1"),
        "seat_s2": await token_store.create("seat", "s2"),
        "bad": "h122_" + "x" * 43,
    }
    return Node(url=server.url, server=server, routing=routing, calls=ctx.calls, catalog=catalog, tokens=tokens,
                token_store=token_store, flow_path=flow_path, tables=tables, ctx=ctx, installed=installed)


async def stop_node(node: Node) -> None:
    await node.server.stop_async()
    await node.routing.stop()
    await node.tables.aclose()


@pytest.fixture
async def node(db_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    n = await start_node(db_url, tmp_path)
    try:
        yield n
    finally:
        await stop_node(n)


@pytest.fixture
async def client(node: Node) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as c:
        yield c


def write_wav(path: Path, seconds: float = 1.0, rate: int = 8000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(range(256)) * int(seconds * rate * 2 / 256))


async def add_recording(catalog: Catalog, recording_id: str, call_id: str) -> Path:
    started = time.time()
    await catalog.opened(recording_id, call_id, started)
    partial = catalog.layout.partial_path(recording_id)
    write_wav(partial)
    final = catalog.layout.final_path(recording_id, started)
    final.parent.mkdir(parents=True, exist_ok=True)
    info = await asyncio.to_thread(finalize, partial, final)
    await catalog.closed(recording_id, info, final)
    return final
