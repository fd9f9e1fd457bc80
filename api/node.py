"""The API inside ``handoff122 serve``: built from the node, served on its own thread and loop.

``gateway.node`` calls ``await build_api(node)`` once storage and routing run and awaits
``stop()`` on the result when it shuts down.  Every read or command the API makes goes back to
the node's control loop through a ``ControlLoopBridge``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from api.app import create_app
from api.context import ApiContext
from api.flow_admin import FlowFileAdmin
from api.server import ApiServer, ApiServerError, ControlLoopBridge
from api.tokens import TokenStore
from gateway.settings import ConfigError

log = logging.getLogger(__name__)


@dataclass
class RunningApi:
    server: ApiServer
    ctx: ApiContext

    @property
    def url(self) -> str:
        return self.server.url

    async def stop(self) -> None:
        await self.server.stop_async()


def _install_flow_on(node: Any):  # type: ignore[no-untyped-def]
    def installed(flow: Any) -> None:
        node.flow = flow
        director = getattr(node, "director", None)
        if director is not None:
            director.flow = flow  # new calls start on it; calls in the IVR keep theirs

    return installed


async def build_api(node: Any) -> RunningApi:
    s = node.settings
    tokens = TokenStore(node.engine)
    await tokens.create_schema()  # no-op when the node's migrations already made the table
    flow_admin = FlowFileAdmin(save_to=s.flow, on_installed=_install_flow_on(node), base_dir=s.flow_file.parent)
    stats = getattr(node, "media_stats", None)
    ctx = ApiContext(routing=node.routing, calls=node.calls, tokens=tokens, recordings=node.catalog,
                     flow_admin=flow_admin, service_level_s=s.service_level_s, node_id=node.node_id,
                     bridge=ControlLoopBridge(asyncio.get_running_loop()), gateway_stats=stats)
    server = ApiServer(create_app(ctx), s.api_host, s.api_port, log_level="warning")
    try:
        await server.start_async()
    except ApiServerError as e:
        raise ConfigError(str(e)) from None
    return RunningApi(server=server, ctx=ctx)
