"""Rebuilding the ACD after a restart from the projections the writer keeps.

Seats come back in the status they had (a seat that was not ready stays not ready; it is not
silently made available) and waiting calls come back in their queue order with their original
enqueue time, so nobody loses their place because a node restarted.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from routing.acd import RestoredEntry, RestoredSeat, SeatSpec
from routing.events import Event, EventKind
from routing.status import SeatStatus
from routing.store.models import callbacks, calls, events, queue_entries, seats

log = logging.getLogger("routing.store.restore")


def _skills(raw: object) -> dict[str, int]:
    if isinstance(raw, dict):
        return {str(k): int(v or 0) for k, v in raw.items()}
    if isinstance(raw, list):
        return {str(k): 0 for k in raw}
    return {}


async def load_state(engine: AsyncEngine, node_id: str | None = None
                     ) -> tuple[list[RestoredSeat], list[RestoredEntry]]:
    """Seats and waiting calls.  With ``node_id`` (nodes sharing one database), only the calls that
    node logged come back: another node's callers are on that node's SIP legs, not ours."""
    stmt = select(queue_entries).order_by(queue_entries.c.priority, queue_entries.c.enqueued_at,
                                          queue_entries.c.call_id)
    if node_id is not None:
        stmt = (stmt.select_from(queue_entries.outerjoin(calls, calls.c.id == queue_entries.c.call_id))
                .where(or_(calls.c.node_id == node_id, calls.c.node_id.is_(None))))
    async with engine.connect() as conn:
        seat_rows = (await conn.execute(select(seats).order_by(seats.c.id))).mappings().all()
        entry_rows = (await conn.execute(stmt)).mappings().all()
    restored: list[RestoredSeat] = []
    for r in seat_rows:
        try:
            status = SeatStatus(r["status"])
        except ValueError:
            log.error("seat with an unknown stored status comes back not ready",
                      extra={"seat_id": r["id"], "status": r["status"]})
            status = SeatStatus.NOT_READY
        spec = SeatSpec(id=r["id"], contact=r["contact"] or "", skills=_skills(r["skills"]),
                        name=r["name"] or "", status=status)
        restored.append(RestoredSeat(spec=spec, status=status, reason=r["reason"], since=float(r["since"] or 0.0)))
    waiting = [
        RestoredEntry(call_id=r["call_id"], skill=r["skill"], priority=int(r["priority"]),
                      enqueued_at=float(r["enqueued_at"]), caller=r["caller"], info=dict(r["info"] or {}))
        for r in entry_rows
    ]
    return restored, waiting


async def load_callbacks(engine: AsyncEngine) -> list[dict[str, Any]]:
    """Callbacks not yet done, in their callers' original queue order (the ACD keeps them in memory).

    Each row also carries what the ACD needs to put it back: ``callback_id`` (``cb-<call id>``, the
    ACD's own naming), the call's ``priority`` and the ``info`` it was queued with.
    """
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(callbacks, calls.c.priority)
            .select_from(callbacks.outerjoin(calls, calls.c.id == callbacks.c.call_id))
            .where(callbacks.c.status != "done")
            .order_by(callbacks.c.enqueued_at, callbacks.c.call_id)
        )).mappings().all()
        ids = [r["call_id"] for r in rows]
        infos: dict[str, dict[str, Any]] = {}
        if ids:
            # the info the call was queued with; a callback of a lost call carries its own (the
            # IVR's answers and the reason), which wins
            for cid, kind, data in (await conn.execute(
                select(events.c.call_id, events.c.kind, events.c.data)
                .where(events.c.call_id.in_(ids),
                       events.c.kind.in_([EventKind.ENTERQUEUE.value, EventKind.CALLBACK.value]))
                .order_by(events.c.seq)
            )).all():
                info = (data or {}).get("info")
                if info and (kind == EventKind.ENTERQUEUE.value or (data or {}).get("action") == "queued"):
                    infos[cid] = dict(info)
    return [{**dict(r), "callback_id": f"cb-{r['call_id']}", "info": infos.get(r["call_id"], {})} for r in rows]


async def load_recent_events(engine: AsyncEngine, since: float, limit: int = 1_000_000) -> list[Event]:
    """The log since ``since`` in order, to refold the ACD's metrics after a restart."""
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(events.c.kind, events.c.at, events.c.call_id, events.c.seat_id, events.c.skill, events.c.data)
            .where(events.c.at >= since).order_by(events.c.seq).limit(limit)
        )).all()
    out: list[Event] = []
    for kind, at, call_id, seat_id, skill, data in rows:
        try:
            out.append(Event(EventKind(kind), float(at), call_id, seat_id, skill, dict(data or {})))
        except ValueError:  # a kind from a newer version: not ours to count
            continue
    return out
