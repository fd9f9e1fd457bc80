"""The API process of a node: spawned, watched, restarted; it dies with the node.

The control process keeps the channel (``api.link.ControlDesk``) and pushes the live views; the
child (``python -m gateway.api_process``, which runs ``api.process``) serves HTTP and WebSockets.
A child that dies is started again after ``RESTART_DELAY_S``; calls never notice, they live in
the control process and the media workers.  The child runs at niceness ``api_nice`` (10): when
the CPU is short, calls get it first.  Run directly, this module is the child's entry
point: it only sets up the node's log format and hands over to ``api.process``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from gateway.kamailio import exec_with_parent_death

log = logging.getLogger("gateway.api_process")

RESTART_DELAY_S = 0.5


class ApiProcessFailed(RuntimeError):
    """The API process could not start (its last error line says why)."""


class ApiProcess:
    """Spawns the API process for ``desk`` (``api.node.ApiDesk``) and keeps one running."""

    def __init__(self, desk: Any, log_level: str = "INFO", pid_file: Path | None = None, nice: int = 10) -> None:
        self.desk = desk
        self.nice = nice
        self.pid_file = pid_file
        self.log_level = log_level
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self._ready: asyncio.Future[str] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        desk.desk.on_ready = self._on_ready

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    # the node reads these like it read the in-thread API's
    @property
    def url(self) -> str:
        return str(self.desk.url)

    @property
    def signin_url(self) -> str | None:
        return self.desk.signin_url  # type: ignore[no-any-return]

    @property
    def twilio(self) -> Any:
        """The Twilio registry (it runs here, in the control process; the API process forwards)."""
        return self.desk.twilio

    def _on_ready(self, url: str) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(url)

    async def _spawn(self) -> asyncio.subprocess.Process:
        env = {**os.environ, "HANDOFF_API_PROCESS": self.desk.config.to_env(), "HANDOFF_LOG_LEVEL": self.log_level,
               "HANDOFF_API_NICE": str(self.nice)}
        return await asyncio.create_subprocess_exec(
            *exec_with_parent_death(sys.executable, "-m", "gateway.api_process"), env=env,
            stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)

    async def _relay(self, proc: asyncio.subprocess.Process, tail: list[str]) -> None:
        """The child's log lines go to the node's stderr; the last few are kept for a failed start."""
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode(errors="replace")
            sys.stderr.write(text)
            tail[:] = [*tail[-4:], text.strip()]

    async def _start_one(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self.proc = proc = await self._spawn()
        tail: list[str] = []
        relay = asyncio.create_task(self._relay(proc, tail))
        exited = asyncio.create_task(proc.wait())
        done, _ = await asyncio.wait({self._ready, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if self._ready not in done:
            exited.cancel()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await relay
            why = next((t for t in reversed(tail) if t), "no answer")
            raise ApiProcessFailed(f"the API process did not start on {self.url}: {why[:300]}")
        if self.pid_file is not None:
            self.pid_file.write_text(str(proc.pid))
        self._watch = asyncio.create_task(self._watch_one(proc, relay), name="api-process-watch")

    async def start(self, timeout: float = 20.0) -> None:
        await self._start_one(timeout)
        log.info("api_process_started", extra={"pid": self.pid, "api": self.url})

    async def _watch_one(self, proc: asyncio.subprocess.Process, relay: asyncio.Task[None]) -> None:
        code = await proc.wait()
        await relay
        if self._stopping:
            return
        self.restarts += 1
        log.warning("api_process_exited", extra={"pid": proc.pid, "code": code, "restarts": self.restarts})
        while not self._stopping:
            await asyncio.sleep(RESTART_DELAY_S)
            try:
                await self._start_one(20.0)
                log.info("api_process_restarted", extra={"pid": self.pid})
                return
            except ApiProcessFailed as e:
                log.error("api_process_restart_failed", extra={"error": str(e)[:300]})

    async def stop(self) -> None:
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._watch is not None:
            self._watch.cancel()
        await self.desk.stop()


def new_secret() -> str:
    return secrets.token_hex(16)


def main() -> int:
    from api.process import ApiProcessConfig, run
    from gateway.logs import configure_logging

    configure_logging(os.environ.get("HANDOFF_LOG_LEVEL", "INFO"), process_name="api")
    # Below the call path: on a busy node the control loop, the workers and the front door get
    # the CPU first, and the pages wait instead of the callers.
    with contextlib.suppress(OSError):
        os.nice(int(os.environ.get("HANDOFF_API_NICE", "10")))
    return run(ApiProcessConfig.from_env())


if __name__ == "__main__":
    sys.exit(main())
