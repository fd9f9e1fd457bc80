"""The live read model the pages and the REST reads are served from: pushed views, fanned out.

The control process pushes two things (``api.feed``): every ACD event as it happens, and the
seats and queues views (at change, coalesced, and once a second for the waiting times).  This
model keeps the latest views, answers ``seats_view``/``queues_view`` like the ACD does, and fans
each change out to the WebSocket clients as deltas:

- ``SNAPSHOT`` ``{seats, queues, seq}``: what a client starts from (and restarts from after a
  ``RESYNC``);
- ``SEATS`` ``{rows, removed}`` and ``QUEUES`` ``{rows}``: the rows that changed since the last push;
- the ACD events themselves (``OFFER``, ``CONNECT``, ...) unchanged, as before;
- for seats only, ``TARGETS`` ``{rows}``: the seats a transfer may name now (``available``: id,
  name, skills; nothing else of the other seats), whole, whenever that list changes; a seat's
  ``SNAPSHOT`` carries it as ``targets``.  The seat console's transfer control lists them.

Every client has a bounded queue.  A client that cannot keep up (its queue is full) loses what
was queued and gets ``RESYNC`` followed by a fresh ``SNAPSHOT``; one that falls behind again and
again, or whose socket does not take a message within ``send_timeout_s``, is disconnected.  The
fan-out itself never awaits a client, so a slow browser never slows another client, the feed,
or (in another process altogether) a call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

#: Messages a client may have waiting before it is resynced.
CLIENT_QUEUE = 256
#: Resyncs within ``RESYNC_WINDOW_S`` after which a client is disconnected instead.
MAX_RESYNCS = 3
RESYNC_WINDOW_S = 60.0


#: Seat fields that change with the clock alone; a page computes them from ``since``.
CLOCK_FIELDS = ("idle_s",)


def _steady(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: v for k, v in row.items() if k not in CLOCK_FIELDS}


def transfer_targets(seats: Any) -> list[dict[str, Any]]:
    """The seats a transfer may name now (``to_seat`` takes only an available seat), by id."""
    return sorted(({"id": str(s["id"]), "name": s.get("name") or "", "skills": s.get("skills") or {}}
                   for s in seats if str(s.get("status")) == "available"), key=lambda t: t["id"])


def _targets_delta(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """What changed in the transfer targets: rows added or changed, ids gone.

    Sent as a delta because every console follows it: the full list (every available seat) to
    every console on each seat change was the bulk of the fan-out (300 consoles x ~280 rows, several
    times a second) and delayed every live view by hundreds of milliseconds (``bench api``)."""
    before = {t["id"]: t for t in old}
    after = {t["id"]: t for t in new}
    added = [t for tid, t in after.items() if before.get(tid) != t]
    return added, sorted(tid for tid in before if tid not in after)


def encode(msg: dict[str, Any]) -> str:
    return json.dumps(msg, ensure_ascii=False, separators=(",", ":"), default=str)


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who is listening: a supervisor sees everything, a seat only itself and its own events."""

    supervisor: bool
    seat_id: str | None = None

    def sees_event(self, ev: dict[str, Any]) -> bool:
        return self.supervisor or (self.seat_id is not None and ev.get("seat_id") == self.seat_id)

    def sees_seat(self, seat_id: str) -> bool:
        return self.supervisor or seat_id == self.seat_id


