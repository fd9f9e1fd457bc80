"""The API's request and response bodies (they are the OpenAPI schema clients code against).

Response models allow extra fields: the routing service may add to its views without breaking
clients, while the fields CONTRACT.md names are always there.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from routing.seats_file import SIP_URI
from routing.skills import SKILLS

SEAT_ID_PATTERN = r"^[a-z0-9_-]{1,32}$"


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class QueueRow(Open):
    skill: str
    label_zh: str = ""
    waiting: int = 0
    longest_wait_s: float = 0.0
    seats_by_status: dict[str, int] = Field(default_factory=dict)
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    answered_within_sl: int = 0
    service_level: float | None = None
    asa_s: float | None = None
    aht_s: float | None = None


class SeatRegister(Open):
    """A seat phone that REGISTERs: its digest user (the HA1 is never shown)."""

    username: str
    has_credentials: bool = True


class SeatView(Open):
    id: str
    name: str = ""
    status: str
    since: float | None = None
    reason: str | None = None
    skills: dict[str, int] = Field(default_factory=dict)
    call_id: str | None = None
    #: ``register`` in JSON (the name would shadow ``BaseModel.register``)
    seat_register: SeatRegister | None = Field(None, alias="register")


class SeatOffer(Open):
    """The call a seat is offered or talks to; ``info.screen_pop`` is what the IVR learned, in words."""

    call_id: str
    skill: str
    priority: int
    caller: str | None = None
    state: str
    info: dict[str, Any] = Field(default_factory=dict)


class CallRecord(Open):
    id: str
    caller: str | None = None
    started_at: float | None = None
    ivr: dict[str, Any] | None = None
    events: list[dict[str, Any]] = Field(default_factory=list)
    seat_id: str | None = None
    seat_answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    recording_id: str | None = None


class Callback(Open):
    callback_id: str
    call_id: str
    caller: str | None = None
    skill: str
    status: str
    seat_id: str | None = None


class SeatStatusChange(BaseModel):
    """What a person may set; reserved, on_call and wrap_up belong to the ACD."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["logged_out", "available", "not_ready"]
    reason: str | None = Field(None, max_length=200)


class SeatUpdate(BaseModel):
    """A seat's editable settings, validated like the seats file (CONTRACT.md)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=100)
    contact: str = Field(max_length=300)
    skills: list[str] | dict[str, int] = Field(min_length=1)

    @field_validator("contact")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not SIP_URI.fullmatch(v):
            raise ValueError("must be a SIP URI like sip:s101@127.0.0.1:5091")
        return v

    @field_validator("skills")
    @classmethod
    def _skills(cls, v: list[str] | dict[str, int]) -> list[str] | dict[str, int]:
        names = list(v)
        unknown = [s for s in names if s not in SKILLS]
        if unknown:
            raise ValueError(f"unknown skill(s) {unknown}; known: {list(SKILLS)}")
        if len(set(names)) != len(names):
            raise ValueError("a skill is listed twice")
        if isinstance(v, dict) and any(not 0 <= p <= 100 for p in v.values()):
            raise ValueError("penalties are 0..100 (0 = first choice)")
        return v

    def skill_penalties(self) -> dict[str, int]:
        return dict(self.skills) if isinstance(self.skills, dict) else dict.fromkeys(self.skills, 0)


class SeatConfig(SeatUpdate):
    """A new seat, as one entry of the seats file."""

    id: str = Field(pattern=SEAT_ID_PATTERN)
    status: Literal["logged_out", "available", "not_ready"] = "logged_out"


class FlowProblemOut(BaseModel):
    location: str
    message: str


class FlowInstalled(BaseModel):
    status: Literal["installed"] = "installed"


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["admin", "supervisor", "seat"]
    seat_id: str | None = Field(None, pattern=SEAT_ID_PATTERN)
    label: str | None = Field(None, max_length=200)
    ttl_days: float | None = Field(None, gt=0, le=3650, description="default 30 (seat, supervisor) or 7 (admin)")


class TokenCreated(BaseModel):
    id: int | None = None
    token: str
    role: str
    seat_id: str | None = None
    expires_at: float | None = None


class TokenInfo(BaseModel):
    """A token as ``GET /api/v1/admin/tokens`` lists it: never the token nor its hash."""

    id: int
    role: str
    seat_id: str | None = None
    label: str | None = None
    created_at: float
    expires_at: float | None = None
    last_used_at: float | None = None
    revoked_at: float | None = None
    state: Literal["live", "expired", "revoked"]


class AuditActor(BaseModel):
    token_id: int | None = None
    role: str | None = None
    seat_id: str | None = None


class AuditEntry(BaseModel):
    """One audited action: ``recording.download`` (detail: range or bytes) or ``seat.status``
    (detail: from, to, reason); more actions may appear later."""

    id: int
    at: float
    action: str
    target: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    actor: AuditActor
    source_ip: str | None = None
    node_id: str | None = None


class Me(BaseModel):
    role: str
    seat_id: str | None = None
    node_id: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class SkillInfo(BaseModel):
    id: str
    label_zh: str
