"""seat credentials (issue 15): seat phones' digest credentials set through the admin API, HA1 only

One row per seat; ``username``/``ha1`` NULL records a removal (it outlives the seats file's
``register:``).  No password column, ever.

Revision ID: 0006_seat_credentials
Revises: 0005_routing_authority
Create Date: 2026-11-30 08:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_seat_credentials"
down_revision = "0005_routing_authority"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "seat_credentials",
        sa.Column("seat_id", sa.String(length=32), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=True),
        sa.Column("ha1", sa.String(length=32), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seat_id", name=op.f("pk_seat_credentials")),
        sa.UniqueConstraint("username", name=op.f("uq_seat_credentials_username")),
    )


def downgrade() -> None:
    op.drop_table("seat_credentials")