@dataclass(eq=False)
class LiveClient:
    """One WebSocket's outbox: bounded, never awaited by the fan-out."""

    viewer: Viewer
    limit: int = CLIENT_QUEUE
    outbox: deque[str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    resync: bool = False
    resyncs: deque[float] = field(default_factory=deque)
    dropped: int = 0
    closed: bool = False

    def offer(self, text: str) -> None:
        if self.closed or self.resync:
            return
        if len(self.outbox) >= self.limit:
            self.dropped += len(self.outbox)
            self.outbox.clear()
            self.resync = True
        else:
            self.outbox.append(text)
        self.wake.set()

    def too_slow(self, now: float) -> bool:
        """Count a resync; True when this client has needed too many lately."""
        self.resyncs.append(now)
        while self.resyncs and self.resyncs[0] < now - RESYNC_WINDOW_S:
            self.resyncs.popleft()
        return len(self.resyncs) > MAX_RESYNCS


class PushedCallback(dict[str, Any]):
    def to_dict(self) -> dict[str, Any]:
        return dict(self)


class PushedCallbacks:
    """The callback list as pushed, read like ``routing.callbacks`` (``active()``)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = [PushedCallback(r) for r in rows]

    def active(self) -> list[PushedCallback]:
        return list(self._rows)


class LiveViews:
    """Latest seats and queues views plus the clients they fan out to (one event loop)."""

    def __init__(self, call_view: Callable[[str], Awaitable[dict[str, Any] | None]] | None = None) -> None:
        self.seats: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.gateway: dict[str, float] = {}
        self.at = 0.0
        self.seq = 0
        self.ready = asyncio.Event()
        self.clients: set[LiveClient] = set()
        self.events_in = 0
        self.resyncs = 0
        self._call_view = call_view
        self.callbacks = PushedCallbacks([])
        self.targets: list[dict[str, Any]] = []

    # ---- the feed's side -------------------------------------------------------------------
    def apply_views_full(self, views: dict[str, Any]) -> None:
        """One push of ``api.feed.views_of``."""
        self.callbacks = PushedCallbacks(views.get("callbacks") or [])
        self.apply_views(views["seats"], views["queues"], views.get("gateway"), views.get("at"))

    def apply_views(self, seats: list[dict[str, Any]], queues: list[dict[str, Any]],
                    gateway: dict[str, float] | None = None, at: float | None = None) -> None:
        """A fresh push of the views: keep it, and send each client the rows that changed."""
        new_seats = {str(s["id"]): s for s in seats}
        new_queues = {str(q.get("skill")): q for q in queues}
        changed = [s for sid, s in new_seats.items() if _steady(self.seats.get(sid)) != _steady(s)]
        removed = [sid for sid in self.seats if sid not in new_seats]
        qchanged = [q for sk, q in new_queues.items() if self.queues.get(sk) != q]
        self.seats, self.queues = new_seats, new_queues
        if gateway is not None:
            self.gateway = gateway
        self.at = at if at is not None else time.time()
        self.seq += 1
        self.ready.set()
        targets = transfer_targets(new_seats.values()) if changed or removed else self.targets
        added_targets, gone_targets = _targets_delta(self.targets, targets)
        self.targets = targets
        if not self.clients or not (changed or removed or qchanged):
            return
        sup_seats = encode({"kind": "SEATS", "rows": changed, "removed": removed, "seq": self.seq, "at": self.at}) \
            if changed or removed else None
        sup_queues = encode({"kind": "QUEUES", "rows": qchanged, "seq": self.seq, "at": self.at}) if qchanged else None
        for c in list(self.clients):
            if c.viewer.supervisor:
                if sup_seats:
                    c.offer(sup_seats)
                if sup_queues:
                    c.offer(sup_queues)
                continue
            mine = [s for s in changed if c.viewer.sees_seat(str(s["id"]))]
            gone = [sid for sid in removed if c.viewer.sees_seat(sid)]
            if mine or gone:
                c.offer(encode({"kind": "SEATS", "seat_id": c.viewer.seat_id, "rows": mine, "removed": gone,
                                "seq": self.seq, "at": self.at}))
            if added_targets or gone_targets:  # addressed to this seat, like its SEATS
                c.offer(encode({"kind": "TARGETS", "seat_id": c.viewer.seat_id, "added": added_targets,
                                "removed": gone_targets, "seq": self.seq, "at": self.at}))

    def apply_event(self, ev: dict[str, Any]) -> None:
        """An ACD event: encoded once, offered to every client allowed to see it."""
        self.events_in += 1
        if not self.clients:
            return
        text = encode(ev)
        for c in list(self.clients):
            if c.viewer.sees_event(ev):
                c.offer(text)

    # ---- the WebSocket's side --------------------------------------------------------------
    def join(self, viewer: Viewer, limit: int = CLIENT_QUEUE) -> LiveClient:
        client = LiveClient(viewer, limit=limit)
        self.clients.add(client)
        return client

    def leave(self, client: LiveClient) -> None:
        client.closed = True
        self.clients.discard(client)

    def snapshot_for(self, viewer: Viewer) -> dict[str, Any]:
        seats = [s for sid, s in self.seats.items() if viewer.sees_seat(sid)]
        queues = list(self.queues.values()) if viewer.supervisor else []
        snap = {"kind": "SNAPSHOT", "seats": seats, "queues": queues, "seq": self.seq, "at": self.at}
        if not viewer.supervisor:
            snap["seat_id"] = viewer.seat_id
            snap["targets"] = self.targets
        return snap

    # ---- the ACD's read interface, for the REST routes ---------------------------------------
    def seats_view(self, now: float | None = None) -> list[dict[str, Any]]:
        return [dict(s) for s in self.seats.values()]

    def queues_view(self, now: float | None = None) -> list[dict[str, Any]]:
        return [dict(q) for q in self.queues.values()]

    async def call_view(self, call_id: str) -> dict[str, Any] | None:
        """One call's offer view: asked of the control process (rare: a console reconnecting)."""
        return await self._call_view(call_id) if self._call_view is not None else None

    def stats(self) -> dict[str, Any]:
        return {"clients": len(self.clients), "events_in": self.events_in, "resyncs": self.resyncs,
                "seq": self.seq}
