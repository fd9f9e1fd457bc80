"""The node's media workers: spawned and replaced by one side, spoken to by the other.

``WorkerProcesses`` (run by the node's supervisor, ``gateway.supervisor``) spawns the worker
processes and replaces a dead one on the same ports; it outlives the control process, so a control
crash leaves the workers, and the calls they carry, running.  ``WorkerPool`` (run by the control
process) is the control socket: it admits workers, routes commands to the worker holding a call,
and when a worker's connection ends while the node runs (the worker died) reports its calls as
lost (``lost_worker_failure``), the front door told to stop using it and to end its dialogs.

The control socket is private: 0600 in a 0700 directory, and a peer counts as a worker only if
the kernel says it runs as our uid and is a child of this node's supervisor (``SO_PEERCRED``,
then ``/proc/<pid>/status``) and its ``hello`` carries this start's secret (given in the worker's
environment, never its argv).  A worker that reconnects to a restarted control process lists the
calls it carries in its ``hello`` (as they were when the previous control process went away,
then the events of the gap: ``gateway.worker.gap``); the pool holds those events back until the
control process has taken the calls over (``dispatch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
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
    writer: asyncio.StreamWriter | None = None
    pid: int | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    calls: set[str] = field(default_factory=set)
    restarts: int = 0


@dataclass(slots=True)
class WorkerArgs:
    """How to run the workers of a node (the same for every incarnation of its control process)."""

    socket_path: Path
    partial_dir: Path
    service_numbers: list[str]
    callers_per_worker: int
    max_calls: int
    retry_after_s: int
    log_level: str
    answer_delay_s: float = 0.0
    ack_timeout_s: float = 5.0
    identity_sources: list[str] = field(default_factory=list)
    srtp: str = "off"


#: worker deaths the supervisor remembers for the next control process (``WorkerProcesses.deaths``)
MAX_DEATHS = 1000

EventSink = Callable[[int, Any], None]
LossSink = Callable[[WorkerSpec, set[str]], Awaitable[None]]


class WorkerProcesses:
    """Spawns the workers, replaces a dead one (with backoff when it keeps dying at start) and
    writes ``run/worker-<id>.pid``.  Runs in the node's supervisor: the workers are its children."""

    def __init__(self, specs: list[WorkerSpec], args: WorkerArgs, run_dir: Path, secret: str) -> None:
        self.specs = specs
        self.args = args
        self.run_dir = run_dir
        self.secret = secret
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts: dict[int, int] = {s.worker_id: 0 for s in specs}
        self.exit_codes: dict[int, int] = {}
        self._started_at: dict[int, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False
        #: the workers that died since the node started (newest last, at most ``MAX_DEATHS``); each
        #: says whether a control process was there to see it (``control_alive``, set by the supervisor)
        self.deaths: list[dict[str, Any]] = []
        self.control_alive: Callable[[], bool] = lambda: True

    def pids(self) -> dict[int, int]:
        return {wid: p.pid for wid, p in self.procs.items() if p.returncode is None}

    async def ensure(self) -> dict[int, int]:
        """Every worker running (spawned if not yet); their pids."""
        self.args.partial_dir.mkdir(parents=True, exist_ok=True)
        for spec in self.specs:
            p = self.procs.get(spec.worker_id)
            if p is None:
                await self._spawn(spec)
        return self.pids()

    async def _spawn(self, s: WorkerSpec) -> None:
        a = self.args
        self._started_at[s.worker_id] = time.time()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.worker", "--worker-id", str(s.worker_id), "--control",
            str(a.socket_path), "--sip-host", s.sip_host, "--sip-port", str(s.sip_port), "--rtp-port",
            str(s.rtp_port), "--rtp-range", str(s.rtp_range), "--callers", str(a.callers_per_worker),
            "--max-calls", str(a.max_calls), "--service-numbers", ",".join(a.service_numbers),
            "--partial-dir", str(a.partial_dir), "--retry-after", str(a.retry_after_s),
            "--log-level", a.log_level, "--answer-delay", str(a.answer_delay_s),
            "--ack-timeout", str(a.ack_timeout_s), "--identity-sources", ",".join(a.identity_sources),
            "--parent-pid", str(os.getpid()), "--srtp", a.srtp,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=None,
            env={**os.environ, "PYTHONUNBUFFERED": "1", ch.SECRET_ENV: self.secret})
        self.procs[s.worker_id] = proc
        with contextlib.suppress(OSError):
            (self.run_dir / f"worker-{s.worker_id}.pid").write_text(str(proc.pid))
        task = asyncio.create_task(self._watch(s, proc))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch(self, s: WorkerSpec, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self.stopping or self.procs.get(s.worker_id) is not proc:
            return
        self.exit_codes[s.worker_id] = code
        # issue 13: a control process started after this learns which calls died with the worker
        self.deaths.append({"worker_id": s.worker_id, "pid": proc.pid, "died_at": time.time(), "exit_code": code,
                            "control_alive": self.control_alive(), "reported": False})
        del self.deaths[:-MAX_DEATHS]
        self.run_dir.joinpath(f"worker-{s.worker_id}.pid").unlink(missing_ok=True)
        n = self.restarts[s.worker_id] = self.restarts[s.worker_id] + 1
        log.warning("worker_exited", extra={"worker_id": s.worker_id, "exit_code": code, "restarts": n})
        # Back off if a worker keeps dying at start, but bring it back.
        quick = time.time() - self._started_at.get(s.worker_id, 0.0) < 5
        await asyncio.sleep(min(5.0, 0.2 * 2 ** min(n - 1, 5)) if quick else 0.1)
        if not self.stopping:
            await self._spawn(s)
            log.info("worker_restarted", extra={"worker_id": s.worker_id, "restarts": n})

    async def stop(self, grace: float = 6.0) -> None:
        """The node stops: the workers end their calls (a ``Shutdown`` from the control process,
        or SIGTERM here) and exit; one that does not within ``grace`` is killed."""
        self.stopping = True
        procs = [p for p in self.procs.values() if p.returncode is None]
        if procs:
            waits = [asyncio.create_task(p.wait()) for p in procs]
            _, pending = await asyncio.wait(waits, timeout=0.5)
            for p in procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.terminate()
            if pending:
                _, pending = await asyncio.wait(pending, timeout=grace)
            for p in procs:
                if p.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        p.kill()
            if pending:
                await asyncio.wait(pending, timeout=2)
        for t in list(self._tasks):
            t.cancel()
        for s in self.specs:
            self.run_dir.joinpath(f"worker-{s.worker_id}.pid").unlink(missing_ok=True)


def parent_of(pid: int) -> int | None:
    """``PPid`` of a live process (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


class WorkerPool:
    """The control socket (control process side)."""

    def __init__(self, specs: list[WorkerSpec], *, run_dir: Path, callers_per_worker: int, secret: str,
                 spawner_pid: int, on_event: EventSink, on_worker_lost: LossSink,
                 socket_path: Path | None = None) -> None:
        self.specs = specs
        self.run_dir = run_dir
        self.callers_per_worker = callers_per_worker
        self._secret = secret
        self.spawner_pid = spawner_pid   # the node's supervisor: every worker is its child
        self.on_event = on_event
        self.on_worker_lost = on_worker_lost
        self.workers: dict[int, WorkerHandle] = {s.worker_id: WorkerHandle(s) for s in specs}
        self.call_worker: dict[str, int] = {}
        #: calls the workers carried when they connected (a restarted control process takes them over)
        self.live_at_hello: dict[str, tuple[int, ch.LiveCall]] = {}
        self.socket_path = socket_path or unix_socket_path(run_dir, "control.sock")
        self._server: asyncio.AbstractServer | None = None
        self._dispatching = asyncio.Event()
        self._closed: dict[int, asyncio.Event] = {}
        self.stopping = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def listen(self) -> None:
        private_dir(self.run_dir)
        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._on_connection, path=str(self.socket_path),
                                                       limit=1 << 20)
        self.socket_path.chmod(0o600)

    async def wait_ready(self, timeout: float = 15.0) -> bool:
        """Every worker said hello (their calls are in ``live_at_hello``); False on timeout."""
        # each worker needs ~0.3 s of CPU to start (CPython + pjsua2): 130 of them on 2 cores take ~20 s
        timeout = max(timeout, 0.5 * len(self.workers))
        try:
            await asyncio.wait_for(asyncio.gather(*(h.ready.wait() for h in self.workers.values())), timeout)
        except TimeoutError:
            return False
        return True

    def not_ready(self) -> list[WorkerSpec]:
        return [h.spec for h in self.workers.values() if not h.ready.is_set()]

    def dispatch(self) -> None:
        """From now on worker events reach ``on_event`` (held back until the control process
        knows the calls the workers carried at hello)."""
        self._dispatching.set()

    async def stop(self, grace: float = 6.0) -> None:
        """The node stops: each worker is told to shut down (it hangs up its calls and exits);
        waits for their connections to end."""
        self.stopping = True
        self._dispatching.set()  # a connection still waiting to be dispatched ends quietly
        for h in self.workers.values():
            if h.writer is not None:
                with contextlib.suppress(Exception):
                    h.writer.write(ch.encode(ch.Shutdown()))
        waits = [asyncio.create_task(e.wait()) for wid, e in self._closed.items()
                 if self.workers[wid].writer is not None]
        if waits:
            await asyncio.wait(waits, timeout=grace)
            for t in waits:
                t.cancel()
        for h in self.workers.values():
            if h.writer is not None:
                with contextlib.suppress(Exception):
                    h.writer.close()
        if self._server is not None:
            self._server.close()
        self.socket_path.unlink(missing_ok=True)

    # -- channel -------------------------------------------------------------------------------
    def _peer_pid(self, writer: asyncio.StreamWriter) -> int | None:
        """The connecting process's pid if it runs as our uid and is a child of our supervisor."""
        sock = writer.get_extra_info("socket")
        try:
            pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                 struct.calcsize("3i")))
        except (OSError, AttributeError):
            return None
        return pid if uid == os.getuid() and parent_of(pid) == self.spawner_pid else None

    def _admit(self, msg: ch.Hello, peer_pid: int | None) -> WorkerHandle | None:
        handle = self.workers.get(msg.worker_id)
        why = None
        if handle is None:
            why = "unknown worker id"
        elif peer_pid is None or msg.pid != peer_pid:
            why = "not a worker of this node (not a child of its supervisor)"
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
                    self._hello(handle, msg, writer)
                    continue
                if handle is None:
                    break  # anything before a valid hello: not one of ours
                if not self._dispatching.is_set():
                    await self._dispatching.wait()
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
            if handle is not None and handle.writer is writer:
                await self._connection_ended(handle)

    def _hello(self, h: WorkerHandle, msg: ch.Hello, writer: asyncio.StreamWriter) -> None:
        wid = h.spec.worker_id
        if h.pid is not None and h.pid != msg.pid:
            h.restarts += 1
        h.writer, h.pid = writer, msg.pid
        self._closed[wid] = asyncio.Event()
        for call in msg.calls:
            h.calls.add(call.call_id)
            self.call_worker[call.call_id] = wid
            self.live_at_hello[call.call_id] = (wid, call)
        h.ready.set()
        log.info("worker_connected", extra={"worker_id": wid, "pid": msg.pid, "calls": len(msg.calls),
                                            "ended_meanwhile": sum(c.ended for c in msg.calls),
                                            "replayed": msg.replayed})

    async def _connection_ended(self, h: WorkerHandle) -> None:
        """The worker's socket closed: at a stop, expected; otherwise the worker died (its
        supervisor starts another), and its calls are lost."""
        wid = h.spec.worker_id
        h.writer = None
        h.ready.clear()
        closed = self._closed.get(wid)
        if closed is not None:
            closed.set()
        if self.stopping:
            return
        lost = set(h.calls)
        h.calls.clear()
        for call_id in lost:
            self.call_worker.pop(call_id, None)
        log.error("worker_died", extra={"worker_id": wid, "pid": h.pid, "lost_calls": len(lost)})
        if not self._dispatching.is_set():
            await self._dispatching.wait()
        try:
            await self.on_worker_lost(h.spec, lost)
        except Exception:
            log.exception("worker_loss_handling_failed")

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
        return {wid: h.pid for wid, h in self.workers.items() if h.pid is not None and h.ready.is_set()}
