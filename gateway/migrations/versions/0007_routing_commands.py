"""routing commands (issue 14): the channel between the nodes and the elected routing authority

``routing_commands`` (nodes -> leader, read by sequence number), ``routing_command_cursor`` (one
row: the last command whose events are in the log), ``routing_deliveries`` (leader -> one node) and
``routing_node_cursor`` (how far each node has read its deliveries); ``seat_offers.attempt``.

Revision ID: 0007_routing_commands
Revises: 0006_seat_credentials
Create Date: 2026-11-30 11:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_routing_commands"
down_revision = "0006_seat_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("seat_offers", sa.Column("attempt", sa.Integer(), nullable=True))
    op.create_table(
        "routing_commands",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("command_id", sa.String(length=96), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=True),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_routing_commands")),
        sa.UniqueConstraint("command_id", name=op.f("uq_routing_commands_command_id")),
    )
    op.create_index("ix_routing_commands_call_id", "routing_commands", ["call_id"], unique=False)
    cursor = op.create_table(
        "routing_command_cursor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("applied_seq", sa.BigInteger(), nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_command_cursor")),
    )
    op.bulk_insert(cursor, [{"id": 1, "applied_seq": 0, "epoch": 0, "updated_at": None}])
    op.create_table(
        "routing_deliveries",
        sa.Column("seq", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=True),
        sa.Column("seat_id", sa.String(length=32), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_routing_deliveries")),
    )
    op.create_index("ix_routing_deliveries_node_id", "routing_deliveries", ["node_id", "seq"], unique=False)
    op.create_table(
        "routing_node_cursor",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_routing_node_cursor")),
    )


def downgrade() -> None:
    op.drop_table("routing_node_cursor")
    op.drop_index("ix_routing_deliveries_node_id", table_name="routing_deliveries")
    op.drop_table("routing_deliveries")
    op.drop_table("routing_command_cursor")
    op.drop_index("ix_routing_commands_call_id", table_name="routing_commands")
    op.drop_table("routing_commands")
    op.drop_column("seat_offers", "attempt")
