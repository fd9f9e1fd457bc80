"""Several nodes, one routing truth (issue 14): the ACD behind the elected authority, and the
nodes as its clients.

Three parts, all on the one PostgreSQL the nodes already share (no SIP, no HTTP here):

- **The channel** (``routing_commands`` / ``routing_deliveries``).  A node writes each command
  (enqueue, seat answered, ring-no-answer, seat failed, abandoned, completed, ...) as a row and
  ``NOTIFY``s the leader; the leader reads rows by sequence number after its cursor.  The
  notification is only a wake-up: a leader that missed it (reconnect, election) still reads every
  row, in order, on its next poll.  A command carries a ``command_id`` so a node that is unsure
  whether its insert committed simply sends it again.  The leader answers a node the same way
  (``routing_deliveries``, one node's rows read by that node after its own cursor).  Both tables
  are in the database that fences the offers, so an OFFER delivery is written in the very
  transaction of its ``claim_offer``: there is no offer a node can see that the fence did not
  accept.  Why not MQTT QoS 1: its redelivery is per session and not ordered with the database
  writes, and a broker has no notion of "the current leader", so a deposed leader's publish
  would reach the nodes all the same.
- **The leader** (:class:`ClusterRouting`).  On election it restores the ACD from the event log's
  projections (every node's callers, in their places), adopts what the fence says is being dialed,
  replays the commands after the cursor, then routes for the whole cluster: every ``OFFER`` of the
  ACD goes through ``claim_offer`` (epoch check, seat available -> offered, event) before any node
  hears of it.  On demotion it stops at once: command reading and the ACD's timers are cancelled and
  its unwritten events dropped.
- **The client** (:class:`RoutingClient`).  Each node (the leader's own node too: one path) sends
  its commands and receives the deliveries for its calls.  Before it dials a seat it calls
  ``start_dialing``; only True lets the INVITE go.  A deposed leader's late offer fails there.

Ordering: inserts into both tables take a transaction-level advisory lock, so sequence numbers are
committed in the order they are allocated and a reader that has seen ``seq = n`` will never later
find a committed row below ``n``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from routing.acd import (
    Acd,
    AcdConfig,
    IllegalTransition,
    RestoredConnected,
    RestoredSeat,
    RoutingError,
    SeatSpec,
)
from routing.authority import (
    RoutingAuthority,
    add_seat,
    claim_offer,
    connect_worker,
    live_nodes,
    plain_dsn,
    withdraw_offer,
)
from routing.authority import release as release_seat
from routing.authority import start_dialing as start_dialing_seat
from routing.events import Event, EventKind
from routing.service import Emitted, RoutingService
from routing.status import SeatStatus
from routing.store.models import calls
from routing.store.restore import load_callbacks, load_recent_events, load_state
from routing.store.writer import EventWriter, Fenced

log = logging.getLogger("routing.cluster")

CHANNEL_COMMANDS = "routing_commands"
CHANNEL_DELIVERIES = "routing_deliveries"
#: Transaction-level advisory locks that make sequence allocation and commit one order.
COMMANDS_LOCK_KEY = 0x68313233
DELIVERIES_LOCK_KEY = 0x68313234
#: How often a reader looks for rows even without a notification (a missed NOTIFY costs this much).
POLL_S = 1.0

#: The commands a node may send, each with the RoutingService method that applies it.
COMMANDS = frozenset({
    "enqueue", "seat_answered", "ring_no_answer", "seat_failed", "caller_abandoned", "call_completed",
    "seat_lost", "call_lost", "set_status", "end_wrap_up",
})
#: The ACD's decisions a node hears about its own calls (``journey.call.CallJourney.routing_event``).
DELIVERED = frozenset({EventKind.OFFER, EventKind.RINGNOANSWER, EventKind.SEATFAILED, EventKind.ESCALATE,
                       EventKind.CONNECT, EventKind.ABANDON, EventKind.CALLBACK, EventKind.ENTERQUEUE})


@dataclass(frozen=True, slots=True)
class Delivery:
    """One decision of the routing authority for one of this node's calls."""

    seq: int
    epoch: int
    event: Event


DeliveryListener = Callable[[Delivery], Awaitable[None] | None]


