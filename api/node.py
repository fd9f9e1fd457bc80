"""The API and the node: the control process's half of the API process, or the API on a thread.

``handoff122 serve`` runs the API in a process of its own (``api.process``): ``gateway.node`` calls
``await build_api_desk(node, ...)`` once storage and routing run, which starts the feed and the
channel the API process connects to (``api.link``).  ``build_api(node)`` serves the API on a
thread of the control process instead (tools and tests); what follows describes that mode.  Every read or command the API makes goes back to
the node's control loop through a ``ControlLoopBridge``; so do the Twilio webhooks, mounted under
``/twilio`` on the same server (refused with 403 until ``twilio_auth_token`` is set).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from api.app import create_app
from api.audit import AuditLog
from api.context import ApiContext, SeatCredentialsDoor
from api.flow_admin import FlowFileAdmin
from api.limits import ApiLimits
from api.reports import DailyReports
from api.server import ApiServer, ControlLoopBridge
from api.signin import OneTimeSignIn, first_sign_in, signin_router
from api.tokens import TokenStore
from api.twilio import TwilioCalls, TwilioContext, twilio_router
from ivr.flow import Flow
from routing.daily_report import OutcomePolicy
from routing.store.journeys import JourneyStore

log = logging.getLogger(__name__)


class NodeSettings(Protocol):
    """The settings the API reads (``gateway.settings.Settings`` has them all)."""

    @property
    def api_host(self) -> str: ...
    @property
    def api_port(self) -> int: ...
    @property
    def flow(self) -> Path | None: ...
    @property
    def flow_file(self) -> Path: ...
    @property
    def twilio_auth_token(self) -> str | None: ...
    @property
    def public_base_url(self) -> str | None: ...
    @property
    def ring_timeout(self) -> float: ...
    @property
    def service_level_s(self) -> float: ...
    @property
    def hold_announce_interval(self) -> float: ...
    @property
    def data_dir(self) -> Path: ...
    @property
    def dispositions(self) -> list[str]: ...
    @property
    def fast_handled_dispositions(self) -> list[str]: ...
    @property
    def not_accident_dispositions(self) -> list[str]: ...
    @property
    def report_timezone(self) -> str: ...
    @property
    def db_url(self) -> str | None: ...
    @property
    def database_url(self) -> str: ...
    @property
    def recordings_dir(self) -> Path: ...
    @property
    def sip_realm(self) -> str: ...


class ApiHost(Protocol):
    """What the API needs from the node that serves it, and nothing more: the API never imports
    the gateway, the node hands itself over as this interface."""

    @property
    def settings(self) -> NodeSettings: ...
    @property
    def node_id(self) -> str: ...
    @property
    def routing(self) -> Any: ...       # routing.service.RoutingService
    @property
    def engine(self) -> Any: ...        # sqlalchemy AsyncEngine
    @property
    def calls(self) -> Any: ...         # routing.store.calls.CallRecords
    @property
    def catalog(self) -> Any: ...       # recordings.catalog.Catalog
    @property
    def flow(self) -> Flow: ...

    def install_flow(self, flow: Flow) -> None:
        """New calls start on ``flow``; calls in the IVR keep theirs."""

    def media_stats(self) -> dict[str, float]:
        """Live media objects across workers (``handoff122_gateway_*`` in /metrics)."""

    async def monitor_call(self, req: Any) -> dict[str, Any]:
        """A supervisor's phone joins a live call (``journey.transfer.MonitorRequest``)."""

    async def hold_call(self, call_id: str, on: bool, by: str) -> dict[str, Any]:
        """Seat hold (``on``) or resume of a live call; raises ``TransferRefused``."""

    async def transfer_call(self, req: Any) -> dict[str, Any]:
        """A transfer of a live call (``journey.transfer``); raises ``TransferRefused``."""

    async def set_seat_credentials(self, seat_id: str, username: str, ha1: str) -> dict[str, Any]:
        """A seat phone's digest credentials (HA1), stored and loaded into the front door."""

    async def remove_seat_credentials(self, seat_id: str) -> dict[str, Any]:
        """The seat's phone may no longer register; its registration is removed."""

    async def consult_call(self, call_id: str, complete: bool, by: str) -> dict[str, Any]:
        """Complete (``complete``) or cancel the warm transfer of a live call; raises ``TransferRefused``."""


