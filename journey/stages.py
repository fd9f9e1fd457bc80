"""The stages of a call's journey and the only moves between them.

The table is data: ``docs/ARCHITECTURE.md`` prints it, a test walks every entry, and
``CallJourney`` refuses (and logs as an error) any event that is not in it for the current stage.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    ANSWERED = "answered"          # the line is open, nothing played yet
    IN_IVR = "in_ivr"              # the IVR asks its questions
    QUEUED = "queued"              # waiting for a seat of its skill, hearing hold + position
    OFFERED = "offered"            # the ACD reserved a seat; the seat leg is being dialled
    RINGING_SEAT = "ringing_seat"  # the seat's phone rings (180, or Twilio's <Dial> is out)
    TALKING = "talking"            # caller and seat bridged
    ON_HOLD = "on_hold"            # the seat put the caller on hold: hold audio, the seat still on the line
    CONSULTING = "consulting"      # warm transfer: caller on hold, seat 1 calls/talks to seat 2
    WRAP_UP = "wrap_up"            # the line is closed; the record and recording are being sealed
    ENDED = "ended"                # CALLEND written: nothing more happens to this call


class Cause(StrEnum):
    """What happened: the journey's input events."""

    IVR_STARTED = "ivr_started"
    IVR_ROUTED = "ivr_routed"            # the IVR decided a skill and priority
    OFFERED = "offered"                  # the ACD reserved a seat (OFFER)
    SEAT_RINGING = "seat_ringing"        # the seat's phone rings
    SEAT_ANSWERED = "seat_answered"      # the seat answered and is bridged
    SEAT_NOT_TAKEN = "seat_not_taken"    # RONA, busy, declined, unreachable, local error
    SEAT_LEG_LOST = "seat_leg_lost"      # the seat leg failed mid-conversation
    ESCALATED = "escalated"              # the ACD moved the waiting call to another skill
    CALLER_HUNG_UP = "caller_hung_up"
    SEAT_HUNG_UP = "seat_hung_up"        # the seat's normal BYE after the conversation
    LINE_LOST = "line_lost"              # the media side died (worker crash)
    CLOSED = "closed"                    # recording sealed, CALLEND written
    HELD = "held"                        # the seat put the caller on hold
    RESUMED = "resumed"                  # the seat took the caller off hold
    TRANSFERRED = "transferred"          # a seat (or supervisor) sent the caller on to another skill or seat
    CONSULT_STARTED = "consult_started"  # warm transfer: seat 2 is being called, the caller hears hold audio
    CONSULT_COMPLETED = "consult_completed"  # seat 2 took the caller over; seat 1's leg released
    CONSULT_CANCELLED = "consult_cancelled"  # the consult ended without a hand-over: caller back with seat 1


S, C = Stage, Cause

LIVE = (S.ANSWERED, S.IN_IVR, S.QUEUED, S.OFFERED, S.RINGING_SEAT, S.TALKING, S.ON_HOLD, S.CONSULTING)
CONVERSATION = (S.TALKING, S.ON_HOLD)
WAITING = (S.QUEUED, S.OFFERED, S.RINGING_SEAT)

TRANSITIONS: dict[tuple[Stage, Cause], Stage] = {
    (S.ANSWERED, C.IVR_STARTED): S.IN_IVR,
    (S.IN_IVR, C.IVR_ROUTED): S.QUEUED,
    (S.QUEUED, C.OFFERED): S.OFFERED,
    (S.QUEUED, C.ESCALATED): S.QUEUED,
    (S.OFFERED, C.SEAT_RINGING): S.RINGING_SEAT,
    (S.OFFERED, C.SEAT_ANSWERED): S.TALKING,
    (S.RINGING_SEAT, C.SEAT_ANSWERED): S.TALKING,
    (S.OFFERED, C.SEAT_NOT_TAKEN): S.QUEUED,
    (S.RINGING_SEAT, C.SEAT_NOT_TAKEN): S.QUEUED,
    (S.TALKING, C.SEAT_LEG_LOST): S.QUEUED,
    (S.TALKING, C.SEAT_HUNG_UP): S.WRAP_UP,
    (S.TALKING, C.TRANSFERRED): S.QUEUED,
    (S.TALKING, C.HELD): S.ON_HOLD,
    (S.ON_HOLD, C.RESUMED): S.TALKING,
    (S.ON_HOLD, C.SEAT_HUNG_UP): S.WRAP_UP,
    (S.ON_HOLD, C.SEAT_LEG_LOST): S.QUEUED,
    (S.ON_HOLD, C.TRANSFERRED): S.QUEUED,
    (S.TALKING, C.CONSULT_STARTED): S.CONSULTING,
    (S.ON_HOLD, C.CONSULT_STARTED): S.CONSULTING,
    (S.CONSULTING, C.CONSULT_COMPLETED): S.TALKING,   # with seat 2
    (S.CONSULTING, C.CONSULT_CANCELLED): S.TALKING,   # with seat 1 again
    (S.CONSULTING, C.TRANSFERRED): S.QUEUED,          # seat 1 left before seat 2 answered: seat 2 is rung
    **{(s, C.CALLER_HUNG_UP): S.WRAP_UP for s in LIVE},
    **{(s, C.LINE_LOST): S.WRAP_UP for s in LIVE},
    (S.WRAP_UP, C.CLOSED): S.ENDED,
}


class UnexpectedEvent(Exception):
    """An event the journey does not expect in its current stage."""

    def __init__(self, stage: Stage, cause: Cause) -> None:
        super().__init__(f"{cause.value} is not expected in stage {stage.value}")
        self.stage = stage
        self.cause = cause


def next_stage(stage: Stage, cause: Cause) -> Stage:
    """The stage ``cause`` leads to from ``stage``; ``UnexpectedEvent`` if the table has no move."""
    try:
        return TRANSITIONS[(stage, cause)]
    except KeyError:
        raise UnexpectedEvent(stage, cause) from None


def table_markdown() -> str:
    """The transition table as the Markdown printed in docs/ARCHITECTURE.md (a test compares them)."""
    lines = ["| from | event | to |", "|---|---|---|"]
    for (src, cause), dst in TRANSITIONS.items():
        lines.append(f"| `{src.value}` | `{cause.value}` | `{dst.value}` |")
    return "\n".join(lines)
