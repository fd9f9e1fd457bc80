"""Engines for SQLite (one laptop) and PostgreSQL (a cluster), tuned for the event writer."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from routing.store.models import metadata


def make_engine(url: str, *, sqlite_synchronous: str = "full", **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL (readers never block the writer) and a busy timeout.

    ``sqlite_synchronous``: ``full`` fsyncs the WAL at every commit (a committed batch survives a
    power cut), ``normal`` only at checkpoints (a process crash loses nothing, a power cut may lose
    the last commits).  The measured cost of each is in docs/DURABILITY.md.

    PostgreSQL connections are pre-pinged so that, after the database went away and came back,
    the first statement runs on a fresh connection instead of failing on a dead one.
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        # The driver's own (deferred) transactions are turned off and every transaction begins
        # IMMEDIATE: a deferred one that reads, then writes, cannot wait for a busy writer and
        # fails at once with "database is locked"; an immediate one waits up to busy_timeout.
        connect_args = {"isolation_level": None, **kwargs.pop("connect_args", {})}
        engine = create_async_engine(url, connect_args=connect_args, **kwargs)
        in_memory = u.database in (None, "", ":memory:")
        synchronous = {"full": "FULL", "normal": "NORMAL"}[sqlite_synchronous.lower()]

        @event.listens_for(engine.sync_engine, "begin")
        def _begin_immediate(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            if not in_memory:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    opts: dict[str, Any] = {
        "pool_size": 5,
        "max_overflow": 5,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "pool_timeout": 10,
    }
    if u.get_backend_name() == "postgresql" and u.get_driver_name() == "asyncpg":
        opts["connect_args"] = {"timeout": 5, "command_timeout": 30}
    opts.update(kwargs)
    return create_async_engine(url, **opts)


async def create_schema(engine: AsyncEngine) -> None:
    """Create the routing tables if missing (tests, first start); production runs Alembic."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
