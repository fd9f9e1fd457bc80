"""The routing service: the async edge around the pure ``Acd``.

Every command reads the clock once, asks the ACD (synchronous, microseconds, no I/O) and hands the
resulting events to ``_emit``: the event writer (memory only; the database is written in the
background), the MQTT bus (memory only; sent in the background), the WebSocket subscribers and the
registered listeners (the SIP gateway and the Twilio ingress act on ``OFFER`` / ``RINGNOANSWER``).
Nothing on that path awaits the database or the broker, so a slow disk or a dead broker never
delays a decision.

Commands return ``Emitted``: the events of the decision, as a list that can also be awaited.  The
SIP gateway calls them as plain functions; the API and the Twilio ingress ``await`` them (through
the control-loop bridge); both get the same list at once.

The ACD owns every timer; a background task sleeps until ``acd.next_deadline()`` and calls
``tick``.  On ``start`` the state comes back from the store (seats in the status they had, waiting
calls in their places, pending callbacks, the metrics of the recent log), then the seats file adds
seats it does not know yet and updates the configuration of those it does, without touching their
status.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Generator, Iterable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from routing.acd import (
    Acd,
    AcdConfig,
    RestoredConnected,
    RestoredEntry,
    RestoredSeat,
    RoutingError,
    SeatSpec,
    SkillPolicy,
)
from routing.bus import EventBus
from routing.events import Event, EventKind
from routing.skills import SKILLS
from routing.status import SeatStatus
from routing.store.reconcile import LOST_NODE_FAILURE, InProgress, in_progress
from routing.store.restore import load_callbacks, load_recent_events, load_state
from routing.store.writer import EventWriter

log = logging.getLogger("routing.service")

Listener = Callable[[Event], Any]

#: After one of these the call is no longer offered anywhere: forget its screen-pop details.
CALL_DONE = frozenset({EventKind.CONNECT, EventKind.ABANDON, EventKind.COMPLETE, EventKind.CALLEND})

QUEUE_SNAPSHOT_EVERY_S = 0.5


class Emitted(list[Event]):
    """The events of one decision; ``await``-able (it resolves at once to itself)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, Emitted]:
        yield from ()
        return self


