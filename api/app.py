"""The FastAPI application: REST, WebSocket events, /metrics, the dashboard and the seat console.

``create_app(ctx)`` is called by the node's composition root with everything the API needs
(``api.context.ApiContext``); the app itself holds no state of the centre.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.auth import get_ctx, principal
from api.body_limit import BodySizeLimit, BodyTooLarge, reraise_body_too_large
from api.context import ApiContext
from api.errors import install_database_outage_handler
from api.routes import (
    admin,
    audit,
    callbacks,
    calls,
    dispositions,
    events_ws,
    health,
    metrics,
    monitor,
    queues,
    recordings,
    reports,
    seats,
    transfers,
)
from api.schemas import Me
from api.throttle import BadTokenThrottle
from api.tokens import Principal
from routing.acd import RoutingError, UnknownCall, UnknownSeat

STATIC = Path(__file__).resolve().parent / "static"
log = logging.getLogger(__name__)

DESCRIPTION = """\
The 122 call-handoff gateway's API: seats, queues, calls, recordings, callbacks, administration
and live events.  Authenticate with `Authorization: Bearer <token>` (`handoff122 token create`).
Every error is JSON `{"detail": ...}`.
"""


def _routing_status(exc: RoutingError) -> int:
    # UnknownSeat, UnknownCall, UnknownSkill, UnknownCallback: the thing named in the path is not there.
    if isinstance(exc, UnknownSeat | UnknownCall) or exc.__class__.__name__.startswith("Unknown"):
        return 404
    return 409  # IllegalTransition, DuplicateId: the request conflicts with the current state


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(BodyTooLarge, reraise_body_too_large)

    @app.exception_handler(RoutingError)
    async def routing_error(request: Request, exc: RoutingError) -> JSONResponse:
        return JSONResponse({"detail": str(exc) or exc.__class__.__name__}, status_code=_routing_status(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api error", extra={"path": request.url.path, "method": request.method})
        return JSONResponse({"detail": "internal error"}, status_code=500)


def create_app(ctx: ApiContext, ingress: Iterable[APIRouter] = ()) -> FastAPI:
    """The app over ``ctx``; ``ingress`` adds routers with their own authentication (Twilio)."""
    app = FastAPI(title="handoff122", version="1", description=DESCRIPTION, docs_url="/docs",
                  redoc_url=None, openapi_url="/openapi.json")
    app.state.ctx = ctx
    app.state.bad_tokens = BadTokenThrottle(ctx.limits.auth_failures, ctx.limits.auth_window_s)
    _install_error_handlers(app)
    install_database_outage_handler(app)  # issue 13: 503 + Retry-After while the database is away
    # Outside the routes and their dependencies: a body over the limit is refused before anything
    # (authentication included) reads it.
    app.add_middleware(BodySizeLimit, limit_for=ctx.limits.body_limit_for)
    for module in (health, seats, queues, calls, dispositions, reports, transfers, monitor, recordings, callbacks, audit, admin, events_ws,
                   metrics):
        app.include_router(module.router)
    for router in ingress:
        app.include_router(router)

    @app.get("/api/v1/me", response_model=Me, tags=["auth"])
    async def me(who: Principal = Depends(principal), ctx: ApiContext = Depends(get_ctx)) -> Me:
        return Me(role=who.role.value, seat_id=who.seat_id, node_id=ctx.node_id)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC / "dashboard.html", media_type="text/html; charset=utf-8")

    @app.get("/seat", include_in_schema=False)
    async def seat_console() -> FileResponse:
        return FileResponse(STATIC / "seat.html", media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
