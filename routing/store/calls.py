"""Reads and the few direct writes behind the API: call records, seats and the callback list.

Everything the call flow produces arrives through the event writer; the direct writes here are
the ones an operator or the gateway makes outside a decision (a seat configured through the API,
a recording that failed), so they do not need to ride the event batch.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from routing.acd import SeatSpec
from routing.store.bounds import bounded
from routing.store.models import callbacks, calls, events, seats
from routing.store.projection import dialect_insert

CALL_COLUMNS = frozenset(c.name for c in calls.columns) - {"id"}


def _ivr_view(row: dict[str, Any]) -> dict[str, Any]:
    ivr = dict(row.get("ivr") or {})
    ivr.setdefault("answers", [])
    ivr.setdefault("outcome", row.get("outcome"))
    ivr.setdefault("skill", row.get("skill"))
    ivr.setdefault("priority", row.get("priority"))
    return ivr


def _call_view(row: dict[str, Any], timeline: list[dict[str, Any]] | None) -> dict[str, Any]:
    out = {
        "id": row["id"], "caller": row["caller"], "callee": row["callee"], "ingress": row["ingress"],
        "node_id": row["node_id"], "started_at": row["started_at"], "answered_at": row["answered_at"],
        "ivr": _ivr_view(row), "skill": row["skill"], "priority": row["priority"],
        "queued_at": row["queued_at"], "seat_id": row["seat_id"], "seat_answered_at": row["seat_answered_at"],
        "ended_at": row["ended_at"], "end_reason": row["end_reason"], "ended_by": row["ended_by"],
        "recording_id": row["recording_id"], "flags": dict(row["flags"] or {}),
    }
    if timeline is not None:
        out["events"] = timeline
    return out


class CallRecords:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- calls ----------------------------------------------------------------------------------
    async def get(self, call_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(calls).where(calls.c.id == call_id))).mappings().first()
            if row is None:
                return None
            evs = (await conn.execute(
                select(events.c.kind, events.c.at, events.c.seat_id, events.c.skill, events.c.data)
                .where(events.c.call_id == call_id).order_by(events.c.seq)
            )).mappings().all()
        timeline = [{"kind": e["kind"], "at": e["at"], "seat_id": e["seat_id"], "skill": e["skill"],
                     "data": dict(e["data"] or {})} for e in evs]
        return _call_view(dict(row), timeline)

    async def list(self, limit: int = 50, before: float | None = None, skill: str | None = None,
                   outcome: str | None = None, seat_id: str | None = None, caller: str | None = None,
                   since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
        """Newest first by start time; ``before`` is the ``started_at`` of the last row of the previous
        page; ``outcome`` matches the end reason (``completed``, ``abandoned``) or the IVR's outcome."""
        conds = []
        if before is not None:
            conds.append(calls.c.started_at < before)
        if skill:
            conds.append(calls.c.skill == skill)
        if outcome:  # how the call ended (completed, abandoned, ...) or how the IVR decided
            conds.append(or_(calls.c.end_reason == outcome, calls.c.outcome == outcome))
        if seat_id:
            conds.append(calls.c.seat_id == seat_id)
        if caller:
            conds.append(calls.c.caller == caller)
        if since is not None:
            conds.append(calls.c.started_at >= since)
        if until is not None:
            conds.append(calls.c.started_at < until)
        stmt = (select(calls).where(and_(True, *conds))
                .order_by(calls.c.started_at.desc().nulls_last(), calls.c.id.desc())
                .limit(max(1, min(int(limit), 1000))))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [_call_view(dict(r), None) for r in rows]

    async def upsert_call(self, call_id: str, **fields: Any) -> None:
        """Set columns of a call's record, creating it if needed (gateway facts outside the event log)."""
        unknown = set(fields) - CALL_COLUMNS
        if unknown:
            raise ValueError(f"unknown call fields: {sorted(unknown)}")
        row = bounded(calls, {"id": call_id, **fields, "updated_at": time.time()})
        async with self.engine.begin() as conn:
            ins = dialect_insert(conn, calls)
            await conn.execute(ins.on_conflict_do_update(
                index_elements=["id"], set_={k: ins.excluded[k] for k in row if k != "id"}), row)

    async def set_flags(self, call_id: str, **flags: Any) -> dict[str, Any]:
        """Merge flags (e.g. ``recording_failed=True``) into a call's record; returns the new flags."""
        async with self.engine.begin() as conn:
            cur = (await conn.execute(select(calls.c.flags).where(calls.c.id == call_id))).first()
            if cur is None:
                merged = dict(flags)
                await conn.execute(calls.insert().values(id=call_id, flags=merged, updated_at=time.time()))
            else:
                merged = {**(cur[0] or {}), **flags}
                await conn.execute(update(calls).where(calls.c.id == call_id)
                                   .values(flags=merged, updated_at=time.time()))
        return merged

    # -- seats ----------------------------------------------------------------------------------
    async def save_seat(self, spec: SeatSpec, now: float | None = None) -> None:
        """Create or update a seat's configuration; a known seat keeps its stored status."""
        now = time.time() if now is None else now
        row = {"id": spec.id, "name": spec.name, "contact": spec.contact, "skills": dict(spec.skills),
               "status": str(spec.status), "reason": None, "since": now, "updated_at": now}
        async with self.engine.begin() as conn:
            ins = dialect_insert(conn, seats)
            await conn.execute(ins.on_conflict_do_update(
                index_elements=["id"],
                set_={"name": ins.excluded.name, "contact": ins.excluded.contact,
                      "skills": ins.excluded.skills, "updated_at": ins.excluded.updated_at}), row)

    async def delete_seat(self, seat_id: str) -> bool:
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(seats).where(seats.c.id == seat_id))
        return bool(res.rowcount)

    async def list_seats(self) -> list[dict[str, Any]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(seats).order_by(seats.c.id))).mappings().all()
        return [dict(r) for r in rows]

    # -- callbacks ------------------------------------------------------------------------------
    async def list_callbacks(self, status: str | None = "pending", skill: str | None = None,
                             limit: int = 200) -> list[dict[str, Any]]:
        """Callers to ring back, in their original queue order (enqueue time), as the issue asks."""
        stmt = select(callbacks)
        if status:
            stmt = stmt.where(callbacks.c.status == status)
        if skill:
            stmt = stmt.where(callbacks.c.skill == skill)
        stmt = stmt.order_by(callbacks.c.enqueued_at, callbacks.c.call_id).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).mappings().all()
        return [dict(r) for r in rows]

    async def complete_callback(self, call_id: str, seat_id: str | None, now: float | None = None) -> bool:
        """Close a callback outside the ACD (e.g. an operator cleaning the list); False if not open."""
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(callbacks).where(callbacks.c.call_id == call_id, callbacks.c.status != "done")
                .values(status="done", done_at=time.time() if now is None else now,
                        done_by=func.coalesce(callbacks.c.done_by, seat_id)))
        return bool(res.rowcount)
