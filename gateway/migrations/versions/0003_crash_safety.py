"""crash safety (issue 13): the node that owns each recording; journeys of webhook-driven calls

A restarting node seals only the unclosed recordings of its own node id: the live recordings of
other nodes sharing the database are not touched.  Rows from before this revision have no owner
and are recovered by any node, as before.  ``journeys`` keeps where a Twilio call stands (journey
state and replay cache), so the next webhook after a restart continues it.

Revision ID: 0003_crash_safety
Revises: 0001
Create Date: 2026-11-30 04:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_crash_safety"
down_revision = "0002_tokens_audit"  # linear history: applied after the token and audit tables
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journeys",
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("ingress", sa.String(length=16), nullable=True),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_journeys")),
    )
    op.create_index("ix_journeys_node_id", "journeys", ["node_id"], unique=False)
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("node_id", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_recordings_node_id"), ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("recordings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recordings_node_id"))
        batch_op.drop_column("node_id")
    op.drop_index("ix_journeys_node_id", table_name="journeys")
    op.drop_table("journeys")
