"""How a seat leg that did not become a conversation is reported to the ACD: one mapping for SIP
and Twilio, so a fix reaches both ingresses.

Kinds (``SeatOutcome.kind``) and what the ACD does with them:

* ``rona`` (no answer in time): ``ring_no_answer``; the seat goes not-ready after the configured
  number of RONAs, the caller back to the head of the queue;
* ``busy`` / ``declined`` / ``hangup_before_bridge`` / ``canceled``: ``seat_failed``; this seat is
  not offered this call again, the caller back to the head;
* ``unreachable``: ``seat_failed``; the seat goes not-ready;
* ``local_error`` (the gateway's own fault, e.g. PJSIP refused to dial): ``seat_failed``; the
  caller back to the head, the seat back to available with no penalty and no exclusion; the ACD
  offers the pair again after its reject delay, so a fault that repeats is not a hot loop.
"""

from __future__ import annotations

from dataclasses import dataclass

RONA = "rona"
LOCAL_ERROR = "local_error"


@dataclass(frozen=True, slots=True)
class SeatOutcome:
    kind: str             # rona | busy | declined | unreachable | hangup_before_bridge | canceled | local_error
    detail: str = ""      # the wire's own words (SIP code + reason, Twilio DialCallStatus)
    sip_code: int = 0     # a real SIP final response from the seat, 0 when there was none

    @property
    def is_sip_error(self) -> bool:
        """Whether the seat's phone or network answered with a failure (counted in sip_errors)."""
        return self.sip_code >= 300 and self.kind not in (RONA, LOCAL_ERROR, "canceled")


def from_sip(code: int, reason: str, cancelled: bool = False) -> SeatOutcome:
    """A SIP seat leg's end before the bridge.  ``cancelled`` means we hung it up ourselves."""
    detail = f"{code} {reason}".strip()
    if reason.startswith(LOCAL_ERROR):
        return SeatOutcome(LOCAL_ERROR, detail)
    if cancelled:
        # our own CANCEL: the worker's ring timer (a late RONA) or the caller left
        return SeatOutcome(RONA if "ring timeout" in reason else "canceled", detail)
    if code in (486, 600):
        return SeatOutcome("busy", detail, code)
    if code in (603, 403):
        return SeatOutcome("declined", detail, code)
    if 200 <= code < 300:
        return SeatOutcome("hangup_before_bridge", detail)
    return SeatOutcome("unreachable", detail, code)


#: Twilio ``DialCallStatus`` -> kind; ``completed``/``answered`` are conversations, not failures.
TWILIO_DIAL_STATUS = {"no-answer": RONA, "busy": "busy", "failed": "unreachable", "canceled": "canceled"}


def from_twilio(dial_status: str) -> SeatOutcome:
    return SeatOutcome(TWILIO_DIAL_STATUS.get(dial_status, "unreachable"), dial_status)


#: Why a seat's leg was lost mid-conversation (``CallJourney.seat_leg_lost``; the seat goes
#: ``not_ready`` with it): its network vanished (the worker's media watchdog heard no RTP), or any
#: other failure of the leg without the seat's BYE.
SEAT_MEDIA_TIMEOUT = "seat_media_timeout"
SEAT_LEG_FAILED = "seat_leg_failed"


def seat_lost_reason(reason: str) -> str:
    """The reason kind of a mid-conversation seat-leg failure, from the worker's words."""
    return SEAT_MEDIA_TIMEOUT if reason.startswith(SEAT_MEDIA_TIMEOUT) else SEAT_LEG_FAILED
