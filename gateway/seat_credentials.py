"""Seat phones' digest credentials set through the admin API: stored as HA1 only, merged with the seats file.

``PUT /api/v1/seats/{id}/credentials`` hashes a password into ``md5(username:realm:password)`` in the
API process; only that HA1 reaches the control process and this table (no password is ever stored,
logged or sent on).  One row per seat:

- ``username`` and ``ha1`` set: the seat's phone registers with these, whatever the seats file says;
- both NULL: the credentials were removed (``DELETE``): the seat's phone may not register, even if
  the seats file gives it a ``register:``.  No row: the seats file decides.

So the database wins over the seats file, in both directions, and a removal survives a restart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from routing.acd import SeatSpec
from routing.status import SeatStatus

metadata = sa.MetaData(naming_convention={"pk": "pk_%(table_name)s", "uq": "uq_%(table_name)s_%(column_0_name)s"})

seat_credentials = sa.Table(
    "seat_credentials",
    metadata,
    sa.Column("seat_id", sa.String(32), primary_key=True),
    sa.Column("username", sa.String(64), nullable=True, unique=True),
    sa.Column("ha1", sa.String(32), nullable=True),   # md5(username:realm:password); NULL: removed
    sa.Column("updated_at", sa.Float, nullable=False),
)


@dataclass(frozen=True, slots=True)
class StoredCredentials:
    seat_id: str
    username: str | None
    ha1: str | None

    @property
    def removed(self) -> bool:
        return self.ha1 is None


class SeatCredentials:
    """The ``seat_credentials`` table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def all(self) -> dict[str, StoredCredentials]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(sa.select(seat_credentials))).mappings().all()
        return {r["seat_id"]: StoredCredentials(r["seat_id"], r["username"], r["ha1"]) for r in rows}

    async def put(self, seat_id: str, username: str | None, ha1: str | None) -> None:
        """Set (or, with None, None, remove) one seat's credentials; replaces any earlier row."""
        async with self.engine.begin() as conn:
            await conn.execute(seat_credentials.delete().where(seat_credentials.c.seat_id == seat_id))
            await conn.execute(seat_credentials.insert().values(seat_id=seat_id, username=username, ha1=ha1,
                                                                updated_at=time.time()))


def merge(specs: list[SeatSpec], stored: dict[str, StoredCredentials]) -> list[SeatSpec]:
    """The seats file's seats with the database's credentials applied (the database wins).

    A seat given credentials becomes a registered seat like one with ``register:`` in the file: no
    contact until its phone registers, and it starts logged out.  A seat whose credentials were
    removed keeps the file's fixed contact if it has one (else none: it cannot be made available).
    """
    out = []
    for spec in specs:
        row = stored.get(spec.id)
        if row is None:
            out.append(spec)
        elif row.removed:
            out.append(replace(spec, register_user=None, ha1=None))
        else:
            out.append(replace(spec, register_user=row.username, ha1=row.ha1, contact="",
                               status=SeatStatus.LOGGED_OUT))
    return out
