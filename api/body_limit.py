"""Request body limits enforced before anything reads the body (authentication included).

FastAPI reads a request's body before it runs the dependencies that authenticate, and the API
runs in the node's process: without a limit, anyone who can reach the port could make the node
buffer gigabytes.  This middleware is the outermost layer of the app:

- a ``Content-Length`` over the limit is answered 413 at once, before the route is even looked
  up, and the body is never read (a client that sent ``Expect: 100-continue`` never sends it);
- a body without ``Content-Length`` (chunked) is counted as it streams in and refused as soon as
  it passes the limit, so at most ``limit`` bytes (plus the server's read buffer) are ever held.

The 413 carries ``Connection: close`` so the server stops reading the rest of the body instead of
draining it.  Before that close, the rest of the body is read and dropped for a short while
(``LINGER_S``, at most ``LINGER_BYTES``): a socket closed with unread data answers with a TCP reset,
which can destroy the 413 before the client has read it.  Pure ASGI (no ``BaseHTTPMiddleware``):
nothing here buffers or copies the stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LINGER_S = 0.5
LINGER_BYTES = 8 * 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit.

    An ``HTTPException`` so that FastAPI's body parsing re-raises it unchanged; the app's handler
    for it (``reraise_body_too_large``) passes it on to the middleware, which answers it.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(413, detail=f"request body over {limit} bytes", headers={"Connection": "close"})


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return bytes(value)
    return None


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None  # the server refuses a malformed Content-Length itself


async def _drop_rest(receive: Receive) -> None:
    """Read and drop what the client is still sending, briefly (see the module's docstring)."""
    dropped = 0
    try:
        async with asyncio.timeout(LINGER_S):
            while dropped < LINGER_BYTES:
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return
                dropped += len(message.get("body", b""))
    except TimeoutError:
        return


async def _send_413(send: Send, receive: Receive, limit: int, linger: bool) -> None:
    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body, "more_body": True})
    if linger:
        await _drop_rest(receive)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class BodySizeLimit:
    """``limit_for(path)``: the largest body accepted on that path, in bytes."""

    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # A client waiting for "100 Continue" has sent nothing: reading would invite the body.
            expects = (_header(scope, b"expect") or b"").lower() == b"100-continue"
            await _send_413(send, receive, limit, linger=not expects)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_413(send, receive, limit, linger=True)


async def reraise_body_too_large(request: object, exc: Exception) -> None:
    """The app's exception handler for ``BodyTooLarge``: leave the answer to ``BodySizeLimit``."""
    raise exc