class RoutingClient:
    """A node's side of the channel: commands out, deliveries for its calls in, and the fence
    steps of the dialing node (``start_dialing`` before the INVITE, ``release`` at the end)."""

    def __init__(self, url: str, node_id: str, lease_s: float = 3.0) -> None:
        self.url = plain_dsn(url)
        self.node_id = node_id
        self.lease_s = lease_s
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._listeners: list[DeliveryListener] = []
        self._cursor = 0
        self._tail: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.delivered = 0

    async def start(self) -> None:
        """Connect.  Deliveries are read only after :meth:`open` (once every call has a listener)."""
        await self._connection()

    async def open(self) -> None:
        """Read this node's deliveries from where its previous process stopped (an offer made while
        the control process restarted is still dialed); a node's very first start begins at now."""
        conn = await self._connection()
        async with self._lock:
            stored = await conn.fetchval("SELECT seq FROM routing_node_cursor WHERE node_id = $1", self.node_id)
            self._cursor = int(stored) if stored is not None else int(await conn.fetchval(
                "SELECT coalesce(max(seq), 0) FROM routing_deliveries WHERE node_id = $1", self.node_id))
        if self._tail is None:
            self._tail = asyncio.create_task(self._read_deliveries(), name=f"deliveries-{self.node_id}")

    async def stop(self) -> None:
        if self._tail is not None:
            self._tail.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tail
            self._tail = None
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    def on_delivery(self, listener: DeliveryListener) -> None:
        self._listeners.append(listener)

    # -- commands ---------------------------------------------------------------------------------
    async def send(self, kind: str, call_id: str | None = None, **args: Any) -> int:
        """Append one command for the leader; returns its sequence number.  Retried with the same
        ``command_id`` after a connection failure, so it is applied at most once."""
        if kind not in COMMANDS:
            raise ValueError(f"unknown routing command {kind!r}")
        command_id = f"{self.node_id}:{uuid.uuid4().hex}"
        if call_id is not None:
            args["call_id"] = call_id
        payload = json.dumps(args, default=str)
        for attempt in range(1, 6):
            try:
                async with self._lock:
                    conn = await self._connection()
                    async with conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", COMMANDS_LOCK_KEY)
                        seq = await conn.fetchval(
                            "INSERT INTO routing_commands (command_id, node_id, kind, call_id, args, at) "
                            "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (command_id) DO NOTHING RETURNING seq",
                            command_id, self.node_id, kind, call_id, payload, time.time())
                        if seq is None:  # an earlier attempt did commit
                            seq = await conn.fetchval("SELECT seq FROM routing_commands WHERE command_id = $1",
                                                      command_id)
                        await conn.execute(f"NOTIFY {CHANNEL_COMMANDS}")
                return int(seq)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError) as e:
                log.warning("routing command not sent, retrying", extra={
                    "call_id": call_id, "kind": kind, "attempt": attempt, "error": f"{type(e).__name__}: {e}"})
                self._drop_connection()
                await asyncio.sleep(min(1.0, 0.1 * attempt))
        raise RuntimeError(f"routing command {kind} for {call_id} could not be sent")

    async def enqueue(self, call_id: str, skill: str, priority: int, caller: str | None = None,
                      info: dict[str, Any] | None = None, place_at: float | None = None,
                      only_seat: str | None = None) -> int:
        return await self.send("enqueue", call_id, skill=skill, priority=priority, caller=caller,
                               info=info or {}, place_at=place_at, only_seat=only_seat)

    async def seat_answered(self, call_id: str, seat_id: str | None = None) -> int:
        return await self.send("seat_answered", call_id, seat_id=seat_id)

    async def ring_no_answer(self, call_id: str, seat_id: str | None = None) -> int:
        return await self.send("ring_no_answer", call_id, seat_id=seat_id)

    async def seat_failed(self, call_id: str, reason: str, seat_id: str | None = None,
                          detail: str | None = None) -> int:
        return await self.send("seat_failed", call_id, reason=reason, seat_id=seat_id, detail=detail)

    async def caller_abandoned(self, call_id: str) -> int:
        return await self.send("caller_abandoned", call_id)

    async def call_completed(self, call_id: str, ended_by: str) -> int:
        return await self.send("call_completed", call_id, ended_by=ended_by)

    # -- the fence, from the dialing node -----------------------------------------------------------
    async def start_dialing(self, seat_id: str, call_id: str, epoch: int | None = None,
                            attempt: int | None = None) -> bool:
        """True: the offer (of ``epoch``, ``attempt``) is still the one at the fence, in the
        current epoch, and is now ours to dial.  Dial only then."""
        async with self._lock:
            return await start_dialing_seat(await self._connection(), seat_id, call_id, self.node_id, epoch, attempt)

    async def release(self, seat_id: str, call_id: str) -> bool:
        """The seat's part of ``call_id`` is over (or the dial failed): the seat may be offered again.
        Retried for about half a minute (a database restart), since a seat not released stays out
        of every offer."""
        for attempt in range(1, 31):
            try:
                async with self._lock:
                    return await release_seat(await self._connection(), seat_id, call_id)
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, TimeoutError):
                self._drop_connection()
                await asyncio.sleep(min(1.0, 0.1 * attempt))
        log.error("seat not released at the fence", extra={"call_id": call_id, "seat_id": seat_id})
        return False

    # -- deliveries ---------------------------------------------------------------------------------
    async def _read_deliveries(self) -> None:
        listen: asyncpg.Connection | None = None
        while True:
            try:
                if listen is None or listen.is_closed():
                    listen = await connect_worker(self.url, self.lease_s)
                    await listen.add_listener(CHANNEL_DELIVERIES, self._notified)
                rows = await listen.fetch(
                    "SELECT seq, epoch, kind, call_id, seat_id, data, at FROM routing_deliveries "
                    "WHERE node_id = $1 AND seq > $2 ORDER BY seq", self.node_id, self._cursor)
                for r in rows:
                    self._cursor = int(r["seq"])
                    data = json.loads(r["data"])
                    data["epoch"] = int(r["epoch"])
                    await self._dispatch(Delivery(int(r["seq"]), int(r["epoch"]), Event(
                        EventKind(r["kind"]), float(r["at"]), r["call_id"], r["seat_id"], data.pop("skill", None),
                        data)))
                    await listen.execute(
                        "INSERT INTO routing_node_cursor (node_id, seq, updated_at) VALUES ($1, $2, $3) "
                        "ON CONFLICT (node_id) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
                        self.node_id, self._cursor, time.time())
                if not rows:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_S)
                    self._wake.clear()
            except asyncio.CancelledError:
                if listen is not None:
                    listen.terminate()
                raise
            except Exception as e:
                log.warning("routing deliveries: reading failed, reconnecting", extra={
                    "node_id": self.node_id, "error": f"{type(e).__name__}: {e}"})
                if listen is not None:
                    listen.terminate()
                listen = None
                await asyncio.sleep(0.2)

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == self.node_id:
            self._wake.set()

    async def _dispatch(self, d: Delivery) -> None:
        self.delivered += 1
        for listener in list(self._listeners):
            try:
                result = listener(d)
                if asyncio.iscoroutine(result):
                    await result
            except Exception:
                log.exception("routing delivery listener failed", extra={"call_id": d.event.call_id})

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect_worker(self.url, self.lease_s)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None


