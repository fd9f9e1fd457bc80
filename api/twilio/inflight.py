"""One Twilio call in flight: its journey plus what only the webhook conversation needs.

Kept apart from the webhook handler (``api.twilio.calls``) so that the snapshot of a call
(``api.twilio.store``) and the handler that saves and adopts it both use it without importing
each other.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ivr.flow import Flow
from ivr.interpreter import Action, IvrSession, Play
from journey.call import CallJourney
from journey.stages import Stage


@dataclass(slots=True)
class GatherStep:
    """What one ``<Gather>`` plays (the interpreter's ``Play`` actions, in order) and when it went out."""

    plays: list[Play]
    issued_at: float


@dataclass
class TwilioCall:
    """One Twilio call: its journey, plus what only the webhook conversation needs."""

    journey: CallJourney
    sid: str
    callee: str
    flow: Flow
    session: IvrSession
    step: int = 0
    gather: GatherStep | None = None
    dialed_seat: str | None = None
    last_position_at: float = 0.0
    #: Every event the interpreter was given, to rebuild a look-ahead copy by replaying them.
    journal: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    #: (webhook, step) -> the TwiML answered, for replays.
    answers: dict[tuple[str, int], str] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def call_id(self) -> str:
        return self.journey.call_id

    @property
    def stage(self) -> Stage:
        return self.journey.stage

    def feed(self, event: str, *args: Any) -> list[Action]:
        self.journal.append((event, args))
        return getattr(self.session, event)(*args)


def call_id_for(sid: str) -> str:
    return f"t-{sid}"
