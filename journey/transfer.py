"""What a transfer request may be refused with, shared by the media adapters and the API.

The API never imports the gateway; both import ``journey``.  ``status`` is the HTTP status the
API answers with (404 no such live call, 409 the call cannot be transferred now, 422 a bad target).
"""

from __future__ import annotations

from dataclasses import dataclass


class TransferRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True, slots=True)
class MonitorRequest:
    call_id: str
    mode: str                    # listen | whisper | barge
    contact: str                 # the supervisor's phone (a SIP URI, or a seat's contact)
    by: str


@dataclass(frozen=True, slots=True)
class TransferRequest:
    call_id: str
    to_skill: str | None = None
    to_seat: str | None = None
    mode: str = "blind"          # blind | warm
    note: str | None = None
    by: str = "api"              # who asked: "seat:s101", "supervisor", "refer:s101"
