"""The centre's day in figures, folded from the event log (pure: the caller reads the events).

Queue figures (offered, answered, abandoned, service level, ASA, AHT) come from the same
``routing.metrics.Metrics`` fold the live dashboard uses, so the report and the live figures can
never disagree on a definition.  Around it, the business figures the centre reports upwards:

* ``outcomes``: the last disposition recorded for each call (a seat may correct itself);
* ``accident_calls``: calls that reached a seat, less those whose disposition says they were not
  about an accident (``OutcomePolicy.not_accident``).  A call that reached a seat but has no
  disposition yet counts as an accident call that was *not* fast-handled: the figure can only be
  understated by a missing disposition, never flattered;
* ``fast_handled``: accident calls whose disposition is one of ``OutcomePolicy.fast_handled``
  (by default ``fast_handled_online`` and ``insurance_claim_opened``, per docs/DOMAIN.md);
* ``transfers``: journey moves whose cause starts with ``transfer`` (blind), or ``consult_completed`` (warm).

A call is counted in the skill whose seat answered it (its CONNECT), like ``answered``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from routing.events import Event, EventKind
from routing.metrics import Metrics

DEFAULT_OUTCOMES = ("fast_handled_online", "insurance_claim_opened", "police_on_scene", "query_answered",
                    "not_road_accident", "caller_unreachable")


@dataclass(frozen=True, slots=True)
class OutcomePolicy:
    """The configurable list of dispositions and what they mean for the headline figure."""

    codes: tuple[str, ...] = DEFAULT_OUTCOMES
    fast_handled: frozenset[str] = frozenset({"fast_handled_online", "insurance_claim_opened"})
    not_accident: frozenset[str] = frozenset({"query_answered", "not_road_accident"})


@dataclass(slots=True)
class _Business:
    accident_calls: int = 0
    fast_handled: int = 0
    undisposed: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    transfers: int = 0

    def share(self) -> float | None:
        return self.fast_handled / self.accident_calls if self.accident_calls else None


def _round(v: float | None, nd: int = 4) -> float | None:
    return None if v is None else round(v, nd)


def daily_report(events: Iterable[Event], date: str, policy: OutcomePolicy, service_level_s: float,
                 day_start: float, day_end: float) -> dict[str, Any]:
    """Figures for calls whose events fall in ``[day_start, day_end)``.

    ``events`` may also hold DISPOSITION events after ``day_end`` (a seat finishing the evening's
    last call after midnight): they are used only for calls that reached a seat on the day.
    """
    metrics = Metrics(service_level_s=service_level_s, interval_s=86400.0, keep_intervals=2)
    calls = 0
    answered_skill: dict[str, str] = {}
    disposition: dict[str, str] = {}
    transfers: Counter[str] = Counter()
    seen_skills: set[str] = set()
    for ev in sorted(events, key=lambda e: e.at):
        if ev.kind is EventKind.DISPOSITION:
            if ev.call_id and ev.data.get("code"):
                disposition[ev.call_id] = str(ev.data["code"])
            continue
        if not (day_start <= ev.at < day_end):
            continue
        metrics.observe(ev)
        if ev.skill and ev.kind in (EventKind.ENTERQUEUE, EventKind.CONNECT, EventKind.ABANDON):
            seen_skills.add(ev.skill)
        if ev.kind is EventKind.CALLSTART:
            calls += 1
        elif ev.kind is EventKind.CONNECT and ev.call_id and ev.skill:
            answered_skill.setdefault(ev.call_id, ev.skill)
        elif ev.kind is EventKind.JOURNEY and ev.call_id and (
                str(ev.data.get("cause", "")).startswith("transfer") or ev.data.get("cause") == "consult_completed"):
            transfers[ev.call_id] += 1

    business: dict[str, _Business] = {}
    for call_id, skill in answered_skill.items():
        b = business.setdefault(skill, _Business())
        code = disposition.get(call_id)
        if code is None:
            b.undisposed += 1
        else:
            b.outcomes[code] += 1
        if code not in policy.not_accident:
            b.accident_calls += 1
            if code in policy.fast_handled:
                b.fast_handled += 1
        b.transfers += transfers.get(call_id, 0)

    skills = sorted(seen_skills | set(business))
    rows = []
    for skill in skills:
        c = metrics.cumulative(skill)
        b = business.get(skill, _Business())
        rows.append(_row(skill, c.offered, c.answered, c.abandoned, c.service_level, c.asa_s, c.aht_s, b, policy))
    total = _totals(metrics, skills, business, policy)
    total["calls"] = calls
    return {"date": date, "day_start": day_start, "day_end": day_end, "service_level_s": service_level_s,
            "outcome_codes": list(policy.codes), "total": total, "skills": rows}


def _row(skill: str, offered: int, answered: int, abandoned: int, sl: float | None, asa: float | None,
         aht: float | None, b: _Business, policy: OutcomePolicy) -> dict[str, Any]:
    return {"skill": skill, "offered": offered, "answered": answered, "abandoned": abandoned,
            "service_level": _round(sl), "asa_s": _round(asa, 2), "aht_s": _round(aht, 2),
            "accident_calls": b.accident_calls, "fast_handled": b.fast_handled,
            "fast_handled_share": _round(b.share()), "undisposed": b.undisposed,
            "outcomes": {code: b.outcomes.get(code, 0) for code in _codes(policy, b.outcomes)},
            "transfers": b.transfers}


def _codes(policy: OutcomePolicy, seen: Counter[str]) -> list[str]:
    """The configured codes in their order, then any code recorded under an older list."""
    return list(policy.codes) + sorted(c for c in seen if c not in policy.codes)


def _totals(metrics: Metrics, skills: list[str], business: dict[str, _Business],
            policy: OutcomePolicy) -> dict[str, Any]:
    cs = [metrics.cumulative(s) for s in skills]
    answered = sum(c.answered for c in cs)
    sl_den = answered + sum(c.abandoned_after_sl for c in cs)
    handled = sum(c.handled for c in cs)
    b = _Business()
    for x in business.values():
        b.accident_calls += x.accident_calls
        b.fast_handled += x.fast_handled
        b.undisposed += x.undisposed
        b.outcomes.update(x.outcomes)
        b.transfers += x.transfers
    row = _row("total", sum(c.offered for c in cs), answered, sum(c.abandoned for c in cs),
               sum(c.answered_within_sl for c in cs) / sl_den if sl_den else None,
               sum(c.wait_answered_sum for c in cs) / answered if answered else None,
               sum(c.handle_sum for c in cs) / handled if handled else None, b, policy)
    row.pop("skill")
    return row


CSV_COLUMNS = ("date", "skill", "calls", "offered", "answered", "abandoned", "service_level", "asa_s", "aht_s",
               "accident_calls", "fast_handled", "fast_handled_share", "undisposed", "transfers")


def report_csv_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The report as CSV rows: a header, one row per skill, then the total (outcomes as columns)."""
    codes = list(report["total"]["outcomes"])
    header = [*CSV_COLUMNS, *(f"outcome_{c}" for c in codes)]
    out: list[list[Any]] = [header]
    for r in [*report["skills"], {**report["total"], "skill": "total"}]:
        base = [report["date"], r["skill"], r.get("calls", ""), *(r[k] for k in CSV_COLUMNS[3:])]
        out.append([("" if v is None else v) for v in base] + [r["outcomes"].get(c, 0) for c in codes])
    return out
