"""What the store says this node had in progress when it stopped, to compare with what is alive.

After a crash the projections still show calls waiting, seats reserved and call records open, but
the media of those calls (the caller's SIP leg in a media worker) may be gone.  ``in_progress``
reads what a node owned (its ``node_id``: nodes sharing one database never reconcile each other's
calls); ``routing.service`` decides from it, with the set of calls really alive, which calls are
lost.  Kept apart from ``restore`` so the rule "restore only what is alive" has one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from routing.events import EventKind
from routing.status import SeatStatus
from routing.store.models import calls, events, queue_entries, seats

#: The end reason of a call whose media died with the whole node (or its control process).
LOST_NODE_FAILURE = "lost_node_failure"
#: The end reason of a call whose media worker died.
LOST_WORKER_FAILURE = "lost_worker_failure"


@dataclass(frozen=True, slots=True)
class OpenCall:
    """A call record without an end, owned by the node."""

    call_id: str
    caller: str | None
    started_at: float | None
    ivr: dict[str, Any]
    skill: str | None
    priority: int | None
    queued_at: float | None
    seat_id: str | None
    seat_answered_at: float | None


@dataclass(slots=True)
class InProgress:
    open_calls: dict[str, OpenCall] = field(default_factory=dict)
    queued: set[str] = field(default_factory=set)              # call ids with a queue entry of ours
    seat_calls: dict[str, str] = field(default_factory=dict)   # reserved/on_call seat -> the call it was for
    foreign: dict[str, str] = field(default_factory=dict)      # seat busy with another node's open call -> that node

    def lost(self, alive: set[str] | frozenset[str]) -> set[str]:
        """Every call in progress here whose media is not among ``alive``."""
        return (set(self.open_calls) | self.queued) - set(alive)


async def in_progress(engine: AsyncEngine, node_id: str) -> InProgress:
    """Open call records, queue entries and busy seats of ``node_id`` (entries of calls with no
    owner come too, as ``load_state`` restores those)."""
    out = InProgress()
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(calls).where(calls.c.ended_at.is_(None), calls.c.node_id == node_id)
        )).mappings().all()
        for r in rows:
            out.open_calls[r["id"]] = OpenCall(
                call_id=r["id"], caller=r["caller"], started_at=r["started_at"],
                ivr=dict(r["ivr"] or {}) if isinstance(r["ivr"], dict) else {}, skill=r["skill"],
                priority=r["priority"], queued_at=r["queued_at"], seat_id=r["seat_id"],
                seat_answered_at=r["seat_answered_at"])
        q = (select(queue_entries.c.call_id)
             .select_from(queue_entries.outerjoin(calls, calls.c.id == queue_entries.c.call_id))
             .where(or_(calls.c.node_id == node_id, calls.c.node_id.is_(None))))
        out.queued = {r[0] for r in (await conn.execute(q)).all()}
        busy = (await conn.execute(select(seats.c.id).where(
            seats.c.status.in_([SeatStatus.RESERVED.value, SeatStatus.ON_CALL.value])))).scalars().all()
        for seat_id in busy:
            # the seat's last status change names the call it was reserved for / talking to
            last = (await conn.execute(
                select(events.c.call_id).where(events.c.seat_id == seat_id,
                                               events.c.kind == EventKind.SEATSTATUS.value)
                .order_by(events.c.seq.desc()).limit(1))).scalar()
            if last:
                out.seat_calls[seat_id] = last
                owner = (await conn.execute(select(calls.c.node_id).where(
                    calls.c.id == last, calls.c.ended_at.is_(None)))).scalar()
                if owner and owner != node_id:
                    out.foreign[seat_id] = owner
    return out


__all__ = ["LOST_NODE_FAILURE", "LOST_WORKER_FAILURE", "InProgress", "OpenCall", "in_progress"]
