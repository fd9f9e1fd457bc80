"""A seat and its status machine.

Every status change goes through ``Seat.move`` which consults ``LEGAL_TRANSITIONS``: a seat can
only ring from ``available``, only talk after ringing, only wrap up after talking.  Anything else is
a bug or a race in the caller and must be refused loudly rather than silently corrupting who is
free, because "who is free" is what the whole centre runs on.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from dataclasses import dataclass, field

from routing.errors import IllegalTransition
from routing.events import Event, EventKind
from routing.status import SeatStatus

S = SeatStatus

LEGAL_TRANSITIONS: dict[SeatStatus, frozenset[SeatStatus]] = {
    S.LOGGED_OUT: frozenset({S.AVAILABLE, S.NOT_READY}),
    S.AVAILABLE: frozenset({S.RESERVED, S.NOT_READY, S.LOGGED_OUT}),
    S.NOT_READY: frozenset({S.AVAILABLE, S.NOT_READY, S.LOGGED_OUT}),
    # reserved ends by an answer, a ring failure (back to available or not_ready) or an abandon
    S.RESERVED: frozenset({S.ON_CALL, S.AVAILABLE, S.NOT_READY}),
    S.ON_CALL: frozenset({S.WRAP_UP}),
    S.WRAP_UP: frozenset({S.AVAILABLE, S.NOT_READY, S.LOGGED_OUT}),
}

#: What a seat (or its supervisor) may ask for; reserved/on_call/wrap_up are decisions of the ACD.
REQUESTABLE: frozenset[SeatStatus] = frozenset({S.AVAILABLE, S.NOT_READY, S.LOGGED_OUT})


def check_transition(seat_id: str, current: SeatStatus, target: SeatStatus) -> None:
    if target not in LEGAL_TRANSITIONS[current]:
        raise IllegalTransition(f"seat {seat_id}: {current.value} -> {target.value} is not allowed")


@dataclass(slots=True)
class Seat:
    id: str
    name: str
    contact: str
    skills: dict[str, int]
    status: SeatStatus
    since: float
    order: int                              # creation order, the last tie-break of every strategy
    reason: str | None = None
    call_id: str | None = None              # reserved / on_call / wrap_up: the call it is about
    idle_since: float = 0.0                 # last call end, or becoming available
    calls_taken: int = 0
    last_offer: int = 0                     # offer sequence number, for round robin
    consecutive_rona: int = 0
    hold_until: float | None = None         # available but not offered until then (reject delay)
    version: int = 0                        # bumps on every move: timers armed earlier go stale
    index_keys: dict[str, tuple] = field(default_factory=dict)  # skill -> key in that skill's index
    # wrap-up bookkeeping, for the handle time of the call just finished
    wrap_skill: str | None = None
    wrap_talk_s: float = 0.0
    call_ended_at: float = 0.0
    #: the digest user of a seat phone that REGISTERs (its HA1 stays with the gateway, never here)
    register_user: str | None = None

    def move(self, target: SeatStatus, now: float, reason: str | None = None,
             call_id: str | None = None, skill: str | None = None, **data: object) -> Event:
        """Change status through the legal-transition table and describe the change as an event."""
        check_transition(self.id, self.status, target)
        previous = self.status
        self.status = target
        # why a seat is not ready, or why it was logged out (e.g. its phone's registration expired)
        self.reason = reason if target in (S.NOT_READY, S.LOGGED_OUT) else None
        self.since = now
        self.version += 1
        return Event(EventKind.SEATSTATUS, now, call_id=call_id, seat_id=self.id, skill=skill,
                     data={"status": target.value, "previous": previous.value, "reason": self.reason, **data})

    def view(self, now: float) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "contact": self.contact,
            "status": self.status.value,
            "reason": self.reason,
            "since": self.since,
            "skills": dict(self.skills),
            "call_id": self.call_id,
            "calls_taken": self.calls_taken,
            "idle_s": max(0.0, now - self.idle_since) if self.status is S.AVAILABLE else None,
            "register": {"username": self.register_user, "has_credentials": True} if self.register_user else None,
        }


class AvailableSeats:
    """The seats of one skill that may be offered a call now, best first (key given by the strategy).

    A sorted list: insert and remove are a bisect plus a memmove, the best seat is ``[0]``; with a
    thousand seats that beats a heap with lazy deletion and needs no cleanup.
    """

    __slots__ = ("_keys",)

    def __init__(self) -> None:
        self._keys: list[tuple] = []

    def add(self, key: tuple) -> None:
        insort(self._keys, key)

    def discard(self, key: tuple) -> None:
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            del self._keys[i]

    def seat_ids(self) -> Iterator[str]:
        for key in self._keys:
            yield key[-1]

    def __len__(self) -> int:
        return len(self._keys)
