"""The ACD of the whole cluster, run by the node that holds the routing authority.

On election it restores the ACD from the event log's projections (every node's callers, in their
places), adopts what the fence says is being dialed, replays the commands after the cursor, then
routes for the whole cluster: every ``OFFER`` of the ACD goes through ``claim_offer`` (epoch check,
seat available -> offered, event) before any node hears of it.  On demotion it stops at once:
command reading and the ACD's timers are cancelled and its unwritten events dropped.
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
    IllegalTransition,
    RestoredConnected,
    RestoredSeat,
    RoutingError,
    SeatSpec,
)
from routing.authority import (
    add_seat,
    claim_offer,
    connect_worker,
    live_nodes,
    plain_dsn,
    withdraw_offer,
)
from routing.authority import release as release_seat
from routing.bus import EventBus
from routing.cluster.channel import (
    CHANNEL_COMMANDS,
    CHANNEL_DELIVERIES,
    COMMANDS,
    CONTROL_KIND,
    DELIVERED,
    DELIVERIES_LOCK_KEY,
    POLL_S,
    ControlRefused,
)
from routing.events import Event, EventKind
from routing.service import RoutingService
from routing.status import SeatStatus
from routing.store.models import calls
from routing.store.restore import load_callbacks, load_recent_events, load_state
from routing.store.writer import EventWriter, Fenced

log = logging.getLogger("routing.cluster")

#: How long an act on another node's call waits for that node: under the API's own bound on a
#: command (``api.link.FORWARD_TIMEOUT_S``, 5 s), so the person asking hears this 504 and its reason.
CONTROL_TIMEOUT_S = 3.5


class ClusterRouting:
    """The ACD of the whole cluster, alive only while this node holds the routing authority.

    ``make_acd`` builds a fresh ACD (the node's policy); ``seats`` are the seats file's, merged
    after every restore like a single node does.  ``restored_in_s`` is how long the last election
    took from ``on_elected`` to routing (the restore from the log plus the replay).
    """

    def __init__(self, url: str, engine: AsyncEngine, node_id: str, make_acd: Callable[[], Acd],
                 seats: Iterable[SeatSpec] = (), lease_s: float = 3.0,
                 on_routing: Callable[[RoutingService | None], None] | None = None,
                 node_grace_s: float = 30.0, make_bus: Callable[[], EventBus | None] | None = None) -> None:
        self.url = plain_dsn(url)
        #: The leader's MQTT bus, made anew at each election: the ACD's decisions (events, screen
        #: pops, queue snapshots) are published by whoever routes, and seat desktops' status
        #: requests reach the ACD that decides.  A deposed leader's bus is stopped unflushed.
        self.make_bus = make_bus
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
        self._outbox: asyncio.Queue[Event | _ControlOut] = asyncio.Queue()
        #: request id -> the API request waiting for the answer of the node that carries the call
        self._controls: dict[str, asyncio.Future[dict[str, Any]]] = {}
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
        bus = self.make_bus() if self.make_bus is not None else None
        service = RoutingService(self.make_acd(), writer=writer, bus=bus, node_id=self.node_id)
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
        for waiting in self._controls.values():  # its answer will reach the next leader, not this request
            if not waiting.done():
                waiting.set_result({"ok": False, "status": 503, "detail": (
                    "the routing authority changed while the call's node was asked; look at the call "
                    "before asking again")})
        for conn in (self._conn, self._out):
            if conn is not None:
                conn.terminate()
        self._conn = self._out = None
        if service is not None:
            if service.bus is not None:  # nothing more of this epoch leaves, not even what is buffered
                bus, service.bus = service.bus, None
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(bus.stop(drain_timeout=0), 1.0)
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
        service.remember_callers(waiting)
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
        if kind == "control_result":
            waiting = self._controls.get(str(args.get("request_id")))
            if waiting is not None and not waiting.done():
                waiting.set_result(args)
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

    # -- acts on live calls, carried out by the node of the call -----------------------------------
    def node_of(self, call_id: str) -> str | None:
        """The node whose worker carries ``call_id`` (the node that queued it last), while leading."""
        return self._owners.get(call_id) if self.service is not None else None

    async def control(self, node: str, op: str, args: dict[str, Any],
                      timeout_s: float = CONTROL_TIMEOUT_S) -> dict[str, Any]:
        """Ask ``node`` to carry out ``op`` on one of its calls (an act asked through this leader's
        API, authorised there) and wait for its answer: its result, or ``ControlRefused`` with its
        status (504 when it does not answer in ``timeout_s``; it will not act after that)."""
        if self.service is None or self.epoch is None:
            raise ControlRefused(409, "this node no longer routes for the cluster; ask again")
        request_id = uuid.uuid4().hex
        waiting: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._controls[request_id] = waiting
        self._outbox.put_nowait(_ControlOut(node, request_id, op, args, time.time() + timeout_s))
        try:
            answer = await asyncio.wait_for(waiting, timeout_s)
        except TimeoutError:
            raise ControlRefused(504, f"node {node}, which carries call {args.get('call_id')}, did not answer "
                                      f"in {timeout_s:g} s; nothing was done") from None
        finally:
            self._controls.pop(request_id, None)
        if not answer.get("ok"):
            raise ControlRefused(int(answer.get("status") or 500), str(answer.get("detail") or "refused"))
        return dict(answer.get("result") or {})

    async def _deliver_control(self, epoch: int, c: _ControlOut) -> bool:
        """The request as a delivery row for its node (False: no longer the authority)."""
        assert self._out is not None
        async with self._out.transaction():
            return await self._append_delivery(epoch, c.node, CONTROL_KIND, c.args.get("call_id"), None, {
                "request_id": c.request_id, "op": c.op, "args": c.args, "deadline": c.deadline,
                "asked_by_node": self.node_id}, time.time())

    async def _append_delivery(self, epoch: int, node: str, kind: str, call_id: str | None, seat_id: str | None,
                               data: dict[str, Any], at: float) -> bool:
        """One row for ``node``, in the caller's transaction, in delivery order and only while
        ``epoch`` is current (False: it is not, nothing written); its NOTIFY goes at commit."""
        assert self._out is not None
        await self._out.execute("SELECT pg_advisory_xact_lock($1)", DELIVERIES_LOCK_KEY)
        if int(await self._out.fetchval("SELECT epoch FROM routing_epoch WHERE id = 1 FOR SHARE")) != epoch:
            return False
        await self._out.execute(
            "INSERT INTO routing_deliveries (node_id, kind, call_id, seat_id, epoch, data, at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)", node, kind, call_id, seat_id, epoch,
            json.dumps(data, default=str), at)
        await self._out.execute("SELECT pg_notify($1, $2)", CHANNEL_DELIVERIES, node)
        return True

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
            if isinstance(ev, _ControlOut):
                if not await self._deliver_control(epoch, ev):
                    return
                continue
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
                if not await self._append_delivery(epoch, node, ev.kind.value, ev.call_id, ev.seat_id,
                                                   {**ev.data, "skill": ev.skill}, ev.at):
                    return

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


@dataclass(frozen=True, slots=True)
class _ControlOut:
    """A ``ControlRequest`` on its way out, in the outbox with the decisions (one connection writes)."""

    node: str
    request_id: str
    op: str
    args: dict[str, Any]
    deadline: float


def _offer_taken_back(ev: Event) -> bool:
    """A seat leaves ``reserved`` other than by answering (ring timer, caller gone, call lost)."""
    return ev.kind is EventKind.SEATSTATUS and ev.data.get("previous") == SeatStatus.RESERVED.value \
        and ev.data.get("status") != SeatStatus.ON_CALL.value and bool(ev.call_id and ev.seat_id)
