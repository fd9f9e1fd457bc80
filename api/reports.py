"""The day's figures read from the event log: ``GET /api/v1/reports/daily`` and the dashboard.

A day is a calendar day in the centre's time zone (``report_timezone``, default Asia/Shanghai):
a 122 centre reports its own day, not UTC's.  The fold itself is ``routing.daily_report``; this
module only reads the day's events (and the dispositions recorded up to a day later, for calls
that ended just before midnight) on the control loop's engine.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from routing.daily_report import OutcomePolicy, daily_report
from routing.events import Event, EventKind
from routing.store.models import events as events_table

#: How long after the day a disposition still counts for it (a seat's wrap-up across midnight).
LATE_DISPOSITION_S = 86400.0


class DailyReports:
    def __init__(self, engine: AsyncEngine, policy: OutcomePolicy, service_level_s: float,
                 timezone: str = "Asia/Shanghai", clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.policy = policy
        self.service_level_s = service_level_s
        self.zone = ZoneInfo(timezone)
        self.clock = clock

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), self.zone).date()

    def bounds(self, day: dt.date) -> tuple[float, float]:
        start = dt.datetime.combine(day, dt.time(), self.zone)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), self.zone)
        return start.timestamp(), end.timestamp()

    async def daily(self, day: dt.date | None = None) -> dict[str, Any]:
        day = day or self.today()
        start, end = self.bounds(day)
        t = events_table
        q = (sa.select(t.c.kind, t.c.at, t.c.call_id, t.c.seat_id, t.c.skill, t.c.data)
             .where(t.c.at >= start, t.c.at < end + LATE_DISPOSITION_S)
             .where(sa.or_(t.c.at < end, t.c.kind == EventKind.DISPOSITION.value))
             .order_by(t.c.at, t.c.seq))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        known = {k.value for k in EventKind}
        evs = [Event(EventKind(r["kind"]), float(r["at"]), r["call_id"], r["seat_id"], r["skill"], dict(r["data"] or {}))
               for r in rows if r["kind"] in known]
        report = daily_report(evs, day.isoformat(), self.policy, self.service_level_s, start, end)
        report["timezone"] = str(self.zone)
        return report
