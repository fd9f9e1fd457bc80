"""The channel between the control process and the API process: JSON lines over a Unix socket.

Why a process boundary: HTTP and WebSocket load (dashboards, consoles, scrapers) must never reach
a call.  The API process serves every read from pushed state (``api.readmodel``) or from the
database directly; the control process only pushes (``api.feed``) and carries out commands.

Lines, one JSON object each, ``{"t": ...}``:

- API -> control: ``hello`` ``{secret, pid}`` (first line), ``ready`` ``{url}`` (listening),
  ``forward`` ``{id, target, op, args, kwargs}`` (a command);
- control -> API: ``event`` ``{ev}`` (an ACD event), ``views`` ``{seats, queues, callbacks,
  gateway, at}``, ``reply`` ``{id, ok, result | error, detail}``.

A command's reply is written after the views it changed, so when ``forward`` returns the read
model already shows its effect (a PUT answered with the seat's new status).

``forward`` is the one door every API route uses to change the centre: ``ControlDesk.targets``
names what may be called (``routing`` methods, the Twilio registry, the flow upload, one read).
A route added later that calls ``ctx.on_control(ctx.routing.some_command, ...)`` needs only its
name in ``ROUTING_COMMANDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import itertools
import json
import logging
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from routing.events import Event

log = logging.getLogger(__name__)

#: The routing service's commands a route may forward (add the name of a new one here).
ROUTING_COMMANDS = frozenset({"set_status", "end_wrap_up", "add_seat", "update_seat", "remove_seat",
                              "take_callback", "complete_callback", "record"})
#: Reads of the ACD that the pushed views do not carry, answered by the control process (a route
#: reads them with ``ctx.read_control(ctx.routing.acd.<name>, ...)``; add the name of a new one).
ACD_READS = frozenset({"call_view"})
#: The Twilio call registry's webhooks (``api.twilio.calls.TwilioCalls``).
TWILIO_COMMANDS = frozenset({"voice", "gather_result", "hold_poll", "seat_status", "dial_result", "call_status"})
#: How long a forwarded command may take before the route answers 503.
FORWARD_TIMEOUT_S = 5.0
#: Bytes the control process lets wait for a stuck API process before it drops the connection.
MAX_BACKLOG = 16 * 1024 * 1024
LINE_LIMIT = 64 * 1024 * 1024


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_default) + "\n").encode()


def _default(obj: Any) -> Any:
    if isinstance(obj, Event):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"__dataclass__": type(obj).__name__, **dataclasses.asdict(obj)}
    return str(obj)


def _decode_arg(value: Any) -> Any:
    if isinstance(value, dict) and value.get("__dataclass__") in ("TransferRequest", "MonitorRequest"):
        from journey import transfer

        cls = getattr(transfer, value["__dataclass__"])
        return cls(**{k: v for k, v in value.items() if k != "__dataclass__"})
    if isinstance(value, list) and value and all(isinstance(v, dict) and "kind" in v and "at" in v for v in value):
        return [Event.from_dict(v) for v in value]  # ``routing.record([...])``: events travel as dicts
    if isinstance(value, dict) and value.get("__dataclass__") == "SeatSpec":
        from routing.acd import SeatSpec
        from routing.status import SeatStatus

        fields = {k: v for k, v in value.items() if k != "__dataclass__"}
        return SeatSpec(**{**fields, "status": SeatStatus(fields.get("status", "logged_out"))})
    return value


def _encode_result(result: Any) -> Any:
    if isinstance(result, list) and result and all(isinstance(e, Event) for e in result):
        return {"__events__": [e.to_dict() for e in result]}
    return result


def _decode_result(result: Any) -> Any:
    if isinstance(result, dict) and "__events__" in result:
        return [Event.from_dict(e) for e in result["__events__"]]
    return result


def _error_classes() -> dict[str, type[Exception]]:
    from api.twilio.calls import StaleStep, UnknownTwilioCall
    from journey.transfer import TransferRefused
    from routing import errors
    from routing.callbacks import UnknownCallback

    found: dict[str, type[Exception]] = {"UnknownCallback": UnknownCallback, "StaleStep": StaleStep,
                                         "TransferRefused": TransferRefused,
                                         "UnknownTwilioCall": UnknownTwilioCall, "ValueError": ValueError,
                                         "KeyError": KeyError, "LookupError": LookupError}
    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, Exception):
            found[name] = cls
    return found


# ------------------------------------------------------------------------------------------------
# the control process's side
# ------------------------------------------------------------------------------------------------
class ControlDesk:
    """Listens for the API process, pushes the feed to it and carries out its commands."""

    def __init__(self, path: Path, secret: str, targets: dict[str, tuple[Any, frozenset[str]]],
                 on_ready: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.secret = secret
        self.targets = targets
        self.on_ready = on_ready
        self.feed: Any = None  # api.feed.ViewsFeed, pushing into this desk
        self._server: asyncio.AbstractServer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.commands = 0
        self.dropped_connections = 0

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._on_connection, path=str(self.path), limit=LINE_LIMIT)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._writer is not None:
            self._writer.close()
        for t in list(self._tasks):
            t.cancel()
        self.path.unlink(missing_ok=True)

    # -- the feed's sink ----------------------------------------------------------------------
    def _send(self, obj: dict[str, Any]) -> None:
        w = self._writer
        if w is None or w.is_closing():
            return
        if w.transport.get_write_buffer_size() > MAX_BACKLOG:
            log.warning("api_process_not_reading", extra={"backlog": w.transport.get_write_buffer_size()})
            self.dropped_connections += 1
            w.close()  # it is restarted or reconnects and starts again from a fresh push
            self._writer = None
            return
        w.write(_dumps(obj))

    def apply_event(self, ev: dict[str, Any]) -> None:
        self._send({"t": "event", "ev": ev})

    def apply_views_full(self, views: dict[str, Any]) -> None:
        self._send({"t": "views", **views})

    # -- the API process ----------------------------------------------------------------------
    def _peer_uid(self, writer: asyncio.StreamWriter) -> int | None:
        sock = writer.get_extra_info("socket")
        try:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        except (OSError, AttributeError):
            return None
        return struct.unpack("3i", creds)[1]

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            first = json.loads(await asyncio.wait_for(reader.readline(), 5.0) or b"{}")
        except (TimeoutError, ValueError):
            writer.close()
            return
        if (first.get("t") != "hello" or self._peer_uid(writer) != os.getuid()
                or not hmac.compare_digest(str(first.get("secret", "")), self.secret)):
            log.warning("api_process_refused", extra={"pid": first.get("pid")})
            writer.close()
            return
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        log.info("api_process_connected", extra={"pid": first.get("pid")})
        if self.feed is not None:
            self.feed.push_views()
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                if msg.get("t") == "forward":
                    task = asyncio.create_task(self._carry_out(writer, msg))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif msg.get("t") == "ready" and self.on_ready is not None:
                    self.on_ready(str(msg.get("url", "")))
        except (ConnectionError, ValueError, asyncio.IncompleteReadError) as e:
            log.warning("api_process_channel_error", extra={"error": str(e)[:200]})
        finally:
            if self._writer is writer:
                self._writer = None
            writer.close()

    async def _carry_out(self, writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
        self.commands += 1
        rid = msg.get("id")
        target = self.targets.get(str(msg.get("target")))
        op = str(msg.get("op"))
        try:
            if target is None or op not in target[1]:
                raise PermissionError(f"{msg.get('target')}.{op} may not be forwarded")
            fn = getattr(target[0], op)
            args = [_decode_arg(a) for a in msg.get("args") or []]
            result = fn(*args, **{k: _decode_arg(v) for k, v in (msg.get("kwargs") or {}).items()})
            if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
                result = await result
            reply = {"t": "reply", "id": rid, "ok": True, "result": _encode_result(result)}
        except Exception as e:
            if not isinstance(e, tuple(_error_classes().values())):
                log.exception("forwarded_command_failed", extra={"target": msg.get("target"), "op": op})
            reply = {"t": "reply", "id": rid, "ok": False, "error": type(e).__name__, "detail": str(e)[:500],
                     "status": getattr(e, "status", None)}
        if self.feed is not None:
            self.feed.push_views()  # before the reply: the API's read model shows the change first
        if self._writer is writer:
            self._send(reply)


# ------------------------------------------------------------------------------------------------
# the API process's side
# ------------------------------------------------------------------------------------------------
class ControlUnavailable(HTTPException):
    def __init__(self, detail: str) -> None:
        super().__init__(503, detail=detail, headers={"Retry-After": "1"})


class ControlLink:
    """The API process's end: applies pushes to the read model, forwards commands."""

    def __init__(self, path: Path, secret: str, live: Any, timeout_s: float = FORWARD_TIMEOUT_S) -> None:
        self.path, self.secret, self.live, self.timeout_s = path, secret, live, timeout_s
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._writer: asyncio.StreamWriter | None = None
        self.closed = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        self.errors = _error_classes()

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(str(self.path), limit=LINE_LIMIT)
        self._writer.write(_dumps({"t": "hello", "secret": self.secret, "pid": os.getpid()}))
        await self._writer.drain()
        self._reader_task = asyncio.create_task(self._read(reader), name="control-link")

    def say_ready(self, url: str) -> None:
        if self._writer is not None:
            self._writer.write(_dumps({"t": "ready", "url": url}))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                t = msg.get("t")
                if t == "event":
                    self.live.apply_event(msg["ev"])
                elif t == "views":
                    self.live.apply_views_full(msg)
                elif t == "reply":
                    fut = self._waiting.pop(int(msg.get("id", 0)), None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except (ConnectionError, ValueError) as e:
            log.warning("control_link_error", extra={"error": str(e)[:200]})
        finally:
            self.closed.set()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ControlUnavailable("the control process went away"))
            self._waiting.clear()

    async def forward(self, target: str, op: str, *args: Any, **kwargs: Any) -> Any:
        """Have the control process run ``target.op(*args, **kwargs)`` and return its result.

        Its errors come back as the same exception classes (a route's 404/409 mapping holds);
        no answer within ``timeout_s`` is a 503.
        """
        if self._writer is None or self.closed.is_set():
            raise ControlUnavailable("the control process is not connected")
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = fut
        self._writer.write(_dumps({"t": "forward", "id": rid, "target": target, "op": op,
                                   "args": list(args), "kwargs": kwargs}))
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await fut
        except TimeoutError:
            raise ControlUnavailable(f"the control process did not answer {op} within {self.timeout_s:g} s") from None
        finally:
            self._waiting.pop(rid, None)
        if reply.get("ok"):
            return _decode_result(reply.get("result"))
        if reply.get("error") == "TransferRefused":  # carries its HTTP status (journey.transfer)
            from journey.transfer import TransferRefused

            raise TransferRefused(int(reply.get("status") or 409), str(reply.get("detail") or ""))
        cls = self.errors.get(str(reply.get("error")))
        if cls is None:
            raise HTTPException(500, detail=f"{op} failed in the control process")
        raise cls(reply.get("detail") or "")

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task


