"""Where each webhook-driven call stands, kept so that a restarted node continues it (issue 13).

A Twilio call's media lives at Twilio, not in our media workers: when the node restarts, the
caller is still on the line and Twilio's next webhook arrives at the restarted node.  The ingress
saves its journey snapshot (stage, step, the IVR's inputs, the pending seat offer and the replay
cache of TwiML answers; ``api.twilio.store``) here before it answers each webhook, and loads it back for a CallSid it
does not know.  A journey not ended and heard from recently counts as alive at start
(``in_progress``), so reconciliation keeps its queue place instead of closing it as lost.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from routing.store.bounds import bounded
from routing.store.models import journeys
from routing.store.projection import dialect_insert


class JourneyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def save(self, call_id: str, node_id: str, ingress: str, state: dict[str, Any],
                   ended: bool = False, now: float | None = None) -> None:
        now = time.time() if now is None else now
        row = bounded(journeys, {"call_id": call_id, "node_id": node_id, "ingress": ingress, "state": state,
                                 "updated_at": now, "ended_at": now if ended else None})
        async with self.engine.begin() as conn:
            ins = dialect_insert(conn, journeys)
            await conn.execute(ins.on_conflict_do_update(
                index_elements=["call_id"], set_={k: ins.excluded[k] for k in row if k != "call_id"}), row)

    async def load(self, call_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(journeys.c.state).where(journeys.c.call_id == call_id))).first()
        return dict(row[0]) if row is not None and row[0] else None

    async def in_progress(self, node_id: str, now: float, waiting_s: float = 60.0,
                          talking_s: float = 4 * 3600.0) -> set[str]:
        """Calls of ``node_id`` still alive at their ingress: not ended, and heard from within
        ``waiting_s`` while in the IVR or the queue (their webhooks come every few seconds; one
        that came while the node was down made Twilio end the call), or within ``talking_s`` once
        bridged to a seat (no webhook until the conversation ends)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(journeys.c.call_id, journeys.c.state, journeys.c.updated_at).where(
                journeys.c.node_id == node_id, journeys.c.ended_at.is_(None),
                journeys.c.updated_at >= now - max(waiting_s, talking_s)))).all()
        alive = set()
        for call_id, state, updated_at in rows:
            window = talking_s if (state or {}).get("stage") == "talking" else waiting_s
            if float(updated_at) >= now - window:
                alive.add(call_id)
        return alive


__all__ = ["JourneyStore"]
