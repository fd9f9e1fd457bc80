"""The node's media workers: spawn, supervise, route commands, replace the dead.

A worker that dies takes only its own calls with it: the pool tells the front door to stop using
it and to end its dialogs, reports those calls as lost (``lost_worker_failure``) and starts a
replacement on the same ports.

The control socket is private: 0600 in a 0700 directory, and a peer counts as a worker only if
the kernel says it runs as our uid with the pid of a worker we spawned (``SO_PEERCRED``) and its
``hello`` carries this start's secret (given in the worker's environment, never its argv).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import secrets
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import channel as ch
from gateway.kamailio import Destination, private_dir
from gateway.local_sockets import unix_socket_path

log = logging.getLogger("gateway.pool")


@dataclass(slots=True)
class WorkerSpec:
    worker_id: int
    sip_host: str
    sip_port: int
    rtp_port: int
    rtp_range: int

    @property
    def destination(self) -> Destination:
        return Destination(self.worker_id, self.sip_host, self.sip_port)


@dataclass(slots=True)
class WorkerHandle:
    spec: WorkerSpec
    proc: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    calls: set[str] = field(default_factory=set)
    restarts: int = 0
    started_at: float = 0.0


EventSink = Callable[[int, Any], None]
LossSink = Callable[[WorkerSpec, set[str]], Awaitable[None]]


class WorkerPool:
    def __init__(self, specs: list[WorkerSpec], *, run_dir: Path, partial_dir: Path, service_numbers: list[str],
                 callers_per_worker: int, max_calls: int, retry_after_s: int, log_level: str,
                 on_event: EventSink, on_worker_lost: LossSink, answer_delay_s: float = 0.0,
                 ack_timeout_s: float = 5.0, identity_sources: list[str] | None = None, srtp: str = "off") -> None:
        self.specs = specs
        self.run_dir = run_dir
        self.partial_dir = partial_dir
        self.service_numbers = service_numbers
        self.callers_per_worker = callers_per_worker
        self.max_calls = max_calls
        self.retry_after_s = retry_after_s
        self.log_level = log_level
        self.answer_delay_s = answer_delay_s
        self.ack_timeout_s = ack_timeout_s
        self.identity_sources = identity_sources or []
        self.srtp = srtp
        self._secret = secrets.token_hex(32)
        self.on_event = on_event
        self.on_worker_lost = on_worker_lost
        self.workers: dict[int, WorkerHandle] = {s.worker_id: WorkerHandle(s) for s in specs}
        self.call_worker: dict[str, int] = {}
        self.socket_path = unix_socket_path(run_dir, "control.sock")
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self, timeout: float = 15.0) -> None:
        # each worker needs ~0.3 s of CPU to start (CPython + pjsua2): 130 of them on 2 cores take ~20 s
        timeout = max(timeout, 0.5 * len(self.workers))
        private_dir(self.run_dir)
        self.partial_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._on_connection, path=str(self.socket_path),
                                                       limit=1 << 20)
        self.socket_path.chmod(0o600)
        for h in self.workers.values():
            await self._spawn(h)
        try:
            await asyncio.wait_for(asyncio.gather(*(h.ready.wait() for h in self.workers.values())), timeout)
        except TimeoutError:
            dead = [h for h in self.workers.values() if not h.ready.is_set()]
            codes = {h.proc.returncode for h in dead if h.proc is not None}
            await self.stop()
            d = dead[0].spec
            why = "port in use?" if codes <= {None, 2} else f"exit codes {sorted(c for c in codes if c is not None)}"
            raise RuntimeError(f"media worker {d.worker_id} did not start on {d.sip_host}:{d.sip_port} ({why})") from None

    async def _spawn(self, h: WorkerHandle) -> None:
        s = h.spec
        h.ready.clear()
        h.started_at = time.time()
        h.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.worker", "--worker-id", str(s.worker_id), "--control",
            str(self.socket_path), "--sip-host", s.sip_host, "--sip-port", str(s.sip_port), "--rtp-port",
            str(s.rtp_port), "--rtp-range", str(s.rtp_range), "--callers", str(self.callers_per_worker),
            "--max-calls", str(self.max_calls), "--service-numbers", ",".join(self.service_numbers),
            "--partial-dir", str(self.partial_dir), "--retry-after", str(self.retry_after_s),
            "--log-level", self.log_level, "--answer-delay", str(self.answer_delay_s),
            "--ack-timeout", str(self.ack_timeout_s), "--identity-sources", ",".join(self.identity_sources),
            "--parent-pid", str(os.getpid()), "--srtp", self.srtp,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=None,
            env={**os.environ, "PYTHONUNBUFFERED": "1", ch.SECRET_ENV: self._secret})
        self._track(asyncio.create_task(self._watch(h, h.proc)))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, h: WorkerHandle, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._stopping or h.proc is not proc:
            return
        lost = set(h.calls)
        h.calls.clear()
        h.writer = None
        for call_id in lost:
            self.call_worker.pop(call_id, None)
        log.error("worker_died", extra={"worker_id": h.spec.worker_id, "exit_code": code, "lost_calls": len(lost)})
        try:
            await self.on_worker_lost(h.spec, lost)
        except Exception:
            log.exception("worker_loss_handling_failed")
        h.restarts += 1
        # Back off if a worker keeps dying at start, but bring it back.
        await asyncio.sleep(min(5.0, 0.2 * 2 ** min(h.restarts - 1, 5)) if time.time() - h.started_at < 5 else 0.1)
        if not self._stopping:
            await self._spawn(h)
            log.info("worker_restarted", extra={"worker_id": h.spec.worker_id, "restarts": h.restarts})

    async def stop(self, grace: float = 6.0) -> None:
        self._stopping = True
        for h in self.workers.values():
            if h.writer is not None:
                with contextlib.suppress(Exception):
                    h.writer.write(ch.encode(ch.Shutdown()))
        procs = [h.proc for h in self.workers.values() if h.proc and h.proc.returncode is None]
        if procs:
            _, pending = await asyncio.wait([asyncio.create_task(p.wait()) for p in procs], timeout=grace)
            for p in procs:
                if p.returncode is None:
                    p.kill()
            if pending:
                await asyncio.wait(pending, timeout=2)
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        self.socket_path.unlink(missing_ok=True)

    # -- channel -------------------------------------------------------------------------------
    def _peer_pid(self, writer: asyncio.StreamWriter) -> int | None:
        """The connecting process's pid if it runs as our uid and is a worker we spawned."""
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                 struct.calcsize("3i")))
        except (OSError, AttributeError):
            return None
        spawned = {h.proc.pid for h in self.workers.values() if h.proc is not None}
        return pid if uid == os.getuid() and pid in spawned else None

    def _admit(self, msg: ch.Hello, peer_pid: int | None) -> WorkerHandle | None:
        handle = self.workers.get(msg.worker_id)
        why = None
        if handle is None:
            why = "unknown worker id"
        elif peer_pid is None or handle.proc is None or handle.proc.pid != peer_pid or msg.pid != peer_pid:
            why = "not a process this node spawned for that worker"
        elif not hmac.compare_digest(msg.secret.encode(), self._secret.encode()):
            why = "wrong secret"
        if why:
            log.error("control_peer_refused", extra={"worker_id": msg.worker_id, "pid": peer_pid, "why": why})
            return None
        return handle

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handle: WorkerHandle | None = None
        peer_pid = self._peer_pid(writer)
        try:
            while line := await reader.readline():
                try:
                    msg = ch.decode_event(line)
                except ch.ProtocolError as e:
                    log.error("bad_worker_message", extra={"error": str(e)})
                    if handle is None:
                        break  # a peer that cannot even say hello in our protocol
                    continue
                if isinstance(msg, ch.Hello):
                    handle = self._admit(msg, peer_pid)
                    if handle is None:
                        break
                    handle.writer = writer
                    handle.ready.set()
                    log.info("worker_connected", extra={"worker_id": msg.worker_id, "pid": msg.pid})
                    continue
                if handle is None:
                    break  # anything before a valid hello: not one of ours
                wid = handle.spec.worker_id
                if isinstance(msg, ch.CallStarted):
                    handle.calls.add(msg.call_id)
                    self.call_worker[msg.call_id] = wid
                elif isinstance(msg, ch.CallEnded):
                    handle.calls.discard(msg.call_id)
                    self.call_worker.pop(msg.call_id, None)
                try:
                    self.on_event(wid, msg)
                except Exception:
                    log.exception("worker_event_handling_failed", extra={"worker_id": wid})
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def send(self, call_id: str, cmd: Any) -> bool:
        """Send a command to the worker holding ``call_id``; False when that worker is gone."""
        wid = self.call_worker.get(call_id)
        if wid is None:
            return False
        h = self.workers[wid]
        if h.writer is None or h.writer.is_closing():
            return False
        h.writer.write(ch.encode(cmd))
        return True

    # -- introspection -------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "workers": len(self.workers),
            "ready": sum(1 for h in self.workers.values() if h.ready.is_set()),
            "calls": len(self.call_worker),
            "restarts": sum(h.restarts for h in self.workers.values()),
            "capacity": len(self.workers) * self.callers_per_worker,
        }

    def pids(self) -> dict[int, int]:
        return {wid: h.proc.pid for wid, h in self.workers.items() if h.proc and h.proc.returncode is None}
