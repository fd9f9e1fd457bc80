"""The API process: serves HTTP and WebSockets from pushed state, so no load on it reaches a call.

Spawned and supervised by the node (``gateway.api_process``), it dies with the node.  What it holds:

- the read model (``api.readmodel.LiveViews``), filled by the control process's pushes over the
  channel (``api.link``): seats, queues, callbacks, gateway gauges, and every ACD event;
- its own database engine: tokens, the audit log, call records and recordings are read (and
  tokens written) directly, never through the control process;
- commands (seat status, end wrap-up, admin seat edits, flow upload, callbacks, Twilio webhooks)
  go to the control process with ``ControlLink.forward`` and are awaited (503 after a bound).

If the channel closes (the control process stops), this process stops too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import uvicorn

from api.app import create_app
from api.audit import AuditLog
from api.context import ApiContext, SeatCredentialsDoor
from api.limits import ApiLimits
from api.link import ControlLink, RemoteFlowAdmin, RemoteObservedMetrics, RemoteRouting, RemoteTwilioCalls
from api.readmodel import LiveViews
from api.reports import DailyReports
from api.server import WS_MAX_MESSAGE
from api.signin import OneTimeSignIn, signin_router
from api.tokens import TokenStore
from api.twilio import TwilioContext, twilio_router
from routing.daily_report import OutcomePolicy

log = logging.getLogger("api.process")

#: The environment variable that carries the configuration (JSON; never argv: ``ps`` shows argv).
CONFIG_ENV = "HANDOFF_API_PROCESS"


@dataclass
class ApiProcessConfig:
    host: str
    port: int
    db_url: str
    recordings_dir: str
    channel: str
    secret: str = field(repr=False)
    node_id: str = "node-1"
    service_level_s: float = 20.0
    limits: dict[str, Any] = field(default_factory=dict)
    twilio_auth_token: str | None = field(default=None, repr=False)
    public_base_url: str | None = None
    signin_code: str | None = field(default=None, repr=False)
    token_command: str = "handoff122 token create --role supervisor"
    forward_timeout_s: float = 5.0
    #: The disposition list and the headline figure's rules (issue 15), and the report's day.
    dispositions: list[str] = field(default_factory=list)
    fast_handled_dispositions: list[str] = field(default_factory=list)
    not_accident_dispositions: list[str] = field(default_factory=list)
    report_timezone: str = "Asia/Shanghai"
    #: The realm seat phones' HA1s are computed for (``PUT /api/v1/seats/{id}/credentials``).
    sip_realm: str = "handoff122"

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ApiProcessConfig:
        return cls(**json.loads((environ or os.environ)[CONFIG_ENV]))


def reading_engine(url: str) -> Any:
    """The engine the API process reads call records and recordings with.

    On SQLite the node's engine begins every transaction IMMEDIATE (it takes the write lock), so
    that a read-then-write cannot fail at once; for pure reads that would make every history page
    a dashboard loads wait for, and hold up, the control process's event writer.  Here each SELECT
    runs in its own implicit read transaction instead: in WAL mode readers and the writer never
    wait for each other.  Other databases read with the node's engine settings.
    """
    from sqlalchemy import event
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from routing.store.database import make_engine

    if make_url(url).get_backend_name() != "sqlite":
        return make_engine(url)
    engine = create_async_engine(url, connect_args={"isolation_level": None})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA query_only=ON")
        cur.close()

    return engine


async def _signin(cfg: ApiProcessConfig, tokens: TokenStore) -> OneTimeSignIn | None:
    """The node's one-time link, unless a token exists by now (then it was used: a restarted API
    process must not bring a burnt code back to life)."""
    if cfg.signin_code is None or await tokens.list():
        return None
    return OneTimeSignIn(tokens, code=cfg.signin_code)


async def serve_api(cfg: ApiProcessConfig, stop: asyncio.Event | None = None) -> int:
    from recordings.catalog import Catalog
    from routing.store.calls import CallRecords
    from routing.store.database import make_engine

    stop = stop or asyncio.Event()
    engine = make_engine(cfg.db_url)       # tokens and the audit log (they write)
    reads = reading_engine(cfg.db_url)     # call records and recordings (read only)
    live = LiveViews()
    link = ControlLink(Path(cfg.channel), cfg.secret, live, timeout_s=cfg.forward_timeout_s)
    await link.connect()
    with contextlib.suppress(TimeoutError):  # the first push follows the hello at once
        async with asyncio.timeout(10):
            await live.ready.wait()
    tokens = TokenStore(engine)
    outcomes = OutcomePolicy(tuple(cfg.dispositions), frozenset(cfg.fast_handled_dispositions),
                             frozenset(cfg.not_accident_dispositions)) if cfg.dispositions else OutcomePolicy()
    ctx = ApiContext(routing=cast(Any, RemoteRouting(link, live)), calls=CallRecords(reads), tokens=tokens,
                     recordings=Catalog(reads, Path(cfg.recordings_dir)), flow_admin=RemoteFlowAdmin(link),
                     service_level_s=cfg.service_level_s, node_id=cfg.node_id, bridge=None,
                     gateway_stats=lambda: live.gateway, limits=ApiLimits(**cfg.limits),
                     audit=AuditLog(engine, node_id=cfg.node_id), live=live,
                     observed_metrics=RemoteObservedMetrics(link), outcomes=outcomes,
                     reports=DailyReports(reads, outcomes, cfg.service_level_s, cfg.report_timezone),
                     # live calls are the control process's: transfers, hold and monitoring go there
                     transfer=lambda req: link.forward("node", "transfer_call", req),
                     hold=lambda call_id, on, by: link.forward("node", "hold_call", call_id, on, by),
                     monitor=lambda req: link.forward("node", "monitor_call", req),
                     # seat phones' credentials: stored and loaded into Kamailio by the control process
                     credentials=SeatCredentialsDoor(
                         lambda seat_id, user, ha1: link.forward("node", "set_seat_credentials", seat_id, user, ha1),
                         lambda seat_id: link.forward("node", "remove_seat_credentials", seat_id), cfg.sip_realm),
                     consult=lambda call_id, complete, by: link.forward("node", "consult_call", call_id, complete, by))
    twilio = TwilioContext(routing=cast(Any, None), flow=cast(Any, lambda: None), auth_token=cfg.twilio_auth_token,
                           public_base_url=cfg.public_base_url or f"http://{cfg.host}:{cfg.port}",
                           node_id=cfg.node_id)
    app = create_app(ctx, ingress=[twilio_router(twilio, cast(Any, RemoteTwilioCalls(link))),
                                   signin_router(await _signin(cfg, tokens), cfg.token_command)])
    server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_config=None, log_level="warning",
                                           access_log=False, lifespan="off", ws="websockets-sansio",
                                           ws_max_size=WS_MAX_MESSAGE, timeout_graceful_shutdown=2))
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    if serving.done():
        await link.close()
        await engine.dispose()
        await reads.dispose()
        return 2
    link.say_ready(f"http://{cfg.host}:{cfg.port}")
    log.info("api_process_ready", extra={"pid": os.getpid(), "api": f"http://{cfg.host}:{cfg.port}"})
    gone = asyncio.create_task(link.closed.wait())
    asked = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, gone, asked}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    with contextlib.suppress(Exception):
        await asyncio.wait_for(serving, 5.0)
    gone.cancel()
    asked.cancel()
    await link.close()
    await engine.dispose()
    await reads.dispose()
    return 0


def run(cfg: ApiProcessConfig) -> int:
    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        return await serve_api(cfg, stop)

    return asyncio.run(main())
