"""One Alembic environment over every package's tables (each package keeps its own MetaData)."""

from __future__ import annotations

from alembic import context

from gateway.schema import target_metadata

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through gateway.schema.upgrade_schema (it passes the connection)")
    context.configure(connection=connection, target_metadata=target_metadata(), render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


run_migrations_online()
