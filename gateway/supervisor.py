"""``handoff122 serve``: the node's supervisor, so that a control-process crash ends no call.

Process tree::

    handoff122 serve (supervisor: this module)       run/node.pid
     +- Kamailio (front door, own session)            run/kamailio.pid
     +- media worker 0..N-1 (pjsua2)                  run/worker-<id>.pid
     +- control process (the same command, asyncio)   run/control.pid
         +- API process                               run/api.pid

The supervisor owns the processes that carry calls: Kamailio and the media workers.  It spawns
them when the control process asks (once the control process has checked the configuration and
opened storage and the control socket) and replaces a worker that dies.  The control process
(IVR, ACD, database, events, API) is its child: if it dies by a signal or a crash it is started
again (with backoff); the workers keep their calls meanwhile and reconnect, and the new control
process takes those calls over (``gateway.node``).  SIGINT / SIGTERM stop the whole node: the
control process first (it ends every call, each with a reason, and shuts the workers down), then
the workers and Kamailio.  A control process that exits 0 (it was told to stop) stops the node
too; one that fails its first start (exit 2: it refused the configuration) ends it with its exit
code.

Every child gets a parent-death signal, so ``kill -9`` of the supervisor (the whole node) takes
them all down; the control process gets SIGKILL (a power cut: the next start reconciles).

The supervisor and its control process talk over a socket pair the control process inherits
(``HANDOFF_SUPERVISOR_FD``): one JSON line per request, one per answer.  ``LocalProcesses`` is the
same service run in-process, for a node that runs without a supervisor (``handoff122 demo``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from gateway import channel as ch
from gateway.kamailio import EdgePolicy, Kamailio, TlsListener, find_kamailio, private_dir
from gateway.local_sockets import unix_socket_path
from gateway.pool import WorkerArgs, WorkerProcesses, WorkerSpec
from gateway.settings import Settings

log = logging.getLogger("gateway.supervisor")

SUPERVISOR_FD_ENV = "HANDOFF_SUPERVISOR_FD"
SUPERVISOR_PID_ENV = "HANDOFF_SUPERVISOR_PID"
MAX_BACKOFF_S = 5.0


# -- what a node runs, from its settings (the supervisor and the control process agree) ------------
def edge_policy(s: Settings) -> EdgePolicy:
    return EdgePolicy(sip_realm=s.sip_realm, trunk_sources=s.trunk_sources, requests_per_s=s.source_requests_per_s,
                      source_max_calls=s.source_max_calls, invite_timeout_s=s.invite_timeout_s,
                      scanner_user_agents=s.scanner_user_agents)


def direct_mode(s: Settings) -> bool:
    """No Kamailio: one media worker on the node's SIP port."""
    return find_kamailio(s.kamailio) is None


def worker_specs(s: Settings) -> list[WorkerSpec]:
    rtp = s.first_rtp_port
    if direct_mode(s):
        return [WorkerSpec(0, s.sip_host, s.sip_port, rtp, s.rtp_ports_per_worker)]
    return [WorkerSpec(i, s.sip_host, s.first_worker_port + i, rtp + i * s.rtp_ports_per_worker,
                       s.rtp_ports_per_worker) for i in range(s.workers)]


def worker_log_level(s: Settings) -> str:
    # On a person's terminal the control process tells each call's story; the workers add
    # only their warnings, so the screen stays one line per event.
    human = os.environ.get("HANDOFF_LOG_FORMAT") == "human"
    return "WARNING" if human and s.log_level == "INFO" else s.log_level


def worker_args(s: Settings) -> WorkerArgs:
    from recordings.layout import PARTIAL_DIR

    return WorkerArgs(
        socket_path=unix_socket_path(s.data_dir / "run", "control.sock"), partial_dir=s.recordings_dir / PARTIAL_DIR,
        service_numbers=list(s.service_numbers), callers_per_worker=s.worker_callers, max_calls=s.worker_max_calls,
        retry_after_s=s.retry_after_s, log_level=worker_log_level(s), answer_delay_s=s.answer_delay_s,
        ack_timeout_s=s.ack_timeout_s, identity_sources=edge_policy(s).trusted_networks(s.sip_host), srtp=s.srtp)


def front_door(s: Settings) -> Kamailio | None:
    """The node's Kamailio (None in direct mode).  The supervisor starts it; the control process
    builds the same object only to speak JSON-RPC to it."""
    binary = find_kamailio(s.kamailio)
    if binary is None:
        return None
    return Kamailio(binary, s.data_dir / "run" / "kamailio", host=s.sip_host, port=s.sip_port,
                    service_numbers=s.service_numbers, destinations=[w.destination for w in worker_specs(s)],
                    maxload=s.worker_callers, retry_after_s=s.retry_after_s, shm_mb=s.kamailio_shm_mb,
                    edge=edge_policy(s), tls=TlsListener(s.tls_port, s.tls_cert, s.tls_key)
                    if s.tls_port and s.tls_cert and s.tls_key else None)


