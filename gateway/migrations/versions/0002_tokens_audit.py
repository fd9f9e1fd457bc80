"""API tokens expire and remember their last use; the audit log (issue 12)

Revision ID: 0002_tokens_audit
Revises: 0001
Create Date: 2026-11-30 05:00:00

Tokens made before this revision never expired; they now expire 30 days after the upgrade, so an
existing deployment keeps working while its operators replace them (``handoff122 token list``).
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0002_tokens_audit"
down_revision = "0001"
branch_labels = None
depends_on = None

LEGACY_TOKEN_TTL_S = 30 * 86400


def upgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expires_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("last_used_at", sa.Float(), nullable=True))
    tokens = sa.table("api_tokens", sa.column("expires_at", sa.Float()), sa.column("revoked_at", sa.Float()))
    op.execute(tokens.update().where(tokens.c.revoked_at.is_(None))
               .values(expires_at=time.time() + LEGACY_TOKEN_TTL_S))

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor_token_id", sa.Integer(), nullable=True),
        sa.Column("actor_role", sa.String(length=16), nullable=True),
        sa.Column("actor_seat_id", sa.String(length=32), nullable=True),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_at", ["at"], unique=False)
        batch_op.create_index("ix_audit_log_action_at", ["action", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_action_at")
        batch_op.drop_index("ix_audit_log_at")
    op.drop_table("audit_log")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("last_used_at")
        batch_op.drop_column("expires_at")
