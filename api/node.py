"""The API inside ``handoff122 serve``: built from the node, served on its own thread and loop.

``gateway.node`` calls ``await build_api(node)`` once storage and routing run and awaits
``stop()`` on the result when it shuts down.  Every read or command the API makes goes back to
the node's control loop through a ``ControlLoopBridge``; so do the Twilio webhooks, mounted under
``/twilio`` on the same server (refused with 403 until ``twilio_auth_token`` is set).
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
from api.twilio import TwilioCalls, TwilioContext, twilio_router
from gateway.settings import ConfigError
from routing.store.journeys import JourneyStore

log = logging.getLogger(__name__)


@dataclass
class RunningApi:
    server: ApiServer
    ctx: ApiContext
    twilio: TwilioCalls

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


def twilio_context(node: Any, bridge: ControlLoopBridge) -> TwilioContext:
    """The Twilio ingress over the node's routing service and current flow.

    Without ``public_base_url`` the API's own address stands in: right for a tunnel that keeps the
    host, wrong behind a proxy that rewrites it (signatures are checked against this URL).
    """
    s = node.settings
    return TwilioContext(routing=node.routing, flow=lambda: node.flow, auth_token=s.twilio_auth_token,
                         public_base_url=s.public_base_url or f"http://{s.api_host}:{s.api_port}",
                         node_id=node.node_id, on_control=bridge.run, ring_timeout_s=float(s.ring_timeout),
                         journeys=JourneyStore(node.engine))  # issue 13: Twilio calls survive a restart


async def build_api(node: Any) -> RunningApi:
    """Runs on the control loop: the Twilio registry subscribes to the routing service here."""
    s = node.settings
    tokens = TokenStore(node.engine)
    await tokens.create_schema()  # no-op when the node's migrations already made the table
    flow_admin = FlowFileAdmin(save_to=s.flow, on_installed=_install_flow_on(node), base_dir=s.flow_file.parent)
    stats = getattr(node, "media_stats", None)
    bridge = ControlLoopBridge(asyncio.get_running_loop())
    ctx = ApiContext(routing=node.routing, calls=node.calls, tokens=tokens, recordings=node.catalog,
                     flow_admin=flow_admin, service_level_s=s.service_level_s, node_id=node.node_id,
                     bridge=bridge, gateway_stats=stats)
    twilio = TwilioCalls(twilio_context(node, bridge))
    twilio.listen()
    app = create_app(ctx, ingress=[twilio_router(twilio.ctx, twilio)])
    server = ApiServer(app, s.api_host, s.api_port, log_level="warning")
    try:
        await server.start_async()
    except ApiServerError as e:
        raise ConfigError(str(e)) from None
    return RunningApi(server=server, ctx=ctx, twilio=twilio)
