"""The one place a journey transition leaves the process: a log line, the event log, the bus.

Persisting and publishing go through the routing service's ``record`` (the batched event writer
behind it stores the event with the call's record; the MQTT bus and the WebSocket subscribers
get it from the same call), so a transition is seen everywhere in the order it happened.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from journey.stages import Cause, Stage
from routing.events import Event, EventKind

log = logging.getLogger("journey")


class EventRecorder(Protocol):
    """What the notifier needs: the routing service's ``record`` (persist + publish)."""

    def record(self, events: list[Event]) -> Any: ...


class JourneyNotifier:
    def __init__(self, recorder: EventRecorder, ingress: str) -> None:
        self.recorder = recorder
        self.ingress = ingress

    def transition(self, call_id: str, src: Stage, dst: Stage, cause: Cause, at: float, detail: str = "",
                   seat_id: str | None = None) -> None:
        """``seat_id``: the seat the move concerns, when its console must see it (a warm transfer's)."""
        log.info("journey", extra={"call_id": call_id, "from": src.value, "to": dst.value, "cause": cause.value,
                                   "detail": detail, "ingress": self.ingress})
        self.recorder.record([Event(EventKind.JOURNEY, at, call_id=call_id, seat_id=seat_id, data={
            "from": src.value, "to": dst.value, "cause": cause.value, "detail": detail})])

    def unexpected(self, call_id: str, stage: Stage, cause: Cause, detail: str = "") -> None:
        log.error("journey_unexpected_event", extra={"call_id": call_id, "stage": stage.value,
                                                     "cause": cause.value, "detail": detail,
                                                     "ingress": self.ingress})

    def record(self, events: list[Event]) -> None:
        """A lifecycle event of the call record (CALLSTART, IVRDONE, CALLEND), built by the journey."""
        self.recorder.record(events)
