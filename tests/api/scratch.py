"""A clean database per test, cheaply: a fresh PostgreSQL schema inside the session's database.

The routing service restores seats, waiting calls, callbacks and metrics from the store when it
starts, so a test that reused an earlier test's tables would start with that test's seats in the
status they were left in.  Creating a whole database per test costs far more than a schema;
``search_path`` makes every unqualified table of the three metadata objects land in it.
SQLite URLs already name a file in the test's own ``tmp_path``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from routing.store.database import make_engine


@asynccontextmanager
async def scratch_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine as the node makes it, on tables no other test has touched; dropped afterwards."""
    if make_url(db_url).get_backend_name() != "postgresql":
        engine = make_engine(db_url)
        try:
            yield engine
        finally:
            await engine.dispose()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(db_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(db_url, connect_args={"timeout": 5, "command_timeout": 30,
                                               "server_settings": {"search_path": schema}})
    try:
        yield engine
    finally:
        await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()
