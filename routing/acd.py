"""The ACD: a pure state machine over seats and waiting calls.  (Interface; being implemented.)

Every method takes an explicit ``now`` (unix seconds) and returns the ``Event`` list describing
the transitions it made, in order.  Nothing here does I/O or reads a clock, so the same decisions
run in tests, benchmarks, the SIP gateway and the Twilio ingress.  The caller persists and
publishes the events.

Timers belong to the ACD too: ``next_deadline()`` says when ``tick(now)`` must next be called
(ring timeout -> RINGNOANSWER, wrap-up end, escalation to another skill).  After every method the
ACD has already made any new offers (``OFFER`` events) that became possible.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from routing.events import Event
from routing.status import SeatStatus


class RoutingError(Exception):
    """Base of the ACD's refusals; the API maps them to 404/409."""


class UnknownSeat(RoutingError):
    pass


class UnknownCall(RoutingError):
    pass


class IllegalTransition(RoutingError):
    """A seat or call transition that the state machine does not allow (e.g. on_call -> reserved)."""


@dataclass(frozen=True, slots=True)
class SeatSpec:
    """A seat as configured (seats file / API).  ``skills`` maps skill -> penalty (0 = first choice)."""

    id: str
    contact: str
    skills: dict[str, int]
    name: str = ""
    status: SeatStatus = SeatStatus.LOGGED_OUT


@dataclass(frozen=True, slots=True)
class SkillPolicy:
    """Per-skill routing policy (like a TaskRouter workflow target)."""

    wrap_up_s: float = 15.0
    escalate_after_s: float | None = None  # waiting longer than this moves the call ...
    escalate_to: str | None = None         # ... to this skill's queue (keeping its enqueue time)


@dataclass(slots=True)
class AcdConfig:
    ring_timeout_s: float = 20.0
    rona_not_ready_after: int = 1          # consecutive RONAs before a seat goes not_ready
    service_level_s: float = 20.0
    callback_after_s: float = 30.0         # abandoned after waiting longer -> callback list
    reject_delay_s: float = 5.0            # a seat that declined is not offered again for this long
    strategy: str = "longest_idle"         # longest_idle | fewest_calls | round_robin
    policies: dict[str, SkillPolicy] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RestoredSeat:
    """What ``routing.store.load_state`` gives back for a seat after a restart."""

    spec: SeatSpec
    status: SeatStatus
    reason: str | None
    since: float


@dataclass(frozen=True, slots=True)
class RestoredEntry:
    """A call that was waiting when the node stopped; it keeps its place (enqueue time)."""

    call_id: str
    skill: str
    priority: int
    enqueued_at: float
    caller: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


class Acd:
    def __init__(self, config: AcdConfig | None = None) -> None:
        self.config = config or AcdConfig()

    # -- seats ---------------------------------------------------------------------------------
    def add_seat(self, spec: SeatSpec, now: float) -> list[Event]: ...
    def update_seat(self, spec: SeatSpec, now: float) -> list[Event]: ...
    def remove_seat(self, seat_id: str, now: float) -> list[Event]: ...
    def set_status(self, seat_id: str, status: SeatStatus, now: float, reason: str | None = None) -> list[Event]: ...
    def end_wrap_up(self, seat_id: str, now: float) -> list[Event]: ...

    # -- calls ---------------------------------------------------------------------------------
    def enqueue(self, call_id: str, skill: str, priority: int, now: float, caller: str | None = None,
                info: dict[str, Any] | None = None) -> list[Event]: ...
    def seat_answered(self, call_id: str, now: float) -> list[Event]: ...
    def ring_no_answer(self, call_id: str, now: float) -> list[Event]: ...
    def seat_failed(self, call_id: str, now: float, reason: str) -> list[Event]: ...
    def caller_abandoned(self, call_id: str, now: float) -> list[Event]: ...
    def call_completed(self, call_id: str, now: float, ended_by: str) -> list[Event]: ...

    # -- time ----------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Event]: ...
    def next_deadline(self) -> float | None: ...

    # -- restart -------------------------------------------------------------------------------
    def restore(self, seats: list[RestoredSeat], waiting: list[RestoredEntry], now: float) -> list[Event]: ...

    # -- reads ---------------------------------------------------------------------------------
    def queue_position(self, call_id: str) -> int | None: ...
    def seats_view(self, now: float) -> list[dict[str, Any]]: ...
    def queues_view(self, now: float) -> list[dict[str, Any]]: ...
