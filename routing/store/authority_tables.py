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

from sqlalchemy import BigInteger, Column, Float, Index, Integer, MetaData, String, Table

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
    Index("ix_seat_offers_state", "state"),
)
