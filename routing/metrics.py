"""Per-skill counters, folded from the ACD's own events (formulas: docs/METRICS.md).

Metrics are a pure function of the event stream, never a second bookkeeping: the ACD feeds every
event it emits to ``Metrics.observe``, and after a restart the store can replay the event log into
a fresh ``Metrics`` and get the same figures.  Counting from events is also what keeps a re-queue
from counting twice: a call ENTERQUEUEs once, CONNECTs at most once, however many OFFERs it takes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from routing.events import Event, EventKind


@dataclass(slots=True)
class SkillCounters:
    offered: int = 0                 # calls that entered the centre at this skill (ENTERQUEUE)
    escalated_in: int = 0            # calls moved here from another skill
    escalated_out: int = 0           # calls moved from here to another skill
    attempts: int = 0                # OFFERs to seats (a call may need several)
    answered: int = 0
    answered_within_sl: int = 0
    abandoned: int = 0
    abandoned_after_sl: int = 0
    rona: int = 0
    seat_failures: int = 0
    callbacks: int = 0
    completed: int = 0
    handled: int = 0                 # wrap-up finished: talk + wrap-up known
    wait_answered_sum: float = 0.0
    talk_sum: float = 0.0
    handle_sum: float = 0.0

    @property
    def service_level(self) -> float | None:
        """answered within T / (answered + abandoned after T); None before the first such call."""
        denominator = self.answered + self.abandoned_after_sl
        return self.answered_within_sl / denominator if denominator else None

    @property
    def asa_s(self) -> float | None:
        return self.wait_answered_sum / self.answered if self.answered else None

    @property
    def aht_s(self) -> float | None:
        return self.handle_sum / self.handled if self.handled else None

    def to_dict(self) -> dict[str, object]:
        d: dict[str, object] = asdict(self)
        d["service_level"] = self.service_level
        d["asa_s"] = self.asa_s
        d["aht_s"] = self.aht_s
        return d


class Metrics:
    """Cumulative counters per skill, and the same counters per interval bucket (default 15 min)."""

    def __init__(self, service_level_s: float = 20.0, interval_s: float = 900.0, keep_intervals: int = 192,
                 service_level_by_skill: dict[str, float] | None = None) -> None:
        self.service_level_s = service_level_s
        #: a queue's own ``sl_threshold_s`` (seats file ``queues:``) wins over the node's
        self.service_level_by_skill = dict(service_level_by_skill or {})
        self.interval_s = interval_s
        self.keep_intervals = keep_intervals
        self._cumulative: dict[str, SkillCounters] = {}
        self._intervals: dict[float, dict[str, SkillCounters]] = {}

    # -- reads -----------------------------------------------------------------------------------
    def cumulative(self, skill: str) -> SkillCounters:
        c = self._cumulative.get(skill)
        if c is None:
            c = self._cumulative[skill] = SkillCounters()
        return c

    def bucket_of(self, at: float) -> float:
        return (at // self.interval_s) * self.interval_s

    def interval(self, skill: str, bucket: float) -> SkillCounters:
        """Counters of the interval starting at ``bucket`` (see ``bucket_of``); zeros if none."""
        return self._intervals.get(bucket, {}).get(skill) or SkillCounters()

    def intervals(self) -> dict[float, dict[str, SkillCounters]]:
        return self._intervals

    # -- folding ---------------------------------------------------------------------------------
    def observe_all(self, events: Iterable[Event]) -> None:
        for e in events:
            self.observe(e)

    def observe(self, e: Event) -> None:
        kind = e.kind
        if kind not in _COUNTED:
            return
        if kind is EventKind.ESCALATE:
            target = e.data.get("to") or e.data.get("also")
            if target:  # a priority raise moves the call to no other queue
                for c in self._both(e.data.get("from"), e.at):
                    c.escalated_out += 1
                for c in self._both(target, e.at):
                    c.escalated_in += 1
            return
        sl = self.service_level_by_skill.get(e.skill or "", self.service_level_s)
        for c in self._both(e.skill, e.at):
            _apply(c, e, sl)

    def _both(self, skill: str | None, at: float) -> tuple[SkillCounters, ...]:
        """The cumulative counters of ``skill`` and those of the interval ``at`` falls in."""
        if skill is None:
            return ()
        bucket = self.bucket_of(at)
        per_bucket = self._intervals.get(bucket)
        if per_bucket is None:
            per_bucket = self._intervals[bucket] = {}
            if len(self._intervals) > self.keep_intervals:
                del self._intervals[min(self._intervals)]
        per = per_bucket.get(skill)
        if per is None:
            per = per_bucket[skill] = SkillCounters()
        return (self.cumulative(skill), per)


_COUNTED = frozenset({
    EventKind.ENTERQUEUE, EventKind.ESCALATE, EventKind.OFFER, EventKind.RINGNOANSWER, EventKind.SEATFAILED,
    EventKind.CONNECT, EventKind.ABANDON, EventKind.COMPLETE, EventKind.CALLBACK, EventKind.SEATSTATUS,
})


def _apply(c: SkillCounters, e: Event, sl: float) -> None:
    kind, data = e.kind, e.data
    if kind is EventKind.ENTERQUEUE:
        c.offered += 1
    elif kind is EventKind.OFFER:
        c.attempts += 1
    elif kind is EventKind.RINGNOANSWER:
        c.rona += 1
    elif kind is EventKind.SEATFAILED:
        c.seat_failures += 1
    elif kind is EventKind.CONNECT:
        wait = float(data["wait_s"])
        c.answered += 1
        c.wait_answered_sum += wait
        if wait <= sl:
            c.answered_within_sl += 1
    elif kind is EventKind.ABANDON:
        c.abandoned += 1
        if float(data["wait_s"]) > sl:
            c.abandoned_after_sl += 1
    elif kind is EventKind.COMPLETE:
        c.completed += 1
        c.talk_sum += float(data["talk_s"])
    elif kind is EventKind.CALLBACK:
        if data.get("action") == "queued":
            c.callbacks += 1
    elif kind is EventKind.SEATSTATUS and "handle_s" in data:
        c.handled += 1
        c.handle_sum += float(data["handle_s"])