# -- the processes that carry calls ----------------------------------------------------------------
class LocalProcesses:
    """Kamailio and the workers, spawned by this process (the supervisor, or a node without one)."""

    def __init__(self, settings: Settings, secret: str | None = None) -> None:
        self.settings = settings
        self.run_dir = settings.data_dir / "run"
        self.secret = secret or secrets.token_hex(32)
        self.workers = WorkerProcesses(worker_specs(settings), worker_args(settings), self.run_dir, self.secret)
        self.kamailio: Kamailio | None = None

    @property
    def spawner_pid(self) -> int:
        return os.getpid()

    async def status(self) -> dict[str, Any]:
        kam = self.kamailio.proc if self.kamailio is not None else None
        return {"workers": self.workers.pids(),
                "front_door": kam.pid if kam is not None and kam.returncode is None else None}

    async def ensure_workers(self) -> dict[int, int]:
        private_dir(self.run_dir)
        (self.run_dir / "node.pid").write_text(str(os.getpid()))
        return await self.workers.ensure()

    async def ensure_front_door(self) -> int | None:
        """Kamailio running (started if not yet); its pid.  ``RuntimeError`` says why it could not."""
        if self.kamailio is None:
            self.kamailio = front_door(self.settings)
            if self.kamailio is None:
                return None
        proc = self.kamailio.proc
        if proc is None or proc.returncode is not None:
            try:
                await self.kamailio.start()
            except FileNotFoundError as e:
                raise RuntimeError(str(e)) from None
            assert self.kamailio.proc is not None
            # issue 13: found and ended by the next start after a crash
            (self.run_dir / "kamailio.pid").write_text(str(self.kamailio.proc.pid))
        assert self.kamailio.proc is not None
        return self.kamailio.proc.pid

    async def stopping(self) -> None:
        """The node stops: no new caller (Kamailio goes first), and a worker that exits now (the
        control process shut it down) is not replaced."""
        self.workers.stopping = True
        if self.kamailio is not None:
            await self.kamailio.stop()

    async def exit_codes(self) -> dict[int, int]:
        return dict(self.workers.exit_codes)

    async def worker_deaths(self) -> list[dict[str, Any]]:
        """The media workers that died (and were replaced) since the node started: a control
        process started again learns from it which of the calls it cannot find died with their
        worker (``lost_worker_failure``) rather than with it (``gateway.reconcile``)."""
        out = [dict(d) for d in self.workers.deaths]
        for d in self.workers.deaths:
            d["reported"] = True
        return out

    async def ready(self) -> None:
        """Nothing to do when the node runs without a supervisor."""

    async def stop(self) -> None:
        await self.stopping()
        await self.workers.stop()


