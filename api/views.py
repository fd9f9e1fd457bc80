"""The ACD's views as the API serves them, and cumulative figures over a time range.

Reads of the ACD run on the control loop (``ApiContext.read_control``) so a view is never torn by
a decision happening at the same time.
"""

from __future__ import annotations

from typing import Any

from api.context import ApiContext
from routing.skills import SKILL_LABELS_ZH, SKILLS

RANGE_SCAN_LIMIT = 10_000


def _seat_row(seat: dict[str, Any]) -> dict[str, Any]:
    row = dict(seat)
    skills = row.get("skills") or {}
    if not isinstance(skills, dict):
        skills = dict.fromkeys(skills, 0)
    row["skills"] = skills
    row["status"] = str(row.get("status", ""))
    if "call_id" not in row:
        row["call_id"] = row.get("call")
    return row


async def seat_rows(ctx: ApiContext) -> list[dict[str, Any]]:
    seats = await ctx.read_control(ctx.routing.acd.seats_view, ctx.clock())
    return [_seat_row(s) for s in seats]


def _enqueued_at(record: dict[str, Any]) -> float | None:
    for ev in record.get("events") or ():
        if ev.get("kind") == "ENTERQUEUE":
            return float(ev["at"])
    started = record.get("started_at")
    return float(started) if started is not None else None


def cumulative_by_skill(records: list[dict[str, Any]], service_level_s: float) -> dict[str, dict[str, Any]]:
    """Offered/answered/abandoned, service level, ASA and AHT per skill for the given call records.

    A call counts for the skill the IVR routed it to; it is offered once it reached a queue, answered
    when a seat picked up, abandoned when the caller hung up first.  Service level is
    answered-within-threshold over offered calls that were answered or abandoned.
    """
    out: dict[str, dict[str, Any]] = {}
    waits: dict[str, list[float]] = {}
    talks: dict[str, list[float]] = {}
    for r in records:
        skill = (r.get("ivr") or {}).get("skill") or r.get("skill")
        if not skill:
            continue
        s = out.setdefault(skill, {"offered": 0, "answered": 0, "abandoned": 0, "answered_within_sl": 0})
        s["offered"] += 1
        answered_at = r.get("seat_answered_at")
        enq = _enqueued_at(r)
        if answered_at is not None:
            s["answered"] += 1
            wait = max(0.0, float(answered_at) - enq) if enq is not None else 0.0
            waits.setdefault(skill, []).append(wait)
            if wait <= service_level_s:
                s["answered_within_sl"] += 1
            if r.get("ended_at") is not None:
                talks.setdefault(skill, []).append(max(0.0, float(r["ended_at"]) - float(answered_at)))
        elif r.get("end_reason") == "abandoned":
            s["abandoned"] += 1
    for skill, s in out.items():
        closed = s["answered"] + s["abandoned"]
        s["service_level"] = s["answered_within_sl"] / closed if closed else None
        w, t = waits.get(skill), talks.get(skill)
        s["asa_s"] = sum(w) / len(w) if w else None
        s["aht_s"] = sum(t) / len(t) if t else None
    return out


def ranged_from_intervals(acd: Any, since: float | None, until: float | None) -> dict[str, dict[str, Any]] | None:
    """Sum the ACD's interval counters (``routing.metrics``) whose bucket starts in [since, until).

    Runs on the control loop.  None when the routing service keeps no intervals; the caller then
    falls back to the call records.
    """
    metrics = getattr(acd, "metrics", None)
    if metrics is None or not hasattr(metrics, "intervals"):
        return None
    from routing.metrics import SkillCounters

    lo = metrics.bucket_of(since) if since is not None else float("-inf")
    hi = until if until is not None else float("inf")
    sums: dict[str, SkillCounters] = {}
    for bucket, per_skill in metrics.intervals().items():
        if not lo <= bucket < hi:
            continue
        for skill, c in per_skill.items():
            total = sums.setdefault(skill, SkillCounters())
            for name in SkillCounters.__slots__:
                setattr(total, name, getattr(total, name) + getattr(c, name))
    return {skill: c.to_dict() for skill, c in sums.items()}


_EMPTY_RANGE = {"offered": 0, "answered": 0, "abandoned": 0, "answered_within_sl": 0, "service_level": None,
                "asa_s": None, "aht_s": None}


async def queue_rows(ctx: ApiContext, since: float | None = None, until: float | None = None) -> list[dict[str, Any]]:
    realtime = await ctx.read_control(ctx.routing.acd.queues_view, ctx.clock())
    by_skill = {str(q.get("skill")): dict(q) for q in realtime}
    if since is not None or until is not None:
        ranged = await ctx.read_control(ranged_from_intervals, ctx.routing.acd, since, until)
        if ranged is None:
            records = await ctx.on_control(ctx.calls.list, limit=RANGE_SCAN_LIMIT, since=since, until=until)
            ranged = cumulative_by_skill(records, ctx.service_level_s)
        for skill in SKILLS:
            row = by_skill.setdefault(skill, {"skill": skill})
            row.update(ranged.get(skill) or _EMPTY_RANGE)
            row["since"], row["until"] = since, until
    rows = []
    for skill in [*SKILLS, *sorted(set(by_skill) - set(SKILLS))]:
        row = by_skill.get(skill)
        if row is None:
            continue
        row.setdefault("label_zh", SKILL_LABELS_ZH.get(skill, skill))
        rows.append(row)
    return rows
