"""The database schema of a node: Alembic migrations over routing, recordings and api tables.

Each package owns its tables (and its ``MetaData``); the node, as the composition root, runs one
Alembic environment over all of them, so SQLite and PostgreSQL deployments upgrade the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def target_metadata() -> list[MetaData]:
    from api.tokens import metadata as api_metadata
    from gateway.seat_credentials import metadata as credentials_metadata
    from recordings.catalog import metadata as recordings_metadata
    from routing.store.authority_tables import metadata as authority_metadata
    from routing.store.models import metadata as routing_metadata

    return [routing_metadata, recordings_metadata, api_metadata, authority_metadata, credentials_metadata]


def alembic_config(connection: Any = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


async def upgrade_schema(engine: AsyncEngine, revision: str = "head") -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync_conn: command.upgrade(alembic_config(sync_conn), revision))


async def schema_drift(engine: AsyncEngine) -> list[Any]:
    """Differences between the migrated database and the models (empty when they agree)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    def _diff(sync_conn: Any) -> list[Any]:
        mc = MigrationContext.configure(sync_conn, opts={"compare_type": True})
        return list(compare_metadata(mc, target_metadata()))

    async with engine.connect() as conn:
        return await conn.run_sync(_diff)