class SupervisorLink:
    """The control process's side: the same questions as ``LocalProcesses``, asked of the supervisor."""

    def __init__(self, fd: int, supervisor_pid: int, secret: str) -> None:
        self.fd = fd
        self.spawner_pid = supervisor_pid
        self.secret = secret
        self._io: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def _ask(self, op: str, timeout: float = 30.0) -> Any:
        async with self._lock:
            if self._io is None:
                self._io = await asyncio.open_unix_connection(sock=socket.socket(fileno=self.fd))
            reader, writer = self._io
            writer.write((json.dumps({"op": op}) + "\n").encode())
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            raise RuntimeError("the node's supervisor is gone")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer.get("result")

    async def status(self) -> dict[str, Any]:
        st = await self._ask("status")
        return {"workers": {int(k): v for k, v in st["workers"].items()}, "front_door": st["front_door"]}

    async def ensure_workers(self) -> dict[int, int]:
        return {int(k): v for k, v in (await self._ask("ensure_workers")).items()}

    async def ensure_front_door(self) -> int | None:
        return await self._ask("ensure_front_door")  # type: ignore[no-any-return]

    async def stopping(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            await self._ask("stopping")

    async def exit_codes(self) -> dict[int, int]:
        return {int(k): v for k, v in (await self._ask("exit_codes")).items()}

    async def worker_deaths(self) -> list[dict[str, Any]]:
        return list(await self._ask("worker_deaths"))

    async def ready(self) -> None:
        await self._ask("ready")

    async def stop(self) -> None:
        """The supervisor stops what it runs once this control process has exited."""


def link_from_env() -> SupervisorLink | None:
    """In a control process started by a supervisor: the link to it (and the workers' secret)."""
    fd = os.environ.pop(SUPERVISOR_FD_ENV, None)
    if fd is None:
        return None
    return SupervisorLink(int(fd), int(os.environ.pop(SUPERVISOR_PID_ENV, "0") or 0),
                          os.environ.pop(ch.SECRET_ENV, ""))


def die_with_supervisor(supervisor_pid: int) -> None:
    """SIGKILL when the supervisor dies (the whole node gone: like a power cut, reconciled at the
    next start); if it already died, leave at once."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if supervisor_pid and os.getppid() != supervisor_pid:
        os._exit(70)


# -- the supervisor --------------------------------------------------------------------------------
class Supervisor:
    def __init__(self, settings: Settings, argv: list[str]) -> None:
        self.settings = settings
        self.argv = argv
        self.procs = LocalProcesses(settings)
        self.run_dir = settings.data_dir / "run"
        self.control: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.ready_once = False
        # a worker that dies while no control process runs: the next one must learn of it
        self.procs.workers.control_alive = self._control_alive

    def _control_alive(self) -> bool:
        """The control process runs (not dead, nor a zombie this process has not reaped yet: a
        ``kill -9`` of both it and a worker is seen here in either order)."""
        proc = self.control
        if proc is None or proc.returncode is not None:
            return False
        try:
            return Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    async def _serve(self, sock: socket.socket) -> None:
        """Answer the control process's requests until it closes its end."""
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        try:
            while line := await reader.readline():
                try:
                    op = json.loads(line)["op"]
                    fn = {"status": self.procs.status, "ensure_workers": self.procs.ensure_workers,
                          "ensure_front_door": self.procs.ensure_front_door,
                          "stopping": self.procs.stopping, "exit_codes": self.procs.exit_codes,
                          "worker_deaths": self.procs.worker_deaths,
                          "ready": self._ready}[op]
                    result = await fn()
                    if op == "ensure_workers" and self.control is not None:
                        (self.run_dir / "control.pid").write_text(str(self.control.pid))
                    answer: dict[str, Any] = {"result": result}
                except Exception as e:
                    answer = {"error": str(e)[:500]}
                writer.write((json.dumps(answer) + "\n").encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _ready(self) -> None:
        """The control process is serving: from now on its death is a crash to recover from."""
        self.ready_once = True

    async def _spawn_control(self) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
        mine, theirs = socket.socketpair()
        env = {**os.environ, SUPERVISOR_FD_ENV: str(theirs.fileno()), SUPERVISOR_PID_ENV: str(os.getpid()),
               ch.SECRET_ENV: self.procs.secret}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", *self.argv, pass_fds=[theirs.fileno()], env=env,
            stdin=asyncio.subprocess.DEVNULL)
        theirs.close()
        return proc, asyncio.create_task(self._serve(mine))

    async def run(self, stop: asyncio.Event) -> int:
        code = 0
        failures = 0
        while True:
            started = time.monotonic()
            self.control, served = await self._spawn_control()
            exited = asyncio.create_task(self.control.wait())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():
                stopping.cancel()
                await self._stop_control(exited)
                served.cancel()
                break
            stopping.cancel()
            served.cancel()
            code = self.control.returncode or 0
            if code == 0:
                break  # the control process was told to stop: so is the node
            if code > 0 and not self.ready_once:
                break  # failed its first start (exit 2: refused the configuration, said why in one line)
            failures = failures + 1 if time.monotonic() - started < 10 else 1
            delay = min(MAX_BACKOFF_S, 0.25 * 2 ** (failures - 1))
            self.restarts += 1
            log.error("control_process_died", extra={"exit_code": code, "pid": self.control.pid,
                                                     "restarts": self.restarts, "restart_in_s": delay,
                                                     "workers": len(self.procs.workers.pids())})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                code = 0
                break
        await self.procs.stop()
        if self.run_dir.is_dir():
            for name in ("control.pid", "kamailio.pid", "node.pid"):
                (self.run_dir / name).unlink(missing_ok=True)
        return code

    async def _stop_control(self, exited: asyncio.Task[int], grace: float = 30.0) -> None:
        """The control process ends every call (each with a reason) and shuts the workers down."""
        proc = self.control
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), grace)
        except TimeoutError:
            log.error("control_process_stuck", extra={"pid": proc.pid})
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await exited


async def supervise(settings: Settings, argv: list[str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C and SIGTERM stop the whole node
        loop.add_signal_handler(sig, stop.set)
    return await Supervisor(settings, argv).run(stop)


def supervised() -> bool:
    """This process is a control process started by a supervisor."""
    return bool(os.environ.get(SUPERVISOR_FD_ENV))


def run_serve(settings: Settings) -> int:
    """``handoff122 serve``: the supervisor (which starts the control process, ``gateway.node``)."""
    from gateway.logs import configure_logging, resolve_format

    fmt = resolve_format(settings.log_format)
    os.environ["HANDOFF_LOG_FORMAT"] = fmt  # the control process and the workers, on the same terminal, write alike
    # on a person's terminal the first screen is the control process's banner: only warnings here
    level = "WARNING" if fmt == "human" and settings.log_level == "INFO" else settings.log_level
    configure_logging(level, process_name="supervisor", fmt=fmt)
    return asyncio.run(supervise(settings, sys.argv[1:]))


__all__ = ["LocalProcesses", "Supervisor", "SupervisorLink", "direct_mode", "edge_policy", "front_door",
           "link_from_env", "run_serve", "supervised", "worker_args", "worker_specs"]
