"""Seat statuses (CONTRACT.md).  The legal transitions live with the ACD state machine."""

from __future__ import annotations

from enum import StrEnum


class SeatStatus(StrEnum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    NOT_READY = "not_ready"
    RESERVED = "reserved"  # ringing: a call is offered to this seat
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
