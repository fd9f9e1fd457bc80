"""Bearer-token authentication and the role checks of the API (CONTRACT.md).

401 (with ``WWW-Authenticate: Bearer``) when there is no token or it is unknown, expired or
revoked; 429 (with ``Retry-After``) when the client's address presented too many bad tokens
lately (``api.throttle``); 403 when the token is valid but its role may not do this.  Admins can
do everything a supervisor can; a seat token acts only on its own seat.
"""

from __future__ import annotations

import math

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from api.context import ApiContext
from api.throttle import BadTokenThrottle
from api.tokens import Principal

bearer = HTTPBearer(auto_error=False, description="an API token from `handoff122 token create`")


def get_ctx(request: Request) -> ApiContext:
    return request.app.state.ctx


def client_ip(conn: HTTPConnection) -> str | None:
    """The peer's address as the server saw it (uvicorn honours X-Forwarded-For only from its
    ``forwarded_allow_ips``, 127.0.0.1 by default)."""
    return conn.client.host if conn.client else None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"})


class TooManyBadTokens(HTTPException):
    def __init__(self, retry_after_s: float) -> None:
        wait = max(1, math.ceil(retry_after_s))
        super().__init__(status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(wait)},
                         detail=f"too many bad tokens from this address; try again in {wait} s")
        self.retry_after_s = wait


async def resolve_token(ctx: ApiContext, token: str | None) -> Principal | None:
    if not token:
        return None
    return ctx.tokens.cached(token) or await ctx.on_control(ctx.tokens.resolve, token)


async def authenticate(conn: HTTPConnection, token: str | None) -> Principal:
    """The principal of ``token`` presented on ``conn`` (HTTP request or WebSocket), or raise
    ``HTTPException`` 401, or ``TooManyBadTokens`` when the address is being slowed down."""
    if not token:
        raise _unauthorized("missing bearer token")
    ctx: ApiContext = conn.app.state.ctx
    known = ctx.tokens.cached(token)
    if known is not None:
        return known
    throttle: BadTokenThrottle = conn.app.state.bad_tokens
    source = client_ip(conn) or "unknown"
    wait = throttle.retry_after(source)
    if wait is not None:
        raise TooManyBadTokens(wait)
    who = await ctx.on_control(ctx.tokens.resolve, token)
    if who is None:
        throttle.failed(source)
        raise _unauthorized("unknown, expired or revoked token")
    return who


async def principal(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    return await authenticate(request, creds.credentials if creds is not None else None)


async def supervisor(who: Principal = Depends(principal)) -> Principal:
    if not who.is_supervisor():
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="needs a supervisor or admin token")
    return who


async def admin(who: Principal = Depends(principal)) -> Principal:
    if who.role.value != "admin":
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="needs an admin token")
    return who


def may_act_on_seat(who: Principal, seat_id: str) -> None:
    """A seat token acts only on its own seat; supervisors and admins on any."""
    if who.is_supervisor() or who.seat_id == seat_id:
        return
    raise HTTPException(status.HTTP_403_FORBIDDEN, detail="a seat token acts only on its own seat")
