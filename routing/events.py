"""The events the routing service emits: one per transition, persisted then published.

The ACD returns these from every decision; the control process appends them to the event log
(``routing.store``) and publishes them (``routing.bus``, the WebSocket).  The kinds mirror
Asterisk's queue_log so operators can read them without a manual.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class EventKind(StrEnum):
    # call / queue
    ENTERQUEUE = "ENTERQUEUE"        # call waits for `skill` (data: priority, caller, position)
    OFFER = "OFFER"                  # call reserved for seat, seat rings (data: ring_timeout_s, attempt)
    RINGNOANSWER = "RINGNOANSWER"    # seat did not answer in time; call back to the head
    SEATFAILED = "SEATFAILED"        # seat leg failed / declined / hung up before talking (data: reason)
    CONNECT = "CONNECT"              # seat answered and is bridged (data: wait_s)
    ABANDON = "ABANDON"              # caller hung up before a seat answered (data: wait_s, position)
    COMPLETE = "COMPLETE"            # talk ended (data: talk_s, ended_by)
    ESCALATE = "ESCALATE"            # call moved to another skill's queue after waiting (data: from, to)
    CALLBACK = "CALLBACK"            # abandoned caller put on the callback list
    # seats
    SEATSTATUS = "SEATSTATUS"        # seat status change (data: status, previous, reason)
    SEATADDED = "SEATADDED"
    SEATREMOVED = "SEATREMOVED"
    # call lifecycle outside routing (gateway / IVR), logged in the same stream
    CALLSTART = "CALLSTART"
    IVRDONE = "IVRDONE"
    CALLEND = "CALLEND"
    JOURNEY = "JOURNEY"              # the call's journey changed stage (data: from, to, cause, detail)
    MONITOR = "MONITOR"              # a supervisor's leg on the call (data: leg_id, mode, contact, by, state)
    DISPOSITION = "DISPOSITION"      # the seat (or a supervisor) recorded how the call ended (data: code, note, by)


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    at: float                        # unix time, seconds
    call_id: str | None = None
    seat_id: str | None = None
    skill: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def topic(self, prefix: str = "handoff122") -> str:
        """The MQTT topic: seat events under seats/, everything about a call under calls/."""
        if self.kind in (EventKind.SEATSTATUS, EventKind.SEATADDED, EventKind.SEATREMOVED):
            return f"{prefix}/seats/{self.seat_id}"
        if self.call_id:
            return f"{prefix}/calls/{self.call_id}"
        return f"{prefix}/queues/{self.skill}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind"] = self.kind.value
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        return cls(
            kind=EventKind(d["kind"]),
            at=float(d["at"]),
            call_id=d.get("call_id"),
            seat_id=d.get("seat_id"),
            skill=d.get("skill"),
            data=dict(d.get("data") or {}),
        )
