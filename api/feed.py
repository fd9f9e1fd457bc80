"""The control side of the live views: what the control process pushes to the API.

Runs on the control loop.  Every ACD event goes out as it happens (one listener call, no
awaiting); the seats and queues views go out when something changed, coalesced over
``coalesce_s``, and every ``every_s`` seconds regardless (waiting times grow with the clock).
The sink is the API process's channel (``api.link.ControlDesk``) under ``handoff122 serve``, or an
in-process ``api.readmodel.LiveViews`` when the app runs beside the routing service (tests).
Nothing here waits on a reader: a sink must take a message at once or drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

#: How long after a change the views are pushed (changes within it share one push).
COALESCE_S = 0.05
#: Views are pushed at least this often (the waiting and idle times move with the clock).
EVERY_S = 1.0


class FeedSink(Protocol):
    def apply_event(self, ev: dict[str, Any]) -> None: ...
    def apply_views_full(self, views: dict[str, Any]) -> None: ...


class ThreadHop:
    """A sink on another thread's loop (the in-process app runs uvicorn on its own thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink: FeedSink) -> None:
        self.loop, self.sink = loop, sink

    def apply_event(self, ev: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # that loop is closed: the app has stopped
            self.loop.call_soon_threadsafe(self.sink.apply_event, ev)

    def apply_views_full(self, views: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.sink.apply_views_full, views)


def views_of(routing: Any, gateway_stats: Callable[[], Mapping[str, float]] | None, now: float) -> dict[str, Any]:
    """The views as pushed: seats, queues, callbacks, and the gateway's gauges."""
    acd = routing.acd
    callbacks = getattr(acd, "callbacks", None)
    return {"seats": acd.seats_view(now), "queues": acd.queues_view(now),
            "callbacks": [e.to_dict() for e in callbacks.active()] if callbacks is not None else [],
            "gateway": dict(gateway_stats()) if gateway_stats else {}, "at": now}


class ViewsFeed:
    def __init__(self, routing: Any, sink: FeedSink, gateway_stats: Callable[[], Mapping[str, float]] | None = None,
                 coalesce_s: float = COALESCE_S, every_s: float = EVERY_S, clock: Callable[[], float] = time.time) -> None:
        self.routing, self.sink, self.gateway_stats = routing, sink, gateway_stats
        self.coalesce_s, self.every_s, self.clock = coalesce_s, every_s, clock
        self._off: Callable[[], Any] | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.pushes = 0

    def start(self) -> None:
        """On the control loop: listen to the routing service and push the first views now."""
        self._off = self.routing.on_event(self._on_event)
        self.push_views()
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="views-feed")

    def stop(self) -> None:
        if self._off is not None:
            self._off()
            self._off = None
        if self._pending is not None:
            self._pending.cancel()
        if self._ticker is not None:
            self._ticker.cancel()

    def _on_event(self, ev: Any) -> None:
        self.sink.apply_event(ev.to_dict() if hasattr(ev, "to_dict") else dict(ev))
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self.coalesce_s, self.push_views)

    def push_views(self) -> None:
        self._pending = None
        v = views_of(self.routing, self.gateway_stats, self.clock())
        self.sink.apply_views_full(v)
        self.pushes += 1

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            with contextlib.suppress(Exception):
                self.push_views()
