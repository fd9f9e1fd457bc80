"""routing authority (issue 14): the epoch row (fencing token) and the fenced seat offers

``routing_epoch`` starts with its one row at epoch 0, so the first elected leader gets epoch 1.

Revision ID: 0005_routing_authority
Revises: 0003_crash_safety
Create Date: 2026-11-30 06:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_routing_authority"
down_revision = "0003_crash_safety"
branch_labels = None
depends_on = None


def upgrade() -> None:
    epoch = op.create_table(
        "routing_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("leader_node", sa.String(length=64), nullable=True),
        sa.Column("elected_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_routing_epoch")),
    )
    op.bulk_insert(epoch, [{"id": 1, "epoch": 0, "leader_node": None, "elected_at": None}])
    op.create_table(
        "seat_offers",
        sa.Column("seat_id", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=True),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seat_id", name=op.f("pk_seat_offers")),
    )
    op.create_index("ix_seat_offers_state", "seat_offers", ["state"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_seat_offers_state", table_name="seat_offers")
    op.drop_table("seat_offers")
    op.drop_table("routing_epoch")
