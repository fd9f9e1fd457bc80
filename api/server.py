"""Serving the API on a thread: uvicorn on its own thread and event loop, beside the control loop.

``handoff122 serve`` runs the API in a process of its own instead (``api.process``): a thread
shares the control process's CPU time and GIL, so heavy HTTP load still delayed SIP set-up.  This
mode remains for tests and tools that build the app beside a routing service; the API reaches the
node through ``ControlLoopBridge`` hops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time

import uvicorn
from fastapi import FastAPI

from api.bridge import ControlLoopBridge

__all__ = ["ApiServer", "ApiServerError", "ControlLoopBridge"]

log = logging.getLogger(__name__)

#: Clients send the events socket one short auth message; nothing larger is ever needed.
WS_MAX_MESSAGE = 64 * 1024


class ApiServerError(RuntimeError):
    """The API could not start listening (port taken, bad host)."""


class ApiServer:
    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
        self.app = app
        self.host = host
        self.port = port
        self.config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level=log_level,
                                     access_log=False, lifespan="off", ws="websockets-sansio",
                                     ws_max_size=WS_MAX_MESSAGE, timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(self.config)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self.server.serve())
        except BaseException as e:  # SystemExit from uvicorn when the port is taken
            self._error = e
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self, timeout: float = 10.0) -> None:
        """Start serving and return once the socket listens (raises ApiServerError otherwise)."""
        self._thread = threading.Thread(target=self._run, name="api-uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise ApiServerError(f"API could not listen on {self.host}:{self.port}"
                                     + (f" ({self._error!r})" if self._error else ""))
            time.sleep(0.01)
        if self.port == 0:
            for server in self.server.servers:
                for sock in server.sockets:
                    self.port = sock.getsockname()[1]
                    break
        log.info("api listening", extra={"host": self.host, "port": self.port})

    async def start_async(self, timeout: float = 10.0) -> None:
        """``start`` from a coroutine on the control loop, without blocking that loop."""
        await asyncio.to_thread(self.start, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                self.server.force_exit = True
                self._thread.join(timeout)
            self._thread = None

    async def stop_async(self, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.stop, timeout)
