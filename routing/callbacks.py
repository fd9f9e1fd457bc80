"""The callback list: callers who gave up after waiting too long, to be called back by intake seats.

Ordered by when they first called (original enqueue time, then arrival sequence), not by when they
hung up: the person who has been waiting for the centre longest is called back first.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field
from typing import Any

from routing.errors import IllegalTransition, RoutingError


class UnknownCallback(RoutingError):
    pass


@dataclass(slots=True)
class CallbackEntry:
    id: str
    call_id: str
    caller: str | None
    skill: str
    priority: int
    enqueued_at: float
    abandoned_at: float
    seq: int
    info: dict[str, Any] = field(default_factory=dict)
    status: str = "pending"          # pending | taken | done
    seat_id: str | None = None
    taken_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "callback_id": self.id, "call_id": self.call_id, "caller": self.caller, "skill": self.skill,
            "priority": self.priority, "enqueued_at": self.enqueued_at, "abandoned_at": self.abandoned_at,
            "wait_s": self.abandoned_at - self.enqueued_at, "info": self.info, "status": self.status,
            "seat_id": self.seat_id, "taken_at": self.taken_at,
        }


class CallbackList:
    def __init__(self) -> None:
        self._pending: list[tuple[float, int, str]] = []
        self._entries: dict[str, CallbackEntry] = {}
        self._seq = 0

    def add(self, call_id: str, caller: str | None, skill: str, priority: int, enqueued_at: float,
            abandoned_at: float, info: dict[str, Any] | None = None, callback_id: str | None = None) -> CallbackEntry:
        self._seq += 1
        entry = CallbackEntry(id=callback_id or f"cb-{call_id}", call_id=call_id, caller=caller, skill=skill,
                              priority=priority, enqueued_at=enqueued_at, abandoned_at=abandoned_at,
                              seq=self._seq, info=dict(info or {}))
        if entry.id in self._entries:
            raise IllegalTransition(f"callback {entry.id} already exists")
        self._entries[entry.id] = entry
        insort(self._pending, (enqueued_at, entry.seq, entry.id))
        return entry

    def take(self, seat_id: str, now: float) -> CallbackEntry | None:
        """Hand the oldest pending callback to ``seat_id``; None when the list is empty."""
        if not self._pending:
            return None
        _, _, cb_id = self._pending.pop(0)
        entry = self._entries[cb_id]
        entry.status, entry.seat_id, entry.taken_at = "taken", seat_id, now
        return entry

    def complete(self, callback_id: str, now: float) -> CallbackEntry:
        entry = self._entries.get(callback_id)
        if entry is None:
            raise UnknownCallback(callback_id)
        if entry.status != "taken":
            raise IllegalTransition(f"callback {callback_id} is {entry.status}, not taken")
        entry.status = "done"
        del self._entries[callback_id]
        return entry

    def pending(self) -> list[CallbackEntry]:
        return [self._entries[cb_id] for _, _, cb_id in self._pending]

    def active(self) -> list[CallbackEntry]:
        """Pending and taken (not yet completed) callbacks."""
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._pending)