class RemoteRouting:
    """``ApiContext.routing`` in the API process: reads from the pushed views, commands forwarded.

    ``ctx.routing.set_status`` (any name in ``ROUTING_COMMANDS``) is a coroutine function that
    forwards; ``ctx.routing.acd`` is the read model.
    """

    def __init__(self, link: ControlLink, live: Any) -> None:
        self.link = link
        self.acd = RemoteAcd(link, live)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def forwarded(*args: Any, **kwargs: Any) -> Any:
            return await self.link.forward("routing", name, *args, **kwargs)

        forwarded.__name__ = name
        return forwarded


class RemoteAcd:
    """``ctx.routing.acd`` in the API process: the pushed views (``LiveViews``) first; any other
    read in ``ACD_READS`` is asked of the control process (an awaitable ``read_control`` awaits)."""

    def __init__(self, link: ControlLink, live: Any) -> None:
        self._link, self._live = link, live

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name != "call_view" and hasattr(self._live, name):
            return getattr(self._live, name)
        if name not in ACD_READS:
            raise AttributeError(f"{name} is neither pushed nor in api.link.ACD_READS")

        async def asked(*args: Any, **kwargs: Any) -> Any:
            return await self._link.forward("acd", name, *args, **kwargs)

        return asked


class ObservedMetrics:
    """The control process's counters and histograms in Prometheus text (``journey.metrics``)."""

    def observed(self) -> str:
        from prometheus_client import generate_latest

        from journey.metrics import REGISTRY

        return generate_latest(REGISTRY).decode()