@dataclass
class RunningApi:
    server: ApiServer
    ctx: ApiContext
    twilio: TwilioCalls
    signin: OneTimeSignIn | None = None

    @property
    def signin_url(self) -> str | None:
        """The one-time sign-in link of a node that has no token yet (None once one exists)."""
        if self.signin is None or self.signin.used:
            return None
        return f"{self.server.url}/signin?code={self.signin.code}"

    @property
    def url(self) -> str:
        return self.server.url

    async def stop(self) -> None:
        await self.server.stop_async()


def twilio_context(node: ApiHost, bridge: ControlLoopBridge) -> TwilioContext:
    """The Twilio ingress over the node's routing service and current flow.

    Without ``public_base_url`` the API's own address stands in: right for a tunnel that keeps the
    host, wrong behind a proxy that rewrites it (signatures are checked against this URL).
    """
    s = node.settings
    return TwilioContext(routing=node.routing, flow=lambda: node.flow, auth_token=s.twilio_auth_token,
                         public_base_url=s.public_base_url or f"http://{s.api_host}:{s.api_port}",
                         node_id=node.node_id, on_control=bridge.run, ring_timeout_s=float(s.ring_timeout),
                         announce_every_s=float(s.hold_announce_interval),
                         journeys=JourneyStore(node.engine))  # issue 13: Twilio calls survive a restart


def _credentials_door(node: ApiHost) -> SeatCredentialsDoor | None:
    """Seat phones' credentials go to the node (None for a host that carries no front door)."""
    put, remove = getattr(node, "set_seat_credentials", None), getattr(node, "remove_seat_credentials", None)
    if put is None or remove is None:
        return None
    return SeatCredentialsDoor(put, remove, str(getattr(node.settings, "sip_realm", "handoff122")))


async def build_api(node: ApiHost) -> RunningApi:
    """Runs on the control loop: the Twilio registry subscribes to the routing service here.
    Raises ``api.server.ApiServerError`` when the server cannot start (the node turns it into its
    one-line configuration error)."""
    s = node.settings
    tokens = TokenStore(node.engine)
    await tokens.create_schema()  # no-op when the node's migrations already made the table
    limits = ApiLimits.from_settings(s)
    flow_admin = FlowFileAdmin(save_to=s.flow, on_installed=node.install_flow, base_dir=s.flow_file.parent,
                               parse_timeout_s=limits.flow_parse_timeout_s)
    bridge = ControlLoopBridge(asyncio.get_running_loop())
    outcomes = OutcomePolicy(tuple(s.dispositions), frozenset(s.fast_handled_dispositions),
                             frozenset(s.not_accident_dispositions))
    ctx = ApiContext(routing=node.routing, calls=node.calls, tokens=tokens, recordings=node.catalog,
                     flow_admin=flow_admin, service_level_s=s.service_level_s, node_id=node.node_id,
                     bridge=bridge, gateway_stats=node.media_stats, limits=limits,
                     audit=AuditLog(node.engine, node_id=node.node_id), outcomes=outcomes,
                     reports=DailyReports(node.engine, outcomes, s.service_level_s, s.report_timezone),
                     transfer=node.transfer_call, hold=node.hold_call,
                     monitor=node.monitor_call, credentials=_credentials_door(node),
                     consult=node.consult_call)
    twilio = TwilioCalls(twilio_context(node, bridge))
    twilio.listen()
    signin = await first_sign_in(tokens)
    where = f"--data-dir {s.data_dir}" if s.db_url is None else '--db-url "$HANDOFF_DB_URL"'
    token_command = f"handoff122 token create --role supervisor {where}"
    app = create_app(ctx, ingress=[twilio_router(twilio.ctx, twilio), signin_router(signin, token_command)])
    server = ApiServer(app, s.api_host, s.api_port, log_level="warning")
    await server.start_async()
    return RunningApi(server=server, ctx=ctx, twilio=twilio, signin=signin)


