"""The MQTT side of the routing service: events out, seat status changes in.

The call flow never waits on the broker.  ``publish`` only puts a message into a bounded buffer;
a background task drains it while connected (QoS 1, in order) and reconnects with exponential
backoff when the broker goes away.  When the buffer is full the *oldest* message is dropped and
counted: a dashboard prefers the latest state to a complete but stale history, and the complete
history is in the event log anyway.

Inbound, seat desktops may set their own status on ``{prefix}/seats/{id}/status/set`` with JSON
``{"status": ..., "reason": ...}``; valid messages go to ``on_seat_status(seat_id, status, reason)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from routing.events import Event
from routing.status import SeatStatus

log = logging.getLogger("routing.bus")

SeatStatusHandler = Callable[[str, SeatStatus, "str | None"], "Awaitable[Any] | Any"]

#: Statuses a seat may ask for itself; reserved / on_call / wrap_up belong to the ACD.
SETTABLE = frozenset({SeatStatus.AVAILABLE, SeatStatus.NOT_READY, SeatStatus.LOGGED_OUT})

BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 5.0


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError(f"MQTT URL must look like mqtt://host:port, got {url!r}")
        return cls(parts.hostname, parts.port or 1883,
                   unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None)


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    topic: str
    payload: str
    retain: bool = False


class EventBus:
    def __init__(self, url: str, node_id: str, prefix: str = "handoff122", buffer: int = 10000,
                 on_seat_status: SeatStatusHandler | None = None) -> None:
        self.address = BrokerAddress.parse(url)
        self.node_id = node_id
        self.prefix = prefix
        self.on_seat_status = on_seat_status
        self._buffer: deque[OutboundMessage] = deque()
        self._capacity = buffer
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._connected = False
        self._subscribed = False  # the broker acknowledged the seat-status subscription (SUBACK)
        self._dropped = 0
        self._published = 0
        self._received = 0
        self._invalid = 0
        self._connects = 0

    # -- out --------------------------------------------------------------------------------------
    def publish(self, event: Event) -> None:
        """Queue an event for ``event.topic(prefix)``; never blocks, never raises."""
        try:
            self._put(OutboundMessage(event.topic(self.prefix), event.to_json()))
        except Exception:  # a bad event must not break the call that produced it
            log.exception("event not publishable", extra={"kind": getattr(event, "kind", None)})

    def publish_raw(self, topic: str, payload: dict[str, Any], retain: bool = False) -> None:
        """Queue any JSON document (queue snapshots, screen pops) on a full topic."""
        try:
            body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
        except (TypeError, ValueError):
            log.exception("payload not JSON-serialisable", extra={"topic": topic})
            return
        self._put(OutboundMessage(topic, body, retain))

    def publish_queue(self, skill: str, snapshot: dict[str, Any]) -> None:
        """The realtime state of one queue, retained so a dashboard sees it at once when it connects."""
        self.publish_raw(f"{self.prefix}/queues/{skill}", snapshot, retain=True)

    def publish_screen_pop(self, seat_id: str, payload: dict[str, Any]) -> None:
        self.publish_raw(f"{self.prefix}/seats/{seat_id}/offer", payload)

    def _put(self, msg: OutboundMessage) -> None:
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 1000 == 0:
                log.warning("MQTT buffer full, dropping oldest messages",
                            extra={"dropped_total": self._dropped, "buffer": self._capacity})
        self._buffer.append(msg)
        if self._wake is not None:
            self._wake.set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.create_task(self._run(), name="mqtt-bus")

    async def stop(self, drain_timeout: float = 2.0) -> None:
        """Give a connected bus ``drain_timeout`` to send what is buffered, then disconnect."""
        if self._task is None:
            return
        if self._connected and self._buffer:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_timeout):
                    while self._buffer and self._connected:
                        await asyncio.sleep(0.01)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        for t in list(self._handlers):
            t.cancel()
        self._connected = False

    def stats(self) -> dict[str, Any]:
        return {"connected": self._connected, "subscribed": self._subscribed, "buffered": len(self._buffer), "dropped": self._dropped,
                "published": self._published, "received": self._received, "invalid": self._invalid,
                "connects": self._connects}

    # -- the background task --------------------------------------------------------------------
    async def _run(self) -> None:
        delay = BACKOFF_FIRST_S
        while True:
            client = aiomqtt.Client(
                self.address.host, self.address.port, username=self.address.username,
                password=self.address.password, timeout=10,
                identifier=f"{self.prefix}-{self.node_id}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            )
            try:
                async with client:
                    self._connected = True
                    self._connects += 1
                    delay = BACKOFF_FIRST_S
                    if self.on_seat_status is not None:  # a publish-only bus (a cluster node's) hears nothing
                        await client.subscribe(f"{self.prefix}/seats/+/status/set", qos=1)
                        self._subscribed = True
                    # said once subscribed: from this line on, a seat desktop's request reaches this bus
                    log.info("MQTT connected", extra={"broker": f"{self.address.host}:{self.address.port}",
                                                      "client": self.node_id, "subscribed": self._subscribed,
                                                      "buffered": len(self._buffer)})
                    await self._serve(client)
            except aiomqtt.MqttError as e:
                was = self._connected
                self._connected = False
                log.warning("MQTT connection lost" if was else "MQTT connect failed",
                            extra={"error": str(e)[:200], "retry_in_s": delay, "buffered": len(self._buffer)})
            finally:
                self._connected = False
                self._subscribed = False
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP_S)

    async def _serve(self, client: aiomqtt.Client) -> None:
        sender = asyncio.create_task(self._send(client))
        receiver = asyncio.create_task(self._receive(client))
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # re-raise the MqttError that ended this connection
        finally:
            for t in (sender, receiver):
                t.cancel()
            await asyncio.gather(sender, receiver, return_exceptions=True)

    async def _send(self, client: aiomqtt.Client) -> None:
        assert self._wake is not None
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
                continue
            msg = self._buffer[0]
            await client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain)
            # only now is it the broker's: a failure above leaves it at the head for the next connection
            if self._buffer and self._buffer[0] is msg:
                self._buffer.popleft()
            self._published += 1

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            self._received += 1
            self._on_message(str(message.topic), message.payload)

    def _on_message(self, topic: str, payload: Any) -> None:
        parts = topic.split("/")
        seat_id = parts[-3] if len(parts) >= 4 else ""
        try:
            body = json.loads(payload.decode("utf-8") if isinstance(payload, bytes | bytearray) else payload)
            if not isinstance(body, dict):
                raise ValueError("payload is not a JSON object")
            status = SeatStatus(body.get("status"))
            if status not in SETTABLE:
                raise ValueError(f"a seat cannot set itself {status.value}")
            reason = body.get("reason")
            if reason is not None and not isinstance(reason, str):
                raise ValueError("reason must be a string")
            if not seat_id:
                raise ValueError("no seat id in topic")
        except (ValueError, TypeError, UnicodeDecodeError) as e:
            self._invalid += 1
            log.warning("invalid seat status message ignored", extra={"topic": topic, "error": str(e)[:200]})
            return
        if self.on_seat_status is None:
            return
        try:
            result = self.on_seat_status(seat_id, status, reason)
        except Exception:
            log.exception("seat status handler failed", extra={"seat_id": seat_id})
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._handlers.add(task)
            task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Task[Any]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("seat status handler failed", exc_info=task.exception())
