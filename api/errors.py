"""Errors raised by the routes, shaped like FastAPI's own so the OpenAPI schema stays true."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException

log = logging.getLogger("api")


def unprocessable(loc: tuple[str, ...], msg: str) -> HTTPException:
    """A 422 whose ``detail`` is a list of validation errors, like request-validation failures."""
    return HTTPException(422, detail=[{"loc": list(loc), "msg": msg, "type": "value_error"}])


#: Seconds a client is told to wait when the database is away (503 Retry-After).
DATABASE_RETRY_AFTER_S = 5


def database_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the database is away (refused, dropped, timed out, starting up), as
    opposed to refusing a request's content: that is a 503 to retry, not a 500."""
    from sqlalchemy import exc as sa

    if isinstance(exc, sa.OperationalError | sa.InterfaceError | sa.DisconnectionError | sa.TimeoutError):
        return True
    if isinstance(exc, sa.DBAPIError):
        if exc.connection_invalidated:
            return True
        orig = type(getattr(exc, "orig", None)).__name__
        return any(word in orig for word in ("Connection", "CannotConnect", "Shutdown", "Timeout"))
    return isinstance(exc, ConnectionError | TimeoutError)


def install_database_outage_handler(app: Any) -> None:
    """Issue 13: reads during a database outage answer 503 with Retry-After, never 500."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from sqlalchemy.exc import DBAPIError, DisconnectionError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    async def outage(request: Request, exc: Exception) -> JSONResponse:
        if not database_unavailable(exc):
            log.exception("api error", extra={"path": request.url.path, "method": request.method})
            return JSONResponse({"detail": "internal error"}, status_code=500)
        log.warning("api_database_unavailable", extra={"path": request.url.path,
                                                       "error": f"{exc.__class__.__name__}: {str(exc)[:200]}"})
        return JSONResponse({"detail": "the database is unavailable; retry shortly"}, status_code=503,
                            headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)})

    for kind in (DBAPIError, DisconnectionError, PoolTimeout, ConnectionError, TimeoutError):
        app.add_exception_handler(kind, outage)