# ------------------------------------------------------------------------------------------------
# the API in its own process (``handoff122 serve``): the control process's half
# ------------------------------------------------------------------------------------------------
@dataclass
class ApiDesk:
    """What the control process keeps for the API process: the channel it pushes and takes
    commands on, the Twilio registry and flow admin those commands reach, and the sign-in link."""

    desk: Any           # api.link.ControlDesk
    feed: Any           # api.feed.ViewsFeed
    twilio: TwilioCalls
    config: Any         # api.process.ApiProcessConfig, handed to the child
    signin: OneTimeSignIn | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.config.port}"

    @property
    def signin_url(self) -> str | None:
        if self.signin is None:
            return None
        return f"{self.url}/signin?code={self.signin.code}"

    async def stop(self) -> None:
        self.feed.stop()
        await self.desk.stop()


async def build_api_desk(node: ApiHost, channel: Path, secret: str) -> ApiDesk:
    """Runs on the control loop: listen on ``channel`` for the API process and feed it."""
    from api.feed import ViewsFeed
    from api.link import ACD_READS, ROUTING_COMMANDS, TWILIO_COMMANDS, ControlDesk, ObservedMetrics
    from api.process import ApiProcessConfig

    s = node.settings
    tokens = TokenStore(node.engine)
    await tokens.create_schema()
    limits = ApiLimits.from_settings(s)
    flow_admin = FlowFileAdmin(save_to=s.flow, on_installed=node.install_flow, base_dir=s.flow_file.parent,
                               parse_timeout_s=limits.flow_parse_timeout_s)
    twilio_ctx = TwilioContext(routing=node.routing, flow=lambda: node.flow, auth_token=s.twilio_auth_token,
                               public_base_url=s.public_base_url or f"http://{s.api_host}:{s.api_port}",
                               node_id=node.node_id, ring_timeout_s=float(s.ring_timeout),
                               announce_every_s=float(s.hold_announce_interval),
                               journeys=JourneyStore(node.engine))  # issue 13: Twilio calls survive a restart
    twilio = TwilioCalls(twilio_ctx)
    twilio.listen()
    signin = await first_sign_in(tokens)
    desk = ControlDesk(channel, secret, targets={
        "routing": (node.routing, ROUTING_COMMANDS),
        "acd": (node.routing.acd, ACD_READS),
        "twilio": (twilio, TWILIO_COMMANDS),
        "flow": (flow_admin, frozenset({"install_flow"})),
        "metrics": (ObservedMetrics(), frozenset({"observed"})),
        # live calls (issue 15): their media and journeys are here
        "node": (node, frozenset({"transfer_call", "hold_call", "monitor_call", "consult_call",
                                  # seat phones' credentials (HA1 only): Kamailio's RPC is here
                                  "set_seat_credentials", "remove_seat_credentials"})),
    })
    feed = ViewsFeed(node.routing, desk, node.media_stats)
    desk.feed = feed
    await desk.start()
    feed.start()
    where = f"--data-dir {s.data_dir}" if s.db_url is None else '--db-url "$HANDOFF_DB_URL"'
    config = ApiProcessConfig(
        host=s.api_host, port=s.api_port, db_url=s.database_url, recordings_dir=str(s.recordings_dir),
        channel=str(channel), secret=secret, node_id=node.node_id,
        service_level_s=s.service_level_s, limits=asdict(limits), twilio_auth_token=s.twilio_auth_token,
        public_base_url=s.public_base_url, signin_code=signin.code if signin else None,
        dispositions=list(s.dispositions), fast_handled_dispositions=list(s.fast_handled_dispositions),
        not_accident_dispositions=list(s.not_accident_dispositions), report_timezone=s.report_timezone,
        sip_realm=s.sip_realm, token_command=f"handoff122 token create --role supervisor {where}")
    return ApiDesk(desk=desk, feed=feed, twilio=twilio, config=config, signin=signin)
