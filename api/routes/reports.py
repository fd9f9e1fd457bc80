"""``GET /api/v1/reports/daily``: the centre's day as JSON, or CSV with ``Accept: text/csv``."""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response

from api.auth import get_ctx, supervisor
from api.context import ApiContext
from api.errors import unprocessable
from routing.daily_report import report_csv_rows

router = APIRouter(prefix="/api/v1/reports", tags=["reports"], dependencies=[Depends(supervisor)])


@router.get("/daily", responses={200: {"content": {"text/csv": {}}}, 404: {"description": "no store on this node"}})
async def daily(request: Request, date: str | None = Query(None, pattern=r"^\d{4}-\d{2}-\d{2}$",
                                                           description="YYYY-MM-DD in the centre's time zone; default today"),
                ctx: ApiContext = Depends(get_ctx)) -> Any:
    if ctx.reports is None:
        raise HTTPException(404, detail="no reports on this node")
    day = None
    if date is not None:
        try:
            day = dt.date.fromisoformat(date)
        except ValueError:
            raise unprocessable(("query", "date"), f"{date!r} is not a calendar date") from None
    report = await ctx.on_control(ctx.reports.daily, day)
    if "text/csv" in request.headers.get("accept", ""):
        buf = io.StringIO()
        csv.writer(buf).writerows(report_csv_rows(report))
        return Response(buf.getvalue(), media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="handoff122-{report["date"]}.csv"'})
    return report