class ClusterRouting:
    """The ACD of the whole cluster, alive only while this node holds the routing authority.

    ``make_acd`` builds a fresh ACD (the node's policy); ``seats`` are the seats file's, merged
    after every restore like a single node does.  ``restored_in_s`` is how long the last election
    took from ``on_elected`` to routing (the restore from the log plus the replay).
    """

    def __init__(self, url: str, engine: AsyncEngine, node_id: str, make_acd: Callable[[], Acd],
                 seats: Iterable[SeatSpec] = (), lease_s: float = 3.0,
                 on_routing: Callable[[RoutingService | None], None] | None = None,
                 node_grace_s: float = 30.0) -> None:
        self.url = plain_dsn(url)
        #: A node whose campaign session has been gone this long is dead: its calls are closed as
        #: lost and its seats freed.  Longer than a control-process restart, which keeps its calls.
        self.node_grace_s = node_grace_s
        self.engine = engine
        self.node_id = node_id
        self.make_acd = make_acd
        self.seats = list(seats)
        self.lease_s = lease_s
        self.on_routing = on_routing
        self.epoch: int | None = None
        self.service: RoutingService | None = None
        self.restored_in_s: float | None = None
        self.applied_seq = 0
        self.fenced_offers = 0  # offers the fence refused because the seat was not free there
        self._owners: dict[str, str] = {}
        self._conn: asyncpg.Connection | None = None  # commands, cursor, restore
        self._out: asyncpg.Connection | None = None   # offers through the fence, deliveries
        self._outbox: asyncio.Queue[Event] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self._log_engine: AsyncEngine | None = None  # the event writer's: fenced, and a frozen
        # transaction of it is ended by the server after the lease (it holds the epoch row FOR SHARE)
        #: Called when routing cannot go on (a lost connection mid-offer): give up the authority.
        self.resign: Callable[[], None] | None = None

    # -- the authority's callbacks ------------------------------------------------------------------
    async def elected(self, epoch: int) -> None:
        t0, cut = time.monotonic(), time.time()  # what the log holds from before this election
        self.epoch = epoch
        self._conn = await connect_worker(self.url, self.lease_s)
        self._out = await connect_worker(self.url, self.lease_s)
        for spec in self.seats:
            await add_seat(self._conn, spec.id)
        self._owners = {r["call_id"]: r["node_id"] for r in await self._conn.fetch(
            "SELECT DISTINCT ON (call_id) call_id, node_id FROM routing_commands "
            "WHERE kind = 'enqueue' AND call_id IS NOT NULL ORDER BY call_id, seq DESC")}
        self._log_engine = create_async_engine(
            self.url.replace("postgresql://", "postgresql+asyncpg://", 1),
            connect_args={"server_settings": {"idle_in_transaction_session_timeout": str(int(self.lease_s * 1000)),
                                              "tcp_keepalives_idle": "1", "tcp_keepalives_interval": "1",
                                              "tcp_keepalives_count": "3"}})

        async def fence(conn: AsyncConnection) -> None:
            current = (await conn.execute(text("SELECT epoch FROM routing_epoch WHERE id = 1 FOR SHARE"))).scalar()
            if current != epoch:
                raise Fenced(f"epoch {epoch} is no longer current ({current})")

        # node_id None: the calls this ACD logs belong to the nodes that carry them (their own
        # CALLSTART says which), never to the leader that happens to route them
        writer = EventWriter(self._log_engine, None, fence=fence)  # type: ignore[arg-type]
        service = RoutingService(self.make_acd(), writer=writer, node_id=self.node_id)
        service.on_event(self._decided)
        self.service = service
        self._outbox = asyncio.Queue()
        self._tasks = []
        await service.start(seats=())  # writer and timers; the restore is ours (all nodes' callers)
        await self._restore(service)
        for spec in self.seats:
            service._merge_file_seat(spec, service.clock())
        cursor = int(await self._conn.fetchval("SELECT applied_seq FROM routing_command_cursor WHERE id = 1"))
        self.applied_seq = cursor
        replayed = await self._apply_new_commands(epoch)
        # Only now do decisions leave: an offer made by the restore that a replayed command
        # overtook (the seat answered or the caller hung up while no one led) is no longer
        # current in the ACD and is dropped by ``_deliver`` instead of ringing a seat.
        self._tasks.append(self._task(self._deliver(epoch), f"offers-{epoch}", epoch))
        self.restored_in_s = time.monotonic() - t0
        # the metrics of the recent log (up to 48 h of events) are not needed to route: they are
        # refolded after routing resumed, from the events decided before this election
        self._tasks.append(self._task(self._refold_metrics(service, cut), f"metrics-{epoch}", epoch,
                                      fatal=False))
        log.info("routing for the cluster", extra={
            "node_id": self.node_id, "epoch": epoch, "restore_s": round(self.restored_in_s, 4),
            "replayed": replayed, "waiting": len(service.acd.waiting_entries())})
        self._tasks.append(self._task(self._read_commands(epoch), f"commands-{epoch}", epoch))
        self._tasks.append(self._task(self._watch_nodes(epoch), f"nodes-{epoch}", epoch, fatal=False))
        if self.on_routing is not None:
            self.on_routing(service)

    def _task(self, coro: Awaitable[None], name: str, epoch: int, fatal: bool = True) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)

        def done(t: asyncio.Task[None]) -> None:
            if t.cancelled() or self.epoch != epoch:
                return
            if not fatal:
                if t.exception() is not None:
                    log.error("cluster routing task failed", extra={"task": name}, exc_info=t.exception())
                return
            log.error("cluster routing stopped; giving the authority up", extra={"epoch": epoch, "task": name},
                      exc_info=t.exception())
            if self.resign is not None:
                self.resign()

        task.add_done_callback(done)
        return task

    async def demoted(self, epoch: int) -> None:
        """Stop at once: no more commands read, no timers, no offers, no unwritten events."""
        self.epoch = None
        service, self.service = self.service, None
        for t in self._tasks:
            t.cancel()
        self._tasks = []
        for conn in (self._conn, self._out):
            if conn is not None:
                conn.terminate()
        self._conn = self._out = None
        if service is not None:
            if service.writer is not None:
                dropped = service.writer.drop_pending()
                if dropped:
                    log.warning("deposed: unwritten routing events dropped (the next leader replays "
                                "their commands)", extra={"epoch": epoch, "count": dropped})
            with contextlib.suppress(Exception):
                await asyncio.wait_for(service.stop(), 1.0)
        if self._log_engine is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._log_engine.dispose(), 1.0)
            self._log_engine = None
        if self.on_routing is not None:
            self.on_routing(None)

    # -- restore ----------------------------------------------------------------------------------
    async def _restore(self, service: RoutingService) -> None:
        """Every node's waiting callers in their places; seats the fence shows being dialed stay
        bound to their call (ringing or talking, the dialing node reports the rest); a seat that
        was only offered (the election revoked that offer) is free again."""
        assert self._conn is not None
        now = service.clock()
        seats, waiting = await load_state(self.engine)
        for rs in seats:
            await add_seat(self._conn, rs.spec.id)
        fence = {r["seat_id"]: r["call_id"] for r in await self._conn.fetch(
            "SELECT seat_id, call_id FROM seat_offers WHERE state = 'dialing'")}
        entries = {e.call_id: e for e in waiting}
        records: dict[str, Any] = {}
        if fence:
            async with self.engine.connect() as c:
                records = {r["id"]: r for r in (await c.execute(
                    select(calls).where(calls.c.id.in_(list(fence.values()))))).mappings().all()}
        connected: list[RestoredConnected] = []
        out_seats: list[RestoredSeat] = []
        for rs in seats:
            call_id = fence.get(rs.spec.id)
            if call_id is not None:
                e, row = entries.get(call_id), records.get(call_id)
                skill = e.skill if e else (row["skill"] if row is not None and row["skill"] else next(iter(rs.spec.skills)))
                connected.append(RestoredConnected(
                    call_id, rs.spec.id, skill, e.priority if e else int((row or {}).get("priority") or 3),
                    e.enqueued_at if e else float((row or {}).get("queued_at") or now),
                    float((row or {}).get("seat_answered_at") or now), e.caller if e else (row or {}).get("caller"),
                    dict(e.info) if e else {}))
                out_seats.append(rs)
            elif rs.status is SeatStatus.RESERVED:  # offered, never dialed: the election revoked it
                out_seats.append(RestoredSeat(rs.spec, SeatStatus.AVAILABLE, None, now))
            elif rs.status is SeatStatus.ON_CALL:   # released at the fence: the call is over
                out_seats.append(RestoredSeat(rs.spec, SeatStatus.WRAP_UP, None, now))
            else:
                out_seats.append(rs)
        bound = {c.call_id for c in connected}
        waiting = [e for e in waiting if e.call_id not in bound]
        events = service.acd.restore(out_seats, waiting, now, connected)
        for row in await load_callbacks(self.engine):
            with contextlib.suppress(RoutingError):
                service.acd.callbacks.add(row["call_id"], row["caller"], row["skill"] or "intake_guidance",
                                          int(row["priority"] or 3), float(row["enqueued_at"]),
                                          float(row["abandoned_at"]), row["info"] or {}, row["callback_id"])
        service.record(events)

    async def _watch_nodes(self, epoch: int) -> None:
        """Close the calls of a node that is gone for good (no campaign session for
        ``node_grace_s``): they are lost with a callback, the seats it was dialing are freed."""
        conn = await connect_worker(self.url, self.lease_s)
        missing_since: dict[str, float] = {}
        try:
            while self.epoch == epoch:
                await asyncio.sleep(1.0)
                alive = await live_nodes(conn)
                now = time.monotonic()
                owners = {n for c, n in self._owners.items() if self.service and self.service.acd.call_view(c)}
                for node in owners - alive:
                    missing_since.setdefault(node, now)
                for node in list(missing_since):
                    if node in alive:
                        del missing_since[node]
                    elif now - missing_since[node] >= self.node_grace_s and self.epoch == epoch:
                        del missing_since[node]
                        await self._close_node(conn, epoch, node)
        finally:
            conn.terminate()

    async def _close_node(self, conn: asyncpg.Connection, epoch: int, node: str) -> None:
        from routing.store.reconcile import LOST_NODE_FAILURE

        assert self.service is not None
        calls_of = sorted(c for c, n in self._owners.items() if n == node and self.service.acd.call_view(c))
        log.warning("node gone: its calls are closed as lost", extra={"node_id": node, "calls": len(calls_of)})
        async with conn.transaction():  # its seats first, fenced: only the current leader frees them
            if int(await conn.fetchval("SELECT epoch FROM routing_epoch WHERE id = 1 FOR SHARE")) != epoch:
                return
            for r in await conn.fetch("SELECT seat_id, call_id FROM seat_offers WHERE state = 'dialing' "
                                      "AND node_id = $1 FOR UPDATE", node):
                await release_seat(conn, r["seat_id"], r["call_id"])
        now = self.service.clock()
        for call_id in calls_of:
            view = self.service.acd.call_view(call_id) or {}
            with contextlib.suppress(RoutingError):
                self.service.call_lost(call_id, LOST_NODE_FAILURE, caller=view.get("caller"),
                                       info=view.get("info"), enqueued_at=view.get("enqueued_at"))
            self.service.record([Event(EventKind.CALLEND, now, call_id=call_id, skill=view.get("skill"),
                                       data={"reason": LOST_NODE_FAILURE, "ended_by": "node_failure",
                                             "node_id": node})])

    async def _refold_metrics(self, service: RoutingService, elected_at: float) -> None:
        t0 = time.monotonic()
        m = service.acd.metrics
        recent = await load_recent_events(self.engine, since=elected_at - m.interval_s * m.keep_intervals)
        m.observe_all([e for e in recent if e.at < elected_at])
        log.info("routing metrics refolded", extra={"events": len(recent), "s": round(time.monotonic() - t0, 3)})

    # -- commands ---------------------------------------------------------------------------------
    async def _read_commands(self, epoch: int) -> None:
        listen = await connect_worker(self.url, self.lease_s)
        try:
            await listen.add_listener(CHANNEL_COMMANDS, lambda *_: self._wake.set())
            while self.epoch == epoch:
                if not await self._apply_new_commands(epoch):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), POLL_S)
                    self._wake.clear()
        finally:
            listen.terminate()

    async def _apply_new_commands(self, epoch: int) -> int:
        assert self._conn is not None and self.service is not None
        rows = await self._conn.fetch(
            "SELECT seq, node_id, kind, call_id, args FROM routing_commands WHERE seq > $1 ORDER BY seq LIMIT 500",
            self.applied_seq)
        if not rows:
            return 0
        for r in rows:
            if self.epoch != epoch:
                return 0
            self._apply(r["node_id"], r["kind"], json.loads(r["args"]))
            self.applied_seq = int(r["seq"])
        # the cursor moves only once the events of these commands are in the log
        writer = self.service.writer
        if writer is not None:
            await writer.flush()
        await self._move_cursor(epoch)
        return len(rows)

    async def _move_cursor(self, epoch: int) -> None:
        assert self._conn is not None
        async with self._conn.transaction():
            current = await self._conn.fetchval("SELECT epoch FROM routing_epoch WHERE id = 1 FOR SHARE")
            if int(current) != epoch:
                raise RuntimeError(f"epoch {epoch} is no longer current ({current})")
            await self._conn.execute(
                "UPDATE routing_command_cursor SET applied_seq = $1, epoch = $2, updated_at = $3 WHERE id = 1",
                self.applied_seq, epoch, time.time())

    def _apply(self, node_id: str, kind: str, args: dict[str, Any]) -> None:
        """One command on the ACD.  A refusal (a report that came too late, a replay of a command
        already in the restored state) is logged and changes nothing."""
        assert self.service is not None
        call_id = args.get("call_id")
        if kind not in COMMANDS:
            log.error("unknown routing command ignored", extra={"kind": kind, "call_id": call_id})
            return
        if kind == "enqueue" and call_id:
            self._owners[call_id] = node_id
        try:
            getattr(self.service, kind)(**args)
        except IllegalTransition as e:
            view = self.service.acd.call_view(call_id) if call_id else None
            if kind in ("seat_failed", "ring_no_answer") and view is not None and view["state"] == "connected" \
                    and (args.get("seat_id") in (None, view["seat_id"])):
                # a seat still ringing at the election was adopted as talking; its ring ended
                # without an answer: the caller goes back to the head of the queue
                self.service.seat_lost(call_id, f"ring ended across a leader change ({kind})")
            else:
                log.info("routing command refused", extra={"kind": kind, "call_id": call_id, "error": str(e)})
        except RoutingError as e:
            log.info("routing command refused", extra={"kind": kind, "call_id": call_id,
                                                       "error": f"{type(e).__name__}: {e}"})
        except TypeError as e:
            log.error("routing command with bad arguments ignored", extra={"kind": kind, "call_id": call_id,
                                                                           "error": str(e)})

    # -- decisions out ----------------------------------------------------------------------------
    def _decided(self, ev: Event) -> None:
        if (ev.kind in DELIVERED and ev.call_id in self._owners) or ev.kind is EventKind.SEATADDED \
                or _offer_taken_back(ev):
            self._outbox.put_nowait(ev)

    async def _deliver(self, epoch: int) -> None:
        """Offers through the fence, then every decision to the node of its call, in ACD order."""
        while self.epoch == epoch:
            ev = await self._outbox.get()
            assert self._out is not None
            if ev.kind is EventKind.SEATADDED:  # a seat added through the API: known to the fence too
                await add_seat(self._out, ev.seat_id or "")
                continue
            assert ev.call_id is not None
            if ev.kind is EventKind.SEATSTATUS:  # the ACD took an offer back: free it if no one dials it
                await withdraw_offer(self._out, epoch, ev.seat_id or "", ev.call_id)
                continue
            node = self._owners[ev.call_id]
            async with self._out.transaction():
                if ev.kind is EventKind.OFFER:
                    assert ev.seat_id is not None
                    if not self._still_offered(ev):
                        log.info("offer overtaken before it left, dropped", extra={
                            "call_id": ev.call_id, "seat_id": ev.seat_id, "epoch": epoch})
                        continue
                    if not await claim_offer(self._out, epoch, ev.seat_id, ev.call_id, ev.data.get("attempt")):
                        current = await self._out.fetchval("SELECT epoch FROM routing_epoch WHERE id = 1")
                        if int(current) != epoch:
                            log.warning("offer fenced: no longer the routing authority", extra={
                                "call_id": ev.call_id, "seat_id": ev.seat_id, "epoch": epoch, "current": current})
                            return  # the authority's ping finds out too; nothing more leaves here
                        self._fence_refused(ev)
                        continue
                await self._out.execute("SELECT pg_advisory_xact_lock($1)", DELIVERIES_LOCK_KEY)
                if int(await self._out.fetchval("SELECT epoch FROM routing_epoch WHERE id = 1 FOR SHARE")) != epoch:
                    return
                await self._out.execute(
                    "INSERT INTO routing_deliveries (node_id, kind, call_id, seat_id, epoch, data, at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7)", node, ev.kind.value, ev.call_id, ev.seat_id, epoch,
                    json.dumps({**ev.data, "skill": ev.skill}, default=str), ev.at)
                await self._out.execute("SELECT pg_notify($1, $2)", CHANNEL_DELIVERIES, node)

    def _still_offered(self, ev: Event) -> bool:
        """The ACD still has this call ringing this seat, in this attempt."""
        view = self.service.acd.call_view(ev.call_id or "") if self.service is not None else None
        return view is not None and view["state"] == "ringing" and view["seat_id"] == ev.seat_id \
            and view["attempt"] == ev.data.get("attempt")

    def _fence_refused(self, ev: Event) -> None:
        """The seat is still held at the fence (a call dialed in an earlier epoch that its node has
        not released yet): the ACD takes the offer back, the caller keeps its place, the seat is
        held back for the reject delay and tried again."""
        self.fenced_offers += 1
        log.info("offer refused at the fence: seat still held", extra={"call_id": ev.call_id, "seat_id": ev.seat_id})
        if self.service is not None:
            with contextlib.suppress(RoutingError):
                self.service.seat_failed(ev.call_id or "", "local_error", seat_id=ev.seat_id,
                                         detail="seat still held at the fence")