class RemoteObservedMetrics:
    """``ApiContext.observed_metrics`` in the API process: asked of the control process at most
    once per ``max_age_s``, however often scrapers come."""

    def __init__(self, link: ControlLink, max_age_s: float = 0.5) -> None:
        self.link, self.max_age_s = link, max_age_s
        self._body, self._at = b"", float("-inf")
        self._lock = asyncio.Lock()

    async def __call__(self) -> bytes:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if loop.time() - self._at > self.max_age_s:
                self._body = str(await self.link.forward("metrics", "observed")).encode()
                self._at = loop.time()
            return self._body


class RemoteFlowAdmin:
    """The flow upload, checked and installed by the control process's ``FlowFileAdmin`` (which
    reads it on a thread of its own, never on the control loop)."""

    def __init__(self, link: ControlLink) -> None:
        self.link = link

    async def install_flow(self, yaml_text: str) -> list[Any]:
        from api.flow_admin import UploadProblem

        problems = await self.link.forward("flow", "install_flow", yaml_text)
        return [UploadProblem(str(p.get("location", "")), str(p.get("message", ""))) for p in problems or []]


class RemoteTwilioCalls:
    """The Twilio webhooks' registry, kept in the control process (it drives call journeys)."""

    def __init__(self, link: ControlLink) -> None:
        self.link = link

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in TWILIO_COMMANDS:
            raise AttributeError(name)

        async def forwarded(*args: Any) -> Any:
            return await self.link.forward("twilio", name, *args)

        return forwarded
