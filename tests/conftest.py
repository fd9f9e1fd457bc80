"""Shared fixtures: real PostgreSQL, real Mosquitto, free loopback ports.

Every test run gets its own PostgreSQL database (created and dropped here), so parallel runs on
one machine never see each other's rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("HANDOFF_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
MQTT_URL = os.environ.get("HANDOFF_TEST_MQTT_URL", "mqtt://127.0.0.1:1883")


def free_port(kind: int = socket.SOCK_DGRAM, also_tcp: bool = True) -> int:
    """A loopback port free for UDP and TCP, for a SIP or HTTP listener of a test: above the
    kernel's ephemeral range where there is room (``gateway.bench.runner.free_block``), so no
    outgoing connection takes it before the listener binds it."""
    from gateway.bench.runner import free_port as listener_port

    return listener_port()


def sipp_media_port() -> int:
    """A SIPp ``-mp``: the port and the port + 2 (SIPp's video echo) free (``gateway.bench.runner``)."""
    from gateway.bench.runner import sipp_media_port as media_port

    return media_port()


def serve_port_args(sip_port: int | None = None, workers: int = 2) -> list[str]:
    """``serve`` flags that put a test node's SIP, worker and RTP ports on free loopback ports.

    A random SIP port is often above 55535, where the default RTP base (sip_port + 10000) would
    run past 65535 and the node refuses to start: every test node names its ranges.
    """
    from gateway.bench.runner import free_block, rtp_base_below_ephemeral

    sip = sip_port or free_port()
    return ["--sip-port", str(sip), "--workers", str(workers), "--worker-base-port", str(free_block(workers + 1)),
            "--rtp-base-port", str(rtp_base_below_ephemeral(sip, (workers + 1) * 40))]


async def _pg_admin(sql: str) -> None:
    import asyncpg

    dsn = PG_ADMIN_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def own_pg_database(prefix: str, *, migrated: bool = False) -> Iterator[str]:
    """A PostgreSQL database of its own (SQLAlchemy async URL), dropped afterwards.

    Cluster tests need one each: the routing authority's advisory lock is per database, so two
    tests sharing one would elect one leader between them."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    try:
        if migrated:
            asyncio.run(_migrate(url))
        yield url
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _migrate(url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from gateway.schema import upgrade_schema

    engine = create_async_engine(url)
    try:
        await upgrade_schema(engine)
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test session (SQLAlchemy async URL)."""
    name = f"handoff_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # the suite needs it: fail loudly, not skip silently
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {e}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'handoff.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Run a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'handoff.sqlite3'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def mqtt_url() -> str:
    return MQTT_URL
