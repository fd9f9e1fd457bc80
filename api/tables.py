"""The API's own tables: bearer tokens and the audit log.

They have their own ``MetaData`` so that the node's one Alembic environment (``gateway.schema``)
can migrate them next to the routing and recordings tables; ``api.tokens.metadata`` is this one.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("seat_id", sa.String(32), nullable=True),
    sa.Column("label", sa.String(200), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    # unix seconds; NULL never expires (only tokens that an operator asked for explicitly)
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
)

#: Who did what to what, for the actions a centre must be able to account for: a recording
#: downloaded, a seat's status changed by someone else, (later) a call monitored.  ``action`` is
#: a dotted name (``recording.download``), ``target`` what it was done to (a recording or seat
#: id), ``detail`` the rest (a byte range, the statuses from and to).
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("action", sa.String(32), nullable=False),
    sa.Column("actor_token_id", sa.Integer, nullable=True),
    sa.Column("actor_role", sa.String(16), nullable=True),
    sa.Column("actor_seat_id", sa.String(32), nullable=True),
    sa.Column("source_ip", sa.String(64), nullable=True),
    sa.Column("target", sa.String(200), nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
    sa.Column("node_id", sa.String(64), nullable=True),
    sa.Index("ix_audit_log_at", "at"),
    sa.Index("ix_audit_log_action_at", "action", "at"),
)
