"""The routing service as a node's calls use it in cluster mode: ``RoutingService``'s command
surface, forwarded over the channel to whichever node leads, and the fence steps of the node that
dials (``start_dialing`` before the INVITE, ``release`` when the seat's part ends)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

from routing.acd import (
    Acd,
    AcdConfig,
    IllegalTransition,
    SeatSpec,
)
from routing.authority import (
    connect_worker,
)
from routing.bus import EventBus
from routing.cluster.channel import ControlHandler, ControlRefused, Delivery
from routing.cluster.node import ClusterNode
from routing.events import Event, EventKind
from routing.service import Emitted, RoutingService
from routing.status import SeatStatus
from routing.store.writer import EventWriter

log = logging.getLogger("routing.cluster")


#: Reports after which this node's seat leg for the call is over: the seat is released at the
#: fence before the report leaves, so the leader can offer that seat again once it applied it.
SEAT_PART_ENDS = frozenset({"ring_no_answer", "seat_failed", "call_completed", "caller_abandoned", "seat_lost",
                            "call_lost"})


#: Reports after which the call is over for this node (nothing more to dial for it).
CALL_ENDS = frozenset({"caller_abandoned", "call_completed", "call_lost"})


class RemoteAcdView:
    """What a node that does not lead can read without asking the leader: the routing policy (the
    same settings on every node) and the queue position last delivered for its own callers."""

    def __init__(self, config: AcdConfig, positions: dict[str, int]) -> None:
        self.config = config
        self._positions = positions
        self._policies = Acd(config)

    def policy(self, skill: str) -> Any:
        return self._policies.policy(skill)

    def queue_position(self, call_id: str) -> int | None:
        return self._positions.get(call_id)

    def call_view(self, call_id: str) -> dict[str, Any] | None:
        return None

    def seat_view(self, seat_id: str, now: float) -> dict[str, Any]:
        from routing.errors import UnknownSeat
        raise UnknownSeat(f"{seat_id}: seats are read from the routing authority (this node does not lead)")

    def seats_view(self, now: float) -> list[dict[str, Any]]:
        return []

    def queues_view(self, now: float) -> list[dict[str, Any]]:
        return []

    callbacks = None


class LeadersAcd:
    """One object that reads the ACD of the moment: the leader's own when this node leads (the
    very object that decides), else the ``RemoteAcdView``.  Holders that keep a reference (the API
    desk) therefore follow elections."""

    def __init__(self, port: ClusterRoutingPort) -> None:
        self._port = port

    def __getattr__(self, name: str) -> Any:
        service = self._port.node.routing.service
        return getattr(service.acd if service is not None else self._port._view, name)


class ClusterRoutingPort:
    """The routing service as a node's calls use it in cluster mode (``journey.call.RoutingPort``
    plus ``on_event``): the same command surface as ``RoutingService``, forwarded to whoever leads.

    - Commands are queued in call order and sent by one task (so the leader applies them in the
      order the node made them); they return an empty ``Emitted`` at once: the decisions come back
      as deliveries.
    - An OFFER reaches the listeners (the call flow, which dials) only after ``start_dialing``
      said True; a fenced offer is logged and dropped, the caller keeps waiting for the next one.
    - The seat is released at the fence before a report that ends the seat's part of the call
      (``SEAT_PART_ENDS``) and when the leader's ring timer gave up on it (RINGNOANSWER).
    - ``record`` (CALLSTART, JOURNEY, CALLEND, ...) goes to this node's own event writer.
    - ``acd``: the leader's ACD when this node leads (the same object that decides), else a
      ``RemoteAcdView``.
    """

    def __init__(self, node: ClusterNode, config: AcdConfig, writer: EventWriter | None = None,
                 bus: EventBus | None = None) -> None:
        self.node = node
        self.client = node.client
        self.writer = writer
        #: publish-only: this node's own call events (``record``: CALLSTART, JOURNEY, CALLEND, ...);
        #: the ACD's decisions are published by the leader's bus
        self.bus = bus
        self.config = config
        self.fenced_offers = 0
        self._positions: dict[str, int] = {}
        self._holding: dict[str, str] = {}  # call id -> the seat this node dials or talks to for it
        self._ended: set[str] = set()  # calls this node said are over: an offer for one is never dialed
        self._listeners: list[Callable[[Event], Any]] = []
        self._sends: asyncio.Queue[tuple[str, str | None, dict[str, Any]]] = asyncio.Queue()
        self._sender: asyncio.Task[None] | None = None
        self._view = RemoteAcdView(config, self._positions)
        self._acd = LeadersAcd(self)
        self.client.on_delivery(self._delivered)

    @property
    def acd(self) -> Any:
        return self._acd

    @classmethod
    def from_settings(cls, settings: Any, engine: AsyncEngine, node_id: str,
                      queues: dict[str, Any] | None = None) -> ClusterRoutingPort:
        """A node's routing in cluster mode (``cluster``, ``cluster_lease_s``, ``db_url``): the same
        ACD policy as ``RoutingService.from_settings`` builds, decided by whichever node leads."""

        def make_acd() -> Acd:
            return RoutingService.from_settings(settings, None, node_id=node_id, queues=queues).acd

        mqtt_url = getattr(settings, "mqtt_url", None)

        def make_bus() -> EventBus | None:
            return EventBus(mqtt_url, f"{node_id}-leader") if mqtt_url else None

        url = str(settings.database_url)
        lease = float(getattr(settings, "cluster_lease_s", 3.0))
        grace = float(getattr(settings, "cluster_node_grace_s", 30.0))
        return cls(ClusterNode(url, engine, node_id, make_acd=make_acd, lease_s=lease, node_grace_s=grace,
                               make_bus=make_bus),
                   make_acd().config, writer=EventWriter(engine, node_id),
                   bus=EventBus(mqtt_url, node_id) if mqtt_url else None)

    async def start(self, seats: Iterable[SeatSpec] | None = None, live_calls: Iterable[str] | None = None,
                    talking: dict[str, str] | None = None, lost_reasons: dict[str, str] | None = None) -> None:
        """``seats``: the seats file's, merged by whichever node leads after each election.
        ``live_calls`` closes this node's calls that no worker carries, as ``lost_node_failure`` or
        with the reason ``lost_reasons`` knows for one (its media worker died while the control
        process was away: ``lost_worker_failure``).  ``talking`` is not needed here: a call still
        bridged to its seat is ``dialing`` at the fence, which every leader adopts as talking."""
        if seats is not None:
            self.node.routing.seats = list(seats)
        if self.writer is not None:
            await self.writer.start()
        self._sender = asyncio.create_task(self._send_in_order(), name="routing-commands-out")
        await self.node.start(campaign=False)
        if self.bus is not None:
            await self.bus.start()
        await self._reconcile(None if live_calls is None else set(live_calls), lost_reasons or {})

    async def open_deliveries(self) -> None:
        """Let the leader's decisions reach the listeners: call it once every live call has its
        listener (after a restart's adoption), so no offer arrives for a call nobody holds yet.
        Only then does this node campaign for the routing authority."""
        await self.client.open()
        self.node.campaign()

    async def _reconcile(self, live: set[str] | None, reasons: dict[str, str]) -> None:
        """After a (re)start: the seats this node was dialing or talking to are its again; with
        ``live`` (the calls whose media is alive), every call of this node that is not is closed
        as lost with a callback, and its seat released at the fence."""
        conn = await connect_worker(self.client.url, self.client.lease_s)
        try:
            self._holding = {r["call_id"]: r["seat_id"] for r in await conn.fetch(
                "SELECT seat_id, call_id FROM seat_offers WHERE state = 'dialing' AND node_id = $1", self.node.node_id)}
            mine = {r["call_id"] for r in await conn.fetch(
                "SELECT DISTINCT call_id FROM routing_commands WHERE kind = 'enqueue' AND node_id = $1",
                self.node.node_id)} if live is not None else set()
        finally:
            conn.terminate()
        if live is None:
            return
        from routing.store.reconcile import LOST_NODE_FAILURE, in_progress

        progress = await in_progress(self.node.routing.engine, self.node.node_id)
        now = time.time()
        # only this node's calls (its call records, what it queued): another node's callers are
        # on that node's SIP legs, alive or not, and not ours to close
        ours = {c for c in progress.lost(live) if c in progress.open_calls or c in mine}
        for call_id in sorted(ours | (set(self._holding) - live)):
            row = progress.open_calls.get(call_id)
            reason = reasons.get(call_id, LOST_NODE_FAILURE)
            self.call_lost(call_id, reason, caller=row.caller if row else None,
                           info={"ivr": row.ivr} if row is not None and row.ivr else {},
                           enqueued_at=(row.queued_at or row.started_at) if row is not None else None)
            self.record([Event(EventKind.CALLEND, now, call_id=call_id, skill=row.skill if row else None,
                               data={"reason": reason, "ended_by": "node_failure" if reason == LOST_NODE_FAILURE
                                     else "worker_failure"})])
            log.warning("call_lost", extra={"call_id": call_id, "reason": reason})

    async def stop(self) -> None:
        try:
            await self.drain(5.0)
        except TimeoutError:
            log.error("routing commands not sent at stop", extra={"count": self._sends.qsize()})
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        await self.node.stop()
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.stop()
        if self.writer is not None:
            await self.writer.stop()

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every command made so far is in the command table."""
        await asyncio.wait_for(self._sends.join(), timeout)

    def on_event(self, listener: Callable[[Event], Any]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # -- commands (same names and arguments as RoutingService) ----------------------------------------
    def _command(self, kind: str, call_id: str | None, **args: Any) -> Any:
        if call_id and kind in CALL_ENDS:
            self._ended.add(call_id)
        elif call_id and kind == "enqueue":
            self._ended.discard(call_id)
        self._sends.put_nowait((kind, call_id, args))
        return Emitted([])

    def enqueue(self, call_id: str, skill: str, priority: int, caller: str | None = None,
                info: dict[str, Any] | None = None, place_at: float | None = None,
                only_seat: str | None = None) -> Any:
        return self._command("enqueue", call_id, skill=skill, priority=priority, caller=caller, info=info or {},
                             place_at=place_at, only_seat=only_seat)

    def seat_answered(self, call_id: str, seat_id: str | None = None) -> Any:
        return self._command("seat_answered", call_id, seat_id=seat_id)

    def ring_no_answer(self, call_id: str, seat_id: str | None = None) -> Any:
        return self._command("ring_no_answer", call_id, seat_id=seat_id)

    def seat_failed(self, call_id: str, reason: str, seat_id: str | None = None, detail: str | None = None) -> Any:
        return self._command("seat_failed", call_id, reason=reason, seat_id=seat_id, detail=detail)

    def caller_abandoned(self, call_id: str) -> Any:
        return self._command("caller_abandoned", call_id)

    def call_completed(self, call_id: str, ended_by: str) -> Any:
        return self._command("call_completed", call_id, ended_by=ended_by)

    def set_status(self, seat_id: str, status: Any, reason: str | None = None) -> Any:
        return self._command("set_status", None, seat_id=seat_id, status=SeatStatus(status).value, reason=reason)

    def end_wrap_up(self, seat_id: str) -> Any:
        return self._command("end_wrap_up", None, seat_id=seat_id)

    # -- what an operator asks through the API: decided by the leader's own ACD ------------------------
    def _on_the_leader(self, name: str, *args: Any) -> Any:
        """Seat changes and callbacks are asked through the API and answered at once (the seat as
        it now is, the callback taken, or the refusal): only the ACD that decides can do that, so
        they run on it when this node leads.  The cluster's API door sends every request to the
        leader's API; a node asked directly while it does not lead refuses, saying where to go."""
        service = self.node.routing.service
        if service is None:
            raise IllegalTransition(f"{name}: this node does not route for the cluster now; ask the cluster's "
                                    "API door, which sends requests to the node that leads")
        return getattr(service, name)(*args)

    def add_seat(self, spec: SeatSpec) -> Any:
        return self._on_the_leader("add_seat", spec)

    def update_seat(self, spec: SeatSpec) -> Any:
        return self._on_the_leader("update_seat", spec)

    def remove_seat(self, seat_id: str) -> Any:
        return self._on_the_leader("remove_seat", seat_id)

    def take_callback(self, seat_id: str) -> Any:
        return self._on_the_leader("take_callback", seat_id)

    def complete_callback(self, callback_id: str) -> Any:
        return self._on_the_leader("complete_callback", callback_id)

    # -- acts on live calls asked through the API: carried out by the node of the call -------------
    def carries_elsewhere(self, call_id: str) -> str | None:
        """The other node that carries ``call_id`` (not one of this node's calls), as the leader
        knows it (None: an unknown call).  Only the leader can tell: a node that does not lead
        refuses (``ControlRefused`` 409), saying where to ask."""
        if self.node.routing.service is None:
            raise ControlRefused(409, f"call {call_id} is not on this node, and only the node that routes for the "
                                      "cluster knows where it is: ask the cluster's API door")
        node = self.node.routing.node_of(call_id)
        return node if node is not None and node != self.node.node_id else None

    async def control_on(self, node: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """``op`` carried out by ``node`` (``ClusterRouting.control``; ``ControlRefused``)."""
        return await self.node.routing.control(node, op, args)

    def serve_control(self, handler: ControlHandler) -> None:
        """Who carries out, on this node, the acts the leader's API asks for this node's calls."""
        self.client.on_control(handler)

    def seat_lost(self, call_id: str, reason: str) -> Any:
        return self._command("seat_lost", call_id, reason=reason)

    def call_lost(self, call_id: str, reason: str, caller: str | None = None,
                  info: dict[str, Any] | None = None, enqueued_at: float | None = None) -> Any:
        return self._command("call_lost", call_id, reason=reason, caller=caller, info=info, enqueued_at=enqueued_at)

    def consult_reserve(self, call_id: str, seat_id: str | None = None, skill: str | None = None,
                        info: dict[str, Any] | None = None) -> Any:
        raise IllegalTransition("warm transfers are not available in cluster mode yet")

    def consult_release(self, call_id: str, reason: str) -> Any:
        return Emitted([])

    def consult_complete(self, call_id: str) -> Any:
        return Emitted([])

    def record(self, events: list[Event]) -> Any:
        if self.writer is not None:
            self.writer.append(list(events))
        if self.bus is not None:
            for ev in events:
                self.bus.publish(ev)
        return Emitted(events)

    async def _send_in_order(self) -> None:
        while True:
            kind, call_id, args = await self._sends.get()
            try:
                seat = self._holding.pop(call_id, None) if kind in SEAT_PART_ENDS and call_id else None
                if seat is not None:
                    await self.client.release(seat, call_id or "")
                while True:  # the database away: keep trying, in order (later commands wait)
                    try:
                        await self.client.send(kind, call_id, **args)
                        break
                    except (RuntimeError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                        log.error("routing command not sent yet, retrying", extra={
                            "call_id": call_id, "kind": kind, "error": f"{type(e).__name__}: {e}"})
                        await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("routing command refused", extra={"call_id": call_id, "kind": kind})
            finally:
                self._sends.task_done()

    # -- deliveries ---------------------------------------------------------------------------------
    async def _delivered(self, d: Delivery) -> None:
        ev = d.event
        call_id = ev.call_id or ""
        if ev.kind is EventKind.OFFER:
            if call_id in self._ended:  # decided before the leader heard that the call is over
                log.info("offer for a call that is over, not dialed", extra={"call_id": call_id, "seat_id": ev.seat_id})
                return
            attempt = ev.data.get("attempt")
            if not await self.client.start_dialing(ev.seat_id or "", call_id, d.epoch,
                                                   int(attempt) if attempt is not None else None):
                self.fenced_offers += 1
                log.warning("offer fenced at the seat, not dialed", extra={
                    "call_id": call_id, "seat_id": ev.seat_id, "epoch": d.epoch})
                return
            self._holding[call_id] = ev.seat_id or ""
            self._positions.pop(call_id, None)
        elif ev.kind in (EventKind.ENTERQUEUE, EventKind.ESCALATE) and ev.data.get("position"):
            self._positions[call_id] = int(ev.data["position"])
        for listener in list(self._listeners):
            try:
                result = listener(ev)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("routing event listener failed", extra={"kind": ev.kind.value, "call_id": call_id})
        if ev.kind is EventKind.RINGNOANSWER and self._holding.get(call_id) == ev.seat_id:
            # the leader's ring timer gave up on the seat; the listener has hung up the leg
            await self.client.release(self._holding.pop(call_id), call_id)
