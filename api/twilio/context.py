"""What the Twilio webhooks need from the node, named explicitly so the composition root builds it.

The webhooks share the routing service and the IVR flow with the SIP gateway: one ACD decides for
both ingresses, one interpreter walks both kinds of caller through the same flow.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ivr.flow import Flow
from journey.call import RoutingPort
from routing.events import Event
from routing.store.journeys import JourneyStore


class TwilioRouting(RoutingPort, Protocol):
    """The slice of ``routing.service.RoutingService`` the Twilio ingress drives: what a call
    journey reports (``journey.call.RoutingPort``) plus the decisions it follows."""

    def on_event(self, listener: Callable[[Event], None]) -> Any: ...


#: Runs a coroutine function on the loop that owns the routing service (``ApiContext.on_control``).
ControlRunner = Callable[..., Awaitable[Any]]


async def _run_here(fn: Callable[..., Awaitable[Any]], /, *args: Any, **kwargs: Any) -> Any:
    return await fn(*args, **kwargs)


@dataclass
class TwilioContext:
    routing: TwilioRouting
    #: The flow new calls start with (a callable: an operator may install a new flow at any time).
    flow: Callable[[], Flow]
    #: HANDOFF_TWILIO_AUTH_TOKEN; without one every webhook is refused (403).
    auth_token: str | None
    #: HANDOFF_PUBLIC_BASE_URL: the scheme://host[:port][/prefix] Twilio calls; signatures are
    #: checked against it, never against the Host header a proxy may have rewritten.
    public_base_url: str
    clock: Callable[[], float] = time.time
    node_id: str = "node-1"
    #: Webhooks run their decisions here (the control loop), so the call registry and the routing
    #: service are only ever touched from one thread.  Default: the API's own loop.
    on_control: ControlRunner = _run_here
    #: Seconds of ringing asked of Twilio when an OFFER names none; Twilio gives up slightly before
    #: the ACD's own ring timer so that the no-answer report usually wins the race.
    ring_timeout_s: float = 20.0
    #: How often a waiting caller hears their queue position (``hold_announce_interval``; a queue's
    #: own ``announce_every_s`` wins).
    announce_every_s: float = 15.0
    #: Issue 13: where each call stands, saved before every answer (``routing.store.journeys``);
    #: None keeps journeys in memory only.
    journeys: JourneyStore | None = None