def _offer_taken_back(ev: Event) -> bool:
    """A seat leaves ``reserved`` other than by answering (ring timer, caller gone, call lost)."""
    return ev.kind is EventKind.SEATSTATUS and ev.data.get("previous") == SeatStatus.RESERVED.value \
        and ev.data.get("status") != SeatStatus.ON_CALL.value and bool(ev.call_id and ev.seat_id)


class ClusterNode:
    """What a node's control process runs in cluster mode: the campaign, the ACD while it leads,
    and the client through which its own calls are routed (whoever leads)."""

    def __init__(self, url: str, engine: AsyncEngine, node_id: str, make_acd: Callable[[], Acd] | None = None,
                 seats: Iterable[SeatSpec] = (), lease_s: float = 3.0,
                 on_elected: Callable[[int], Awaitable[None] | None] | None = None,
                 on_demoted: Callable[[int], Awaitable[None] | None] | None = None,
                 node_grace_s: float = 30.0) -> None:
        self.node_id = node_id
        self.routing = ClusterRouting(url, engine, node_id, make_acd or (lambda: Acd(AcdConfig())), seats, lease_s,
                                      node_grace_s=node_grace_s)
        self.client = RoutingClient(url, node_id, lease_s)
        self._user_elected = on_elected
        self._user_demoted = on_demoted
        self.authority = RoutingAuthority(url, node_id, on_elected=self._elected, on_demoted=self._demoted,
                                          lease_s=lease_s)
        self.routing.resign = self.authority.resign
        self._campaign: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.start()
        self._campaign = asyncio.create_task(self.authority.run(), name="routing-authority")

    async def stop(self) -> None:
        await self.authority.stop()
        if self._campaign is not None:
            self._campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._campaign
        await self.client.stop()

    async def _elected(self, epoch: int) -> None:
        # in a task: the authority pings (its lease) while the ACD is restored
        self._starting = asyncio.create_task(self._start_routing(epoch), name=f"restore-{epoch}")

    async def _start_routing(self, epoch: int) -> None:
        try:
            await self.routing.elected(epoch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("routing for the cluster could not start; giving the authority up", extra={"epoch": epoch})
            self.authority.resign()
            return
        if self._user_elected is not None:
            r = self._user_elected(epoch)
            if asyncio.iscoroutine(r):
                await r

    async def _demoted(self, epoch: int) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starting
            self._starting = None
        await self.routing.demoted(epoch)
        if self._user_demoted is not None:
            r = self._user_demoted(epoch)
            if asyncio.iscoroutine(r):
                await r





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

    def __init__(self, node: ClusterNode, config: AcdConfig, writer: EventWriter | None = None) -> None:
        self.node = node
        self.client = node.client
        self.writer = writer
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

        url = str(settings.database_url)
        lease = float(getattr(settings, "cluster_lease_s", 3.0))
        grace = float(getattr(settings, "cluster_node_grace_s", 30.0))
        return cls(ClusterNode(url, engine, node_id, make_acd=make_acd, lease_s=lease, node_grace_s=grace),
                   make_acd().config,
                   writer=EventWriter(engine, node_id))

    async def start(self, seats: Iterable[SeatSpec] | None = None, live_calls: Iterable[str] | None = None,
                    talking: dict[str, str] | None = None, lost_reasons: dict[str, str] | None = None) -> None:
        """``seats``: the seats file's, merged by whichever node leads after each election.
        ``live_calls`` closes this node's calls that no worker carries; ``talking`` and
        ``lost_reasons`` (a worker that died while the control process was away) are not used in
        cluster mode yet: such calls close as ``lost_node_failure`` (see docs/CLUSTER.md)."""
        if seats is not None:
            self.node.routing.seats = list(seats)
        if self.writer is not None:
            await self.writer.start()
        self._sender = asyncio.create_task(self._send_in_order(), name="routing-commands-out")
        await self.node.start()
        await self._reconcile(None if live_calls is None else set(live_calls))

    async def open_deliveries(self) -> None:
        """Let the leader's decisions reach the listeners: call it once every live call has its
        listener (after a restart's adoption), so no offer arrives for a call nobody holds yet."""
        await self.client.open()

    async def _reconcile(self, live: set[str] | None) -> None:
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
            self.call_lost(call_id, LOST_NODE_FAILURE, caller=row.caller if row else None,
                           info={"ivr": row.ivr} if row is not None and row.ivr else {},
                           enqueued_at=(row.queued_at or row.started_at) if row is not None else None)
            self.record([Event(EventKind.CALLEND, now, call_id=call_id, skill=row.skill if row else None,
                               data={"reason": LOST_NODE_FAILURE, "ended_by": "node_failure"})])
            log.warning("call_lost", extra={"call_id": call_id, "reason": LOST_NODE_FAILURE})

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

    def update_seat(self, spec: SeatSpec) -> Any:
        raise IllegalTransition(f"seat {spec.id}: seats change through the seats file in cluster mode (for now)")

    add_seat = update_seat

    def remove_seat(self, seat_id: str) -> Any:
        raise IllegalTransition(f"seat {seat_id}: seats change through the seats file in cluster mode (for now)")

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
__all__ = ["COMMANDS", "ClusterNode", "ClusterRouting", "ClusterRoutingPort", "Delivery", "RemoteAcdView", "RoutingClient"]
