"""The routing service's tables, on their own ``MetaData``.

Other packages keep their own metadata objects; the composition root runs one Alembic environment
over all of them.  Types are the portable subset (String, Float, JSON, Integer) so the same models
run on SQLite (the laptop default) and PostgreSQL (the cluster).  Times are unix seconds as floats,
the same clock the ACD's decisions use, so a restart can hand them back without conversion.

``events`` is the append-only log (like app_queue's queue_log); ``seats``, ``calls``,
``queue_entries`` and ``callbacks`` are projections of it, kept up to date in the same transaction
as the log rows, so a restart can rebuild the ACD without replaying the whole history.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit sequence.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

seats = Table(
    "seats",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False, default=""),
    Column("contact", String(500), nullable=False, default=""),
    Column("skills", JSON, nullable=False, default=dict),  # {skill: penalty}
    Column("status", String(16), nullable=False, default="logged_out"),
    Column("reason", String(200)),
    Column("since", Float, nullable=False, default=0.0),
    Column("updated_at", Float, nullable=False, default=0.0),
)

calls = Table(
    "calls",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("caller", String(200)),
    Column("callee", String(200)),
    Column("ingress", String(16)),  # 'sip' | 'twilio'
    Column("node_id", String(64)),
    Column("started_at", Float),
    Column("answered_at", Float),
    Column("ivr", JSON),  # the IVR's decision record (answers, outcome, skill, priority)
    Column("outcome", String(64)),  # the IVR outcome's name, a column so lists can filter on it
    Column("skill", String(32)),
    Column("priority", Integer),
    Column("queued_at", Float),
    Column("seat_id", String(32)),
    Column("seat_answered_at", Float),
    Column("ended_at", Float),
    Column("end_reason", String(64)),
    Column("ended_by", String(32)),
    Column("recording_id", String(128)),
    Column("flags", JSON),
    Column("updated_at", Float, nullable=False, default=0.0),
    Index("ix_calls_started_at", "started_at"),
    Index("ix_calls_seat_id", "seat_id"),
)

queue_entries = Table(
    "queue_entries",
    metadata,
    Column("call_id", String(64), primary_key=True),
    Column("skill", String(32), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("enqueued_at", Float, nullable=False),
    Column("caller", String(200)),
    Column("info", JSON),
)

callbacks = Table(
    "callbacks",
    metadata,
    # The ACD names a callback ``cb-<call_id>``: one per abandoned call, so the call id is the key.
    Column("call_id", String(64), primary_key=True),
    Column("caller", String(200)),
    Column("skill", String(32)),
    Column("enqueued_at", Float, nullable=False),  # the original place in the queue: the list's order
    Column("abandoned_at", Float, nullable=False),
    Column("waited_s", Float),
    Column("status", String(16), nullable=False, default="pending"),  # pending | taken | done
    Column("done_at", Float),
    Column("done_by", String(32)),  # the intake seat that took it (set when taken)
    Index("ix_callbacks_status_enqueued", "status", "enqueued_at"),
)

events = Table(
    "events",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("call_id", String(64)),
    Column("seat_id", String(32)),
    Column("skill", String(32)),
    Column("data", JSON),
    Column("node_id", String(64)),
    Index("ix_events_call_id", "call_id"),
    Index("ix_events_at", "at"),
)

journeys = Table(
    "journeys",
    metadata,
    # Issue 13: where a call driven by webhooks (Twilio) stands, so that a restarted node continues
    # it at its next webhook.  ``state`` is the ingress's own snapshot (journey state + replay cache).
    Column("call_id", String(64), primary_key=True),
    Column("node_id", String(64)),
    Column("ingress", String(16)),
    Column("state", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("ended_at", Float),
    Index("ix_journeys_node_id", "node_id"),
)
