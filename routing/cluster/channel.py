"""The command channel between the nodes and the routing authority, on PostgreSQL.

A node writes each command (enqueue, seat answered, ring-no-answer, seat failed, abandoned,
completed, ...) as a row of ``routing_commands`` and ``NOTIFY``s the leader; the leader reads rows by
sequence number after its cursor.  The notification is only a wake-up: a leader that missed it
(reconnect, election) still reads every row, in order, on its next poll.  A command carries a
``command_id`` so a node that is unsure whether its insert committed simply sends it again.  The
leader answers a node the same way (``routing_deliveries``, one node's rows read by that node after
its own cursor).  Both tables are in the database that fences the offers, so an OFFER delivery is
written in the very transaction of its ``claim_offer``: there is no offer a node can see that the
fence did not accept.

Acts on a live call asked through the leader's API (hold, transfer, a supervisor joining) travel
the same way: the leader writes a ``CONTROL`` delivery for the node whose worker carries the call
(``ControlRequest``), that node does it and answers with a ``control_result`` command, which the
leader hands back to the waiting request.  A request read after its deadline is not carried out:
the person who asked was already told that it timed out.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from routing.authority import (
    connect_worker,
    plain_dsn,
)
from routing.authority import release as release_seat
from routing.authority import start_dialing as start_dialing_seat
from routing.events import Event, EventKind

log = logging.getLogger("routing.cluster")


CHANNEL_COMMANDS = "routing_commands"
CHANNEL_DELIVERIES = "routing_deliveries"
#: Transaction-level advisory locks that make sequence allocation and commit one order.
COMMANDS_LOCK_KEY = 0x68313233
DELIVERIES_LOCK_KEY = 0x68313234
#: How often a reader looks for rows even without a notification (a missed NOTIFY costs this much).
POLL_S = 1.0

#: The commands a node may send, each with the RoutingService method that applies it (but
#: ``control_result``: a node's answer to a ``ControlRequest``, for the leader's waiting request).
COMMANDS = frozenset({
    "enqueue", "seat_answered", "ring_no_answer", "seat_failed", "caller_abandoned", "call_completed",
    "seat_lost", "call_lost", "set_status", "end_wrap_up", "control_result",
})
#: The delivery kind of a ``ControlRequest`` (the others are the ACD's ``EventKind`` values).
CONTROL_KIND = "CONTROL"
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


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """An act on one of this node's live calls, asked through the leader's API and already
    authorised there: ``op`` names the node's method (``hold_call``, ``transfer_call``, ...)."""

    request_id: str
    op: str
    args: dict[str, Any]
    deadline: float
    asked_by_node: str


class ControlRefused(Exception):
    """What the node carrying the call answered instead of doing it (its status and reason)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


#: Carries out a ``ControlRequest`` on this node; raises with ``status``/``detail`` to refuse.
ControlHandler = Callable[[ControlRequest], Awaitable[dict[str, Any]]]


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
        self._control: ControlHandler | None = None
        self._controls: set[asyncio.Task[None]] = set()

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
        for task in list(self._controls):
            task.cancel()
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

    def on_control(self, handler: ControlHandler) -> None:
        """Who carries out the leader's ``ControlRequest``s for this node's calls."""
        self._control = handler

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
                    if r["kind"] == CONTROL_KIND:
                        self._start_control(data)
                    else:
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

    def _start_control(self, data: dict[str, Any]) -> None:
        """In a task of its own: a slow act (a worker that takes its time) must not hold up offers."""
        req = ControlRequest(str(data.get("request_id")), str(data.get("op")), dict(data.get("args") or {}),
                             float(data.get("deadline") or 0.0), str(data.get("asked_by_node") or ""))
        task = asyncio.create_task(self._carry_out(req), name=f"control-{req.request_id}")
        self._controls.add(task)
        task.add_done_callback(self._controls.discard)

    async def _carry_out(self, req: ControlRequest) -> None:
        call_id = req.args.get("call_id")
        if time.time() > req.deadline:
            log.warning("call control request read after its deadline, not carried out", extra={
                "call_id": call_id, "op": req.op, "request_id": req.request_id})
            return
        answer: dict[str, Any]
        if self._control is None:
            answer = {"ok": False, "status": 409, "detail": f"node {self.node_id} carries no calls"}
        else:
            try:
                answer = {"ok": True, "status": 200, "result": await self._control(req)}
            except Exception as e:
                status = getattr(e, "status", None)
                if not isinstance(status, int):
                    log.exception("call control request failed", extra={"call_id": call_id, "op": req.op})
                answer = {"ok": False, "status": status if isinstance(status, int) else 500,
                          "detail": str(getattr(e, "detail", None) or e)}
        log.info("call control request carried out" if answer["ok"] else "call control request refused", extra={
            "call_id": call_id, "op": req.op, "request_id": req.request_id, "status": answer["status"],
            "asked_by_node": req.asked_by_node})
        try:
            await self.send("control_result", None, request_id=req.request_id, **answer)
        except Exception as e:  # the leader times the request out and says so
            log.error("call control answer not sent", extra={"call_id": call_id, "request_id": req.request_id,
                                                             "error": f"{type(e).__name__}: {e}"})

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
