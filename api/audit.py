"""The audit log: who downloaded which recording, who changed another seat's status, who set or
removed a seat phone's credentials (never the password nor the HA1).

Written on the control loop (the engine's), before the audited thing happens where that is
possible: a recording is not served if its download could not be recorded.  Read by supervisors
through ``GET /api/v1/audit``.  The rows are generic (``action``, ``target``, ``detail``) so that
monitoring a call, later, is one more action rather than one more table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from api.tables import audit_log
from api.tokens import Principal

RECORDING_DOWNLOAD = "recording.download"
SEAT_STATUS = "seat.status"
CALL_MONITOR = "call.monitor"
SEAT_CREDENTIALS = "seat.credentials"


class AuditLog:
    def __init__(self, engine: AsyncEngine, node_id: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.node_id = node_id
        self.clock = clock

    async def record(self, action: str, who: Principal | None, target: str | None,
                     detail: dict[str, Any] | None = None, source_ip: str | None = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(audit_log.insert().values(
                at=self.clock(), action=action[:32],
                actor_token_id=who.token_id if who else None, actor_role=who.role.value if who else None,
                actor_seat_id=who.seat_id if who else None, source_ip=(source_ip or None) and source_ip[:64],
                target=None if target is None else target[:200], detail=detail, node_id=self.node_id))

    async def list(self, action: str | None = None, since: float | None = None, until: float | None = None,
                   target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        q = sa.select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc()).limit(limit)
        if action is not None:
            q = q.where(audit_log.c.action == action)
        if since is not None:
            q = q.where(audit_log.c.at >= since)
        if until is not None:
            q = q.where(audit_log.c.at < until)
        if target is not None:
            q = q.where(audit_log.c.target == target)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        return [_entry(r) for r in rows]


def _entry(r: Any) -> dict[str, Any]:
    return {"id": r["id"], "at": r["at"], "action": r["action"], "target": r["target"], "detail": r["detail"] or {},
            "actor": {"token_id": r["actor_token_id"], "role": r["actor_role"], "seat_id": r["actor_seat_id"]},
            "source_ip": r["source_ip"], "node_id": r["node_id"]}
