"""A call waiting for a seat, and one skill's queue of them.

Order is priority (1 = most urgent), then the original enqueue time, then arrival sequence.  A call
that comes back after a ring-no-answer or a failed seat leg re-enters with the same key, so it is
back in front of every call that arrived after it (the head, unless something more urgent or older
is waiting): the caller never loses their place by our fault.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EntryState(StrEnum):
    """Where a routing entry is in the ACD (the call journey's stages are ``journey.stages.Stage``)."""

    WAITING = "waiting"
    RINGING = "ringing"
    CONNECTED = "connected"


@dataclass(slots=True)
class QueuedCall:
    id: str
    skill: str
    priority: int
    enqueued_at: float
    seq: int
    caller: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    state: EntryState = EntryState.WAITING
    skill_entered_at: float = 0.0             # when it entered the current skill's queue (escalation)
    skill_version: int = 0                    # bumps on escalation: older escalation timers go stale
    seat_id: str | None = None
    attempt: int = 0
    offered_at: float | None = None
    answered_at: float | None = None
    excluded: set[str] = field(default_factory=set)   # seats that declined it: never offered again
    visited: set[str] = field(default_factory=set)    # skills it waited in (no escalation loops)
    also: list[str] = field(default_factory=list)     # skills it is also offered to (escalation "also")
    escalation_step: int = 0                          # rules of its skill's policy applied so far
    place_at: float | None = None                     # its place in the queue, when not enqueued_at (transfer)
    only_seat: str | None = None                      # a transfer to a named seat: offered to that seat only
    consult_seat: str | None = None                   # a warm transfer: the seat reserved to consult (connected call)
    consult_skill: str | None = None                  # ... and the skill the caller is handed over in

    @property
    def skills(self) -> list[str]:
        """Every queue it waits in: its own skill first, then the ones escalation added."""
        return [self.skill, *self.also]

    @property
    def key(self) -> tuple[int, float, int, str]:
        return (self.priority, self.enqueued_at if self.place_at is None else self.place_at, self.seq, self.id)


class SkillQueue:
    """Waiting calls of one skill as a sorted list of keys: O(log n) position, head at ``[0]``."""

    __slots__ = ("_by_priority", "_keys")

    def __init__(self) -> None:
        self._keys: list[tuple[int, float, int, str]] = []
        self._by_priority: Counter[int] = Counter()

    def push(self, call: QueuedCall) -> int:
        """Insert and return the 1-based position."""
        key = call.key
        insort(self._keys, key)
        self._by_priority[call.priority] += 1
        return bisect_left(self._keys, key) + 1

    def remove(self, call: QueuedCall) -> int:
        """Remove and return the 1-based position it had."""
        key = call.key
        i = bisect_left(self._keys, key)
        if i >= len(self._keys) or self._keys[i] != key:
            raise KeyError(call.id)
        del self._keys[i]
        self._by_priority[call.priority] -= 1
        if not self._by_priority[call.priority]:
            del self._by_priority[call.priority]
        return i + 1

    def position(self, call: QueuedCall) -> int | None:
        key = call.key
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return i + 1
        return None

    def call_ids(self) -> Iterator[str]:
        for key in self._keys:
            yield key[3]

    def oldest_enqueued_at(self) -> float | None:
        """Earliest enqueue time: the first entry of each priority present (few priorities, log n each)."""
        oldest: float | None = None
        for p in self._by_priority:
            i = bisect_left(self._keys, (p,))
            t = self._keys[i][1]
            if oldest is None or t < oldest:
                oldest = t
        return oldest

    def __len__(self) -> int:
        return len(self._keys)
