"""The routing authority's tables (issue 14): the epoch row and the seat offers it fences.

They live on their own ``MetaData`` so this foundation merges without touching the ACD's models;
the composition root (``gateway.schema``) lists it with the others.  The ACD event log they append
to is ``routing.store.models.events``.

- ``routing_epoch`` has exactly one row (``id = 1``).  Each newly elected routing authority
  increments ``epoch``: the number is its fencing token, so a deposed leader is recognised by an
  epoch that is no longer the current one.
- ``seat_offers`` is one row per seat: ``available`` -> ``offered`` (by the leader, stamped with its
  epoch) -> ``dialing`` (by the node that dials, only while the offer's epoch is current) ->
  ``available`` again when the call is released.  Compare-and-set on ``state`` makes a second offer
  for one seat impossible, whoever sends it.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Float, Index, Integer, MetaData, String, Table

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

routing_epoch = Table(
    "routing_epoch",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1: one row
    Column("epoch", BigInteger, nullable=False, default=0),
    Column("leader_node", String(64)),
    Column("elected_at", Float),
)

seat_offers = Table(
    "seat_offers",
    metadata,
    Column("seat_id", String(32), primary_key=True),
    Column("state", String(16), nullable=False, default="available"),  # available | offered | dialing
    Column("call_id", String(64)),
    Column("epoch", BigInteger),  # the epoch of the leader that made the offer
    Column("node_id", String(64)),  # the node that moved it to dialing
    Column("updated_at", Float, nullable=False, default=0.0),
    Column("attempt", Integer),  # the ACD's attempt number of the offer (0007): a late delivery of an
    # earlier attempt of the same call never takes a newer offer
    Index("ix_seat_offers_state", "state"),
)

#: Commands from the nodes to the routing authority (enqueue, seat answered, ring-no-answer, ...).
#: ``seq`` is allocated and committed in one order (inserts take a transaction-level advisory lock),
#: so the leader reads ``seq > cursor`` without ever skipping a row that commits late;
#: ``command_id`` makes a retry after a lost reply harmless (``ON CONFLICT DO NOTHING``).
routing_commands = Table(
    "routing_commands",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("command_id", String(96), nullable=False, unique=True),
    Column("node_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("call_id", String(64)),
    Column("args", JSON, nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_routing_commands_call_id", "call_id"),
)

#: The last command the routing authority applied *and* whose events are in the log (one row,
#: ``id = 1``): a new leader restores from the log and replays only what comes after it.
routing_command_cursor = Table(
    "routing_command_cursor",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("applied_seq", BigInteger, nullable=False, default=0),
    Column("epoch", BigInteger, nullable=False, default=0),
    Column("updated_at", Float),
)

#: What the routing authority tells one node about its calls (OFFER, RINGNOANSWER, ...), in order.
#: An OFFER row is written in the same transaction as the fenced ``claim_offer``.
routing_deliveries = Table(
    "routing_deliveries",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("node_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("call_id", String(64)),
    Column("seat_id", String(32)),
    Column("epoch", BigInteger, nullable=False),
    Column("data", JSON, nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_routing_deliveries_node_id", "node_id", "seq"),
)

#: How far each node has read its deliveries, so a restarted control process goes on where the
#: previous one stopped (an offer made while it was down is still dialed).
routing_node_cursor = Table(
    "routing_node_cursor",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False, default=0),
    Column("updated_at", Float, nullable=False, default=0.0),
)
