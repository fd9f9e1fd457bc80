"""Prometheus metrics, all prefixed ``handoff122_``.

They live with the call journey because the journey produces them; the API only serves them.
Two kinds:

* things that happen to calls (hand-off latency, ring time, SIP errors, IVR outcomes, call ends)
  are observed by ``journey.call.CallJourney`` (and the node, for calls refused before they
  started) as they happen, into a private ``CollectorRegistry`` (so importing it never pollutes
  the process-wide default registry, and tests can run several apps);
* the centre's current state (calls by state, queue sizes and waits, seats by status) is read from
  the routing service at scrape time by ``RealtimeCollector``, so it can never drift from the ACD.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from routing.status import SeatStatus

PREFIX = "handoff122_"
REGISTRY = CollectorRegistry(auto_describe=True)

HANDOFF_LATENCY = Histogram(
    PREFIX + "handoff_latency_seconds",
    "From the seat's 200 OK to the caller being bridged to it (the hand-off gap the caller hears), by skill.",
    ["skill"],
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0),
    registry=REGISTRY,
)
RING_TIME = Histogram(
    PREFIX + "seat_ring_seconds",
    "From the ACD's offer to the seat answering or the offer ending (outcome: answered, rona, busy, ...).",
    ["skill", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0),
    registry=REGISTRY,
)
SIP_ERRORS = Counter(
    PREFIX + "sip_errors",
    "SIP failures by leg (caller: refused before answer; seat: the seat answered with a failure) and final "
    "status code.  A caller's own CANCEL is not one (see calls_ended{end_reason=\"caller_cancelled\"}).",
    ["leg", "code"],
    registry=REGISTRY,
)
IVR_OUTCOMES = Counter(
    PREFIX + "ivr_outcomes",
    "IVR decisions by target skill and how the IVR ended (completed, operator, retries, ...).",
    ["skill", "outcome"],
    registry=REGISTRY,
)
CALLS_ENDED = Counter(
    PREFIX + "calls_ended",
    "Calls closed, by end reason (completed, abandoned, caller_hangup_in_ivr, caller_cancelled, ...).",
    ["end_reason"],
    registry=REGISTRY,
)


def observe_handoff_latency(seconds: float, skill: str = "") -> None:
    HANDOFF_LATENCY.labels(skill=skill).observe(max(0.0, seconds))


def observe_ring_time(seconds: float, skill: str, outcome: str) -> None:
    RING_TIME.labels(skill=skill, outcome=outcome).observe(max(0.0, seconds))


def count_sip_error(code: int | str, leg: str = "caller") -> None:
    SIP_ERRORS.labels(leg=leg, code=str(code)).inc()


def count_ivr_outcome(skill: str, outcome: str) -> None:
    IVR_OUTCOMES.labels(skill=skill, outcome=outcome).inc()


def count_call_ended(end_reason: str) -> None:
    CALLS_ENDED.labels(end_reason=end_reason or "unknown").inc()


_NAME_RE = re.compile(r"[^a-zA-Z0-9_]")


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    return None


class RealtimeCollector(Collector):
    """Turns one snapshot of the ACD (taken on the control loop) into metric families."""

    def __init__(self, queues: list[dict[str, Any]], seats: list[dict[str, Any]], node_id: str,
                 gateway: Mapping[str, float] | None = None) -> None:
        self.queues = queues
        self.seats = seats
        self.node_id = node_id
        self.gateway = dict(gateway or {})

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(PREFIX + "node_info", "This node.", labels=["node_id"])
        info.add_metric([self.node_id], 1.0)
        yield info

        by_status = {s.value: 0 for s in SeatStatus}
        for seat in self.seats:
            st = str(seat.get("status", ""))
            by_status[st] = by_status.get(st, 0) + 1
        seats = GaugeMetricFamily(PREFIX + "seats", "Seats by status.", labels=["status"])
        for st, n in sorted(by_status.items()):
            seats.add_metric([st], float(n))
        yield seats

        waiting_total = sum(int(_num(q.get("waiting")) or 0) for q in self.queues)
        calls = GaugeMetricFamily(PREFIX + "calls", "Calls in routing by state.", labels=["state"])
        calls.add_metric(["waiting"], float(waiting_total))
        calls.add_metric(["ringing"], float(by_status.get(SeatStatus.RESERVED.value, 0)))
        calls.add_metric(["on_call"], float(by_status.get(SeatStatus.ON_CALL.value, 0)))
        yield calls

        waiting = GaugeMetricFamily(PREFIX + "queue_waiting", "Calls waiting per skill.", labels=["skill"])
        longest = GaugeMetricFamily(PREFIX + "queue_longest_wait_seconds", "Longest current wait per skill.",
                                    labels=["skill"])
        sl = GaugeMetricFamily(PREFIX + "queue_service_level", "Share answered within the service level.",
                               labels=["skill"])
        asa = GaugeMetricFamily(PREFIX + "queue_asa_seconds", "Average speed of answer.", labels=["skill"])
        skill_seats = GaugeMetricFamily(PREFIX + "skill_seats", "Seats of a skill by status.",
                                        labels=["skill", "status"])
        counters = {
            k: CounterMetricFamily(PREFIX + "queue_" + k, f"Calls {k} per skill (since the node started).",
                                   labels=["skill"])
            for k in ("offered", "answered", "abandoned")
        }
        for q in self.queues:
            skill = str(q.get("skill", ""))
            waiting.add_metric([skill], _num(q.get("waiting")) or 0.0)
            longest.add_metric([skill], _num(q.get("longest_wait_s")) or 0.0)
            for key, fam in (("service_level", sl), ("asa_s", asa)):
                v = _num(q.get(key))
                if v is not None:
                    fam.add_metric([skill], v)
            for k, fam in counters.items():
                v = _num(q.get(k))
                if v is not None:
                    fam.add_metric([skill], v)
            for st, n in dict(q.get("seats_by_status") or {}).items():
                v = _num(n)
                if v is not None:
                    skill_seats.add_metric([skill, str(st)], v)
        yield waiting
        yield longest
        yield sl
        yield asa
        yield skill_seats
        yield from counters.values()

        for name, value in sorted(self.gateway.items()):
            v = _num(value)
            if v is None:
                continue
            yield GaugeMetricFamily(PREFIX + "gateway_" + _NAME_RE.sub("_", name), f"Gateway: {name}.", value=v)


def exposition(realtime: RealtimeCollector) -> bytes:
    """The scrape body: the observed metrics, then this scrape's snapshot of the ACD."""
    snapshot = CollectorRegistry(auto_describe=False)
    snapshot.register(realtime)
    return generate_latest(REGISTRY) + generate_latest(snapshot)
