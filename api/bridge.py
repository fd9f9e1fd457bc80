"""Hop from the API's event loop onto the control loop.

The routing service, the stores and their database engines live on the control process's loop
(asyncpg connections belong to the loop that opened them).  The API runs uvicorn on its own
thread and loop so HTTP load cannot delay SIP; every call it makes into the node goes through a
``ControlLoopBridge``, which schedules the work on the control loop and awaits the result
without blocking the API loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ControlLoopBridge:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def _on_control_loop(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    async def run(self, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` (a coroutine function) on the control loop."""
        if self._on_control_loop():
            return await fn(*args, **kwargs)
        fut = asyncio.run_coroutine_threadsafe(_call_async(fn, args, kwargs), self.loop)
        return await asyncio.wrap_future(fut)

    async def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run a plain function (e.g. a read of the ACD's state) on the control loop's thread."""
        if self._on_control_loop():
            return fn(*args, **kwargs)
        fut = asyncio.run_coroutine_threadsafe(_call_sync(fn, args, kwargs), self.loop)
        return await asyncio.wrap_future(fut)


async def _call_async(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    return await fn(*args, **kwargs)


async def _call_sync(fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    return fn(*args, **kwargs)
