"""What the API needs from the node, injected by the composition root (``gateway.node``).

The API owns no state of the centre: seats and queues are the routing service's, call records the
store's, recordings the catalog's.  Naming them here (as Protocols) keeps ``api`` testable against
the real objects and keeps the dependency pointing inward.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from api.audit import AuditLog
from api.bridge import ControlLoopBridge
from api.limits import ApiLimits
from api.readmodel import LiveViews
from api.tokens import TokenStore
from routing.daily_report import OutcomePolicy


class FlowProblemLike(Protocol):
    location: str
    message: str


class FlowAdmin(Protocol):
    """Validates a new IVR flow and, if it has no problems, makes new calls use it (no restart)."""

    async def install_flow(self, yaml_text: str) -> list[FlowProblemLike]: ...


class AcdReads(Protocol):
    def seats_view(self, now: float) -> list[dict[str, Any]]: ...
    def queues_view(self, now: float) -> list[dict[str, Any]]: ...
    def call_view(self, call_id: str) -> dict[str, Any] | None: ...


class Routing(Protocol):
    """The slice of ``routing.service.RoutingService`` the API uses.

    Commands decide at once and return the events as an awaitable list (``Emitted``); the API
    awaits them through ``ApiContext.on_control``.
    """

    acd: AcdReads

    def set_status(self, seat_id: str, status: Any, reason: str | None = None) -> Awaitable[Any]: ...
    def end_wrap_up(self, seat_id: str) -> Awaitable[Any]: ...
    def record(self, events: list[Any]) -> Awaitable[Any]: ...
    def add_seat(self, spec: Any) -> Awaitable[Any]: ...
    def update_seat(self, spec: Any) -> Awaitable[Any]: ...
    def remove_seat(self, seat_id: str) -> Awaitable[Any]: ...
    def take_callback(self, seat_id: str) -> Awaitable[Any]: ...
    def complete_callback(self, callback_id: str) -> Awaitable[Any]: ...
    def subscribe(self) -> asyncio.Queue[Any]: ...
    def unsubscribe(self, q: asyncio.Queue[Any]) -> None: ...


class CallStore(Protocol):
    """The slice of ``routing.store.calls.CallRecords`` the API uses."""

    async def get(self, call_id: str) -> dict[str, Any] | None: ...
    async def list(self, limit: int = 50, before: float | None = None, skill: str | None = None,
                   outcome: str | None = None, seat_id: str | None = None, caller: str | None = None,
                   since: float | None = None, until: float | None = None) -> list[dict[str, Any]]: ...


class RecordingCatalog(Protocol):
    async def get(self, recording_id: str) -> Any: ...


@dataclass(frozen=True)
class SeatCredentialsDoor:
    """Where a seat phone's digest credentials go (``gateway.node.Node.set_seat_credentials``):
    the control process stores the HA1 and loads it into the front door.  ``realm`` is the SIP
    realm the HA1 is computed for, here, so a password never leaves the API."""

    set: Callable[[str, str, str], Awaitable[dict[str, Any]]]
    remove: Callable[[str], Awaitable[dict[str, Any]]]
    realm: str = "handoff122"


@dataclass
class ApiContext:
    routing: Routing
    calls: CallStore
    tokens: TokenStore
    recordings: RecordingCatalog | None = None
    flow_admin: FlowAdmin | None = None
    clock: Callable[[], float] = time.time
    service_level_s: float = 20.0
    node_id: str = "node-1"
    #: How API-thread code reaches the control loop; None when the API runs on the control loop.
    bridge: ControlLoopBridge | None = None
    #: Extra gauges for /metrics from the gateway, e.g. {"calls_active": 3, "workers_alive": 4}.
    gateway_stats: Callable[[], Mapping[str, float]] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    #: Where recording downloads and seat-status changes by others are recorded.
    audit: AuditLog | None = None
    #: Body sizes, flow parsing, bad-token slow-down, WebSocket authentication (issue 12).
    limits: ApiLimits = field(default_factory=ApiLimits)
    #: The pushed seats/queues views and their WebSocket fan-out.  Under ``handoff122 serve`` the
    #: API process fills it from the control process's feed; left None, the first WebSocket starts
    #: a feed over ``routing`` (an app built beside the routing service, as in tests).
    live: LiveViews | None = None
    #: The observed counters and histograms (``journey.metrics.REGISTRY``) when they live in
    #: another process (the API process asks the control process, cached briefly).
    observed_metrics: Callable[[], Awaitable[bytes]] | None = None
    #: The configured dispositions and what counts as fast-handled (issue 15).
    outcomes: OutcomePolicy = field(default_factory=OutcomePolicy)
    #: The day's figures from the event log (``api.reports.DailyReports``); None without a store.
    reports: Any = None
    #: Transfers a live call (``gateway.node.Node.transfer_call``); None where no media runs.
    transfer: Callable[[Any], Awaitable[dict[str, Any]]] | None = None
    #: Seat hold / resume of a live call (``gateway.node.Node.hold_call``).
    hold: Callable[[str, bool, str], Awaitable[dict[str, Any]]] | None = None
    #: A supervisor listens / whispers / barges (``gateway.node.Node.monitor_call``).
    monitor: Callable[[Any], Awaitable[dict[str, Any]]] | None = None
    #: Seat phones' registration credentials (admin API); None where no node carries them.
    credentials: SeatCredentialsDoor | None = None
    #: Completes (True) or cancels a warm transfer (``gateway.node.Node.consult_call``).
    consult: Callable[[str, bool, str], Awaitable[dict[str, Any]]] | None = None

    async def on_control(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Await a coroutine function of the node on the control loop."""
        if self.bridge is None:
            return await fn(*args, **kwargs)
        return await self.bridge.run(fn, *args, **kwargs)

    async def read_control(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run a plain read of the node's state on the control loop's thread (no torn reads)."""
        if self.bridge is None:
            result = fn(*args, **kwargs)
            # in the API process some reads are answered by the control process (``call_view``)
            return await result if inspect.isawaitable(result) else result
        return await self.bridge.call(fn, *args, **kwargs)

    async def live_views(self) -> LiveViews:
        """The live views, starting a feed over ``routing`` on first use when none is pushed."""
        if self.live is None:
            from api.feed import ThreadHop, ViewsFeed

            live = self.live = LiveViews(call_view=lambda call_id: self.read_control(self.routing.acd.call_view,
                                                                                     call_id))
            sink = live if self.bridge is None else ThreadHop(asyncio.get_running_loop(), live)
            feed = ViewsFeed(self.routing, sink, self.gateway_stats)
            self.extras["views_feed"] = feed
            await self.read_control(feed.start)
        return self.live