class RoutingService:
    def __init__(self, acd: Acd, writer: EventWriter | None = None, bus: EventBus | None = None,
                 engine: AsyncEngine | None = None, clock: Callable[[], float] = time.time,
                 node_id: str = "node-1", subscriber_buffer: int = 1000) -> None:
        self.acd = acd
        self.writer = writer
        self.bus = bus
        self.engine = engine
        self.clock = clock
        self.node_id = node_id
        self.subscriber_buffer = subscriber_buffer
        self._subscribers: list[asyncio.Queue[Event]] = []
        self._listeners: list[Listener] = []
        self._dispatch: deque[Event] = deque()
        self._dispatching = False
        self._background: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.Task[None] | None = None
        self._rearm: asyncio.Event | None = None
        self._dirty_skills: set[str] = set()
        self._snapshot_handle: asyncio.TimerHandle | None = None
        self._pop_info: dict[str, dict[str, Any]] = {}
        self.subscriber_drops = 0
        if bus is not None and bus.on_seat_status is None:
            bus.on_seat_status = self.seat_status_from_bus

    @classmethod
    def from_settings(cls, settings: Any, engine: AsyncEngine | None, node_id: str = "node-1",
                      clock: Callable[[], float] = time.time,
                      queues: dict[str, SkillPolicy] | None = None) -> RoutingService:
        """The service as a node runs it: ACD policy from the settings (and the seats file's
        ``queues:``, per skill), writer on ``engine``, bus if ``mqtt_url`` is set."""
        config = AcdConfig(
            ring_timeout_s=float(settings.ring_timeout),
            rona_not_ready_after=int(settings.rona_not_ready_after),
            service_level_s=float(settings.service_level_s),
            callback_after_s=float(settings.callback_after_s),
            policies={s: (queues or {}).get(s) or SkillPolicy(wrap_up_s=float(settings.wrap_up_s)) for s in SKILLS},
        )
        writer = EventWriter(engine, node_id) if engine is not None else None
        bus = EventBus(settings.mqtt_url, node_id) if getattr(settings, "mqtt_url", None) else None
        return cls(Acd(config), writer=writer, bus=bus, engine=engine, clock=clock, node_id=node_id)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, seats: Iterable[SeatSpec] | None = None,
                    live_calls: Iterable[str] | None = None, talking: dict[str, str] | None = None,
                    lost_reasons: dict[str, str] | None = None) -> None:
        """Restore from the store, merge the seats file, then start writer, bus and timer.

        ``live_calls`` are the calls whose media is really alive (none after a whole-node restart):
        everything else this node had in progress is closed as lost (``_close_lost``).  ``None``
        trusts the store as it is (a routing service without media of its own, e.g. tests).
        ``talking`` (call id -> seat id): live calls still bridged to a seat after a restart of the
        control process alone; that seat stays ``on_call`` bound to the call.
        ``lost_reasons`` (call id -> end reason): calls gone for a known cause other than the
        node's (their media worker died while the control process was restarting:
        ``lost_worker_failure``); the others lost are ``lost_node_failure``.
        """
        now = self.clock()
        if self.writer is not None:
            await self.writer.start()
        if self.engine is not None:
            await self._restore(now, None if live_calls is None else frozenset(live_calls), talking or {},
                                lost_reasons or {})
        for spec in seats or ():
            self._merge_file_seat(spec, now)
        if self.bus is not None:
            await self.bus.start()
        self._rearm = asyncio.Event()
        self._timer = asyncio.create_task(self._run_timers(), name="acd-timers")
        self._mark_all_queues()

    async def _restore(self, now: float, live: frozenset[str] | None = None,
                       talking: dict[str, str] | None = None, lost_reasons: dict[str, str] | None = None) -> None:
        assert self.engine is not None
        m = self.acd.metrics
        recent = await load_recent_events(self.engine, since=now - m.interval_s * m.keep_intervals)
        m.observe_all(recent)  # cumulative and interval metrics survive the restart
        seats, waiting = await load_state(self.engine, node_id=self.node_id)
        progress = await in_progress(self.engine, self.node_id) if live is not None else InProgress()
        lost = progress.lost(live) if live is not None else set()
        lost_entries = {e.call_id: e for e in waiting if e.call_id in lost}
        connected = _connected(talking or {}, waiting, progress, {s.spec.id for s in seats})
        waiting = [e for e in waiting if e.call_id not in lost and e.call_id not in connected]
        seats, released = _release_lost_seats(seats, progress, lost, (live or frozenset()) - set(connected), now,
                                              {c.call_id: c.seat_id for c in connected.values()})
        events = self.acd.restore(seats, waiting, now, list(connected.values()))
        self.remember_callers(waiting)
        restored_callbacks = 0
        for row in await load_callbacks(self.engine):
            # one being called back when the node stopped goes back to pending: nobody may be lost
            with contextlib.suppress(RoutingError):
                self.acd.callbacks.add(row["call_id"], row["caller"], row["skill"] or "intake_guidance",
                                       int(row["priority"] or 3), float(row["enqueued_at"]),
                                       float(row["abandoned_at"]), row["info"] or {}, row["callback_id"])
                restored_callbacks += 1
        closing = self._close_lost(lost, progress, lost_entries, now, lost_reasons or {})
        log.info("routing state restored", extra={"seats": len(seats), "waiting": len(waiting),
                                                  "callbacks": restored_callbacks, "log_events": len(recent),
                                                  "lost": len(lost), "seats_released": len(released)})
        self._emit(released + closing + events)

    def _close_lost(self, lost: set[str], progress: InProgress, entries: dict[str, RestoredEntry],
                    now: float, reasons: dict[str, str] | None = None) -> list[Event]:
        """Close every call whose media died with the node: its record ends with
        ``lost_node_failure`` (or the reason ``reasons`` knows for it: ``lost_worker_failure``)
        and the caller joins the callback list with the IVR's answers."""
        out: list[Event] = []
        for call_id in sorted(lost):
            entry = entries.get(call_id)
            row = progress.open_calls.get(call_id)
            caller = entry.caller if entry is not None and entry.caller else (row.caller if row else None)
            info: dict[str, Any] = dict(entry.info) if entry is not None else {}
            if row is not None and row.ivr and "ivr" not in info:
                info["ivr"] = row.ivr
            enq = entry.enqueued_at if entry is not None else (row.queued_at or row.started_at if row else None)
            skill = entry.skill if entry is not None else (row.skill if row else None)
            priority = entry.priority if entry is not None else (row.priority if row else None)
            reason = (reasons or {}).get(call_id, LOST_NODE_FAILURE)
            out += self.acd.call_lost(call_id, now, reason, caller=caller, info=info, enqueued_at=enq,
                                      skill=skill, priority=priority)
            out.append(Event(EventKind.CALLEND, now, call_id=call_id, skill=skill, data={
                "reason": reason, "ended_by": "node_failure" if reason == LOST_NODE_FAILURE else "worker_failure"}))
            log.warning("call_lost", extra={"call_id": call_id, "reason": reason, "caller": caller})
        return out

    def _merge_file_seat(self, spec: SeatSpec, now: float) -> None:
        try:
            current = self.acd.seat_view(spec.id, now)
        except RoutingError:
            current = None
        try:
            if current is None:
                self._emit(self.acd.add_seat(spec, now))
            elif (current["contact"], current["skills"], current["name"], (current.get("register") or {}).get("username")) \
                    != (spec.contact, dict(spec.skills), spec.name, spec.register_user):
                self._emit(self.acd.update_seat(spec, now))
        except RoutingError as e:
            log.error("seat from the seats file refused", extra={"seat_id": spec.id, "error": str(e)})

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        if self._snapshot_handle is not None:
            self._snapshot_handle.cancel()
            self._snapshot_handle = None
        for t in list(self._background):
            t.cancel()
        try:
            if self.bus is not None:
                await self.bus.stop()
        except Exception:
            log.exception("bus_stop_failed")  # the event log is flushed all the same
        if self.writer is not None:
            await self.writer.stop()

    # -- commands (synchronous decisions; the result may be awaited) -----------------------------
    def add_seat(self, spec: SeatSpec) -> Emitted:
        return self._emit(self.acd.add_seat(spec, self.clock()))

    def update_seat(self, spec: SeatSpec) -> Emitted:
        return self._emit(self.acd.update_seat(spec, self.clock()))

    def remove_seat(self, seat_id: str) -> Emitted:
        return self._emit(self.acd.remove_seat(seat_id, self.clock()))

    def set_status(self, seat_id: str, status: SeatStatus | str, reason: str | None = None) -> Emitted:
        return self._emit(self.acd.set_status(seat_id, SeatStatus(status), self.clock(), reason))

    def end_wrap_up(self, seat_id: str) -> Emitted:
        return self._emit(self.acd.end_wrap_up(seat_id, self.clock()))

    def enqueue(self, call_id: str, skill: str, priority: int, caller: str | None = None,
                info: dict[str, Any] | None = None, place_at: float | None = None,
                only_seat: str | None = None) -> Emitted:
        events = self.acd.enqueue(call_id, skill, priority, self.clock(), caller=caller, info=info, place_at=place_at,
                                  only_seat=only_seat)
        self._pop_info[call_id] = {"caller": caller, "info": dict(info or {})}
        return self._emit(events)

    def seat_answered(self, call_id: str, seat_id: str | None = None) -> Emitted:
        return self._emit(self.acd.seat_answered(call_id, self.clock(), seat_id=seat_id))

    def ring_no_answer(self, call_id: str, seat_id: str | None = None) -> Emitted:
        return self._emit(self.acd.ring_no_answer(call_id, self.clock(), seat_id=seat_id))

    def seat_failed(self, call_id: str, reason: str, seat_id: str | None = None,
                    detail: str | None = None) -> Emitted:
        return self._emit(self.acd.seat_failed(call_id, self.clock(), reason, seat_id=seat_id, detail=detail))

    def caller_abandoned(self, call_id: str) -> Emitted:
        return self._emit(self.acd.caller_abandoned(call_id, self.clock()))

    def call_completed(self, call_id: str, ended_by: str) -> Emitted:
        return self._emit(self.acd.call_completed(call_id, self.clock(), ended_by))

    def seat_lost(self, call_id: str, reason: str) -> Emitted:
        """The seat's leg was lost mid-conversation: the seat goes not_ready with ``reason``."""
        return self._emit(self.acd.seat_lost(call_id, self.clock(), reason))

    def call_lost(self, call_id: str, reason: str, caller: str | None = None,
                  info: dict[str, Any] | None = None, enqueued_at: float | None = None) -> Emitted:
        """The call's media died (``lost_worker_failure``): out of the queue, seat freed, callback."""
        return self._emit(self.acd.call_lost(call_id, self.clock(), reason, caller=caller, info=info,
                                             enqueued_at=enqueued_at))

    def consult_reserve(self, call_id: str, seat_id: str | None = None, skill: str | None = None,
                        info: dict[str, Any] | None = None) -> Emitted:
        """Seat 2 of a warm transfer; its phone's screen pop (MQTT) carries the call and the note."""
        out = self._emit(self.acd.consult_reserve(call_id, self.clock(), seat_id=seat_id, skill=skill, info=info))
        view = self.acd.call_view(call_id)
        if self.bus is not None and out and out[0].seat_id and view is not None:
            self.bus.publish_screen_pop(out[0].seat_id, {
                "call_id": call_id, "seat_id": out[0].seat_id, "skill": out[0].skill, "at": out[0].at,
                "caller": view["caller"], "info": view["info"], "consult": True})
        return out

    def consult_release(self, call_id: str, reason: str) -> Emitted:
        return self._emit(self.acd.consult_release(call_id, self.clock(), reason))

    def consult_complete(self, call_id: str) -> Emitted:
        return self._emit(self.acd.consult_complete(call_id, self.clock()))

    def take_callback(self, seat_id: str) -> Emitted:
        return self._emit(self.acd.take_callback(seat_id, self.clock()))

    def complete_callback(self, callback_id: str) -> Emitted:
        return self._emit(self.acd.complete_callback(callback_id, self.clock()))

    def tick(self) -> Emitted:
        return self._emit(self.acd.tick(self.clock()))

    def record(self, events: list[Event]) -> Emitted:
        """Log and publish events decided outside the ACD (CALLSTART, IVRDONE, CALLEND from the gateway)."""
        return self._emit(list(events))

    def remember_callers(self, entries: Iterable[RestoredEntry]) -> None:
        """Restored callers' identity and IVR answers, for the screen pop of their next offer."""
        for entry in entries:
            self._pop_info[entry.call_id] = {"caller": entry.caller, "info": entry.info}

    def seat_status_from_bus(self, seat_id: str, status: SeatStatus, reason: str | None) -> None:
        """A seat desktop asked for a status over MQTT; a refusal is logged (nobody to answer)."""
        try:
            if status is SeatStatus.AVAILABLE and self.acd.seat_view(seat_id, self.clock())["status"] == "wrap_up":
                self.end_wrap_up(seat_id)
            else:
                self.set_status(seat_id, status, reason)
        except RoutingError as e:
            log.warning("seat status from MQTT refused", extra={"seat_id": seat_id, "status": status.value,
                                                               "error": f"{e.__class__.__name__}: {e}"})

    # -- observers --------------------------------------------------------------------------------
    def on_event(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` for every event, in log order; returns the unregister function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def subscribe(self, maxsize: int | None = None) -> asyncio.Queue[Event]:
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize or self.subscriber_buffer)
        self._subscribers.append(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Event]) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(q)

    def stats(self) -> dict[str, Any]:
        return {
            "writer": self.writer.stats() if self.writer else None,
            "bus": self.bus.stats() if self.bus else None,
            "subscribers": len(self._subscribers), "subscriber_drops": self.subscriber_drops,
            "next_deadline": self.acd.next_deadline(),
        }

    # -- the fan-out ----------------------------------------------------------------------------
    def _emit(self, events: list[Event]) -> Emitted:
        out = Emitted(events)
        if not out:
            # the ACD may have armed a timer without deciding anything (a cluster leader's restore
            # arms the wrap-up of a seat whose call ended while no one led): wake the timer task
            self._after_decision()
            return out
        if self.writer is not None:
            self.writer.append(out)
        for ev in out:
            if self.bus is not None:
                self.bus.publish(ev)
                if ev.kind is EventKind.OFFER and ev.seat_id:
                    self.bus.publish_screen_pop(ev.seat_id, self._screen_pop(ev))
            if ev.skill:
                self._dirty_skills.add(ev.skill)
            for q in self._subscribers:
                if q.full():
                    with contextlib.suppress(asyncio.QueueEmpty):
                        q.get_nowait()
                    self.subscriber_drops += 1
                q.put_nowait(ev)
        self._dispatch.extend(out)
        if not self._dispatching:  # a listener that issues a command sees the events in log order
            self._dispatching = True
            try:
                while self._dispatch:
                    self._notify(self._dispatch.popleft())
            finally:
                self._dispatching = False
        for ev in out:
            if ev.kind in CALL_DONE and ev.call_id:
                self._pop_info.pop(ev.call_id, None)
        self._after_decision()
        return out

    def _notify(self, ev: Event) -> None:
        for listener in list(self._listeners):
            try:
                result = listener(ev)
            except Exception:
                log.exception("routing event listener failed", extra={"kind": ev.kind.value, "call_id": ev.call_id})
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._background.add(task)
                task.add_done_callback(self._listener_done)

    def _listener_done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("routing event listener failed", exc_info=task.exception())

    def _screen_pop(self, ev: Event) -> dict[str, Any]:
        known = self._pop_info.get(ev.call_id or "", {})
        return {"call_id": ev.call_id, "seat_id": ev.seat_id, "skill": ev.skill, "at": ev.at,
                "caller": known.get("caller"), "info": known.get("info") or {},
                "ring_timeout_s": ev.data.get("ring_timeout_s"), "attempt": ev.data.get("attempt")}

    def _after_decision(self) -> None:
        if self._rearm is not None:
            self._rearm.set()
        if self.bus is not None and self._dirty_skills and self._snapshot_handle is None:
            with contextlib.suppress(RuntimeError):  # no running loop (a synchronous test): no snapshots
                loop = asyncio.get_running_loop()
                self._snapshot_handle = loop.call_later(QUEUE_SNAPSHOT_EVERY_S, self._publish_snapshots)

    def _mark_all_queues(self) -> None:
        self._dirty_skills.update(SKILLS)
        self._after_decision()

    def _publish_snapshots(self) -> None:
        """At most every QUEUE_SNAPSHOT_EVERY_S: the realtime view of the queues that changed."""
        self._snapshot_handle = None
        if self.bus is None:
            return
        dirty, self._dirty_skills = self._dirty_skills, set()
        for view in self.acd.queues_view(self.clock()):
            if view["skill"] in dirty:
                self.bus.publish_queue(view["skill"], view)

    async def _run_timers(self) -> None:
        assert self._rearm is not None
        while True:
            self._rearm.clear()
            deadline = self.acd.next_deadline()
            try:
                if deadline is None:
                    await self._rearm.wait()
                    continue
                delay = deadline - self.clock()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._rearm.wait(), delay)
                    continue
                self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failing tick must not stop every later timer
                log.exception("ACD tick failed")
                await asyncio.sleep(0.05)


def _connected(talking: dict[str, str], waiting: list[RestoredEntry], progress: InProgress,
               seat_ids: set[str]) -> dict[str, RestoredConnected]:
    """The conversations to restore as such: what the store knows of each (its queue entry if it
    was still ringing at the restart, else its call record)."""
    entries = {e.call_id: e for e in waiting}
    out: dict[str, RestoredConnected] = {}
    for call_id, seat_id in talking.items():
        if seat_id not in seat_ids:
            continue
        e, row = entries.get(call_id), progress.open_calls.get(call_id)
        if e is not None:
            out[call_id] = RestoredConnected(call_id, seat_id, e.skill, e.priority, e.enqueued_at, time.time(),
                                             e.caller, dict(e.info))
        elif row is not None and row.skill:
            enq = row.queued_at or row.started_at or time.time()
            info = {"ivr": row.ivr, "caller": row.caller} if row.ivr else {}
            out[call_id] = RestoredConnected(call_id, seat_id, row.skill, int(row.priority or 3), enq,
                                             row.seat_answered_at or enq, row.caller, info)
    return out


def _release_lost_seats(seats: list[RestoredSeat], progress: InProgress, lost: set[str], alive: frozenset[str],
                        now: float, talking: dict[str, str] | None = None) -> tuple[list[RestoredSeat], list[Event]]:
    """Seats busy with a lost call come back free, with no penalty: reserved -> available,
    on a call -> wrap-up (the agent's notes, then available).  A seat reserved for a call still
    alive (a Twilio caller waiting at Twilio) is free too: the call waits again and is offered
    anew.  A seat reserved for a live conversation with *another* seat (seat 2 of a warm transfer
    the worker cancelled when the control process died, ``talking``: call id -> its seat) is
    free too.  A seat busy with another node's open call is kept out of this node's offers
    (``not_ready`` here) without a word to the store, where the other node's status stands."""
    out: list[RestoredSeat] = []
    events: list[Event] = []
    for rs in seats:
        call_id = progress.seat_calls.get(rs.spec.id)
        consult_seat = rs.status is SeatStatus.RESERVED and call_id in (talking or {}) \
            and (talking or {})[call_id] != rs.spec.id
        if (rs.status in (SeatStatus.RESERVED, SeatStatus.ON_CALL) and call_id in lost) or consult_seat or \
                (rs.status is SeatStatus.RESERVED and call_id in alive and call_id in progress.queued):
            target = SeatStatus.AVAILABLE if rs.status is SeatStatus.RESERVED else SeatStatus.WRAP_UP
            out.append(RestoredSeat(spec=rs.spec, status=target, reason=None, since=now))
            events.append(Event(EventKind.SEATSTATUS, now, call_id=call_id, seat_id=rs.spec.id, data={
                "status": target.value, "previous": rs.status.value, "reason": None,
                "lost": LOST_NODE_FAILURE if call_id in lost else None}))
        elif rs.status in (SeatStatus.RESERVED, SeatStatus.ON_CALL) and rs.spec.id in progress.foreign:
            # busy with another node's live call: not ours to offer, nor to rewrite in the store
            out.append(RestoredSeat(spec=rs.spec, status=SeatStatus.NOT_READY,
                                    reason=f"busy on {progress.foreign[rs.spec.id]}"[:200], since=rs.since))
        else:
            out.append(rs)
    return out, events
