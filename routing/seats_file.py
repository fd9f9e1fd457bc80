"""The seats YAML of CONTRACT.md, read into ``SeatSpec`` values.

Every problem is one line naming the seat and the field, because the operator reading it is
starting a node and should fix the file without reading a traceback.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from routing.acd import SeatSpec
from routing.skills import SKILLS
from routing.status import SeatStatus

SEAT_ID = re.compile(r"[a-z0-9_-]{1,32}")
SIP_URI = re.compile(r"sips?:(?:[^@\s;]+@)?[A-Za-z0-9.\-\[\]:]+(?::\d{1,5})?(?:;[^\s]*)?")
INITIAL_STATUSES = (SeatStatus.AVAILABLE, SeatStatus.NOT_READY, SeatStatus.LOGGED_OUT)


class SeatsFileInvalid(Exception):
    """One line: which file, which seat, which field, what is wrong."""


def load_seats(path: str | Path) -> list[SeatSpec]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SeatsFileInvalid(f"seats file {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SeatsFileInvalid(f"seats file {path}: not valid YAML ({e.__class__.__name__})") from e
    return parse_seats(data, str(path))


REGISTER_USER = re.compile(r"[A-Za-z0-9_.-]{1,64}")
HA1 = re.compile(r"[0-9a-fA-F]{32}")

def parse_seats(data: Any, where: str = "seats file") -> list[SeatSpec]:
    if not isinstance(data, dict) or not isinstance(data.get("seats"), list):
        raise SeatsFileInvalid(f"{where}: expected a mapping with a 'seats:' list")
    specs: list[SeatSpec] = []
    seen: set[str] = set()
    for i, raw in enumerate(data["seats"], start=1):
        label = f"{where}: seat #{i}"
        if not isinstance(raw, dict):
            raise SeatsFileInvalid(f"{label}: must be a mapping (id, contact, skills, ...)")
        seat_id = raw.get("id")
        if not isinstance(seat_id, str) or not SEAT_ID.fullmatch(seat_id):
            raise SeatsFileInvalid(f"{label}: field id {seat_id!r} must match [a-z0-9_-]{{1,32}}")
        label = f"{where}: seat {seat_id}"
        if seat_id in seen:
            raise SeatsFileInvalid(f"{label}: field id is a duplicate")
        seen.add(seat_id)
        unknown = set(raw) - {"id", "name", "contact", "skills", "status", "register"}
        if unknown:
            raise SeatsFileInvalid(f"{label}: unknown field {sorted(unknown)[0]!r}")
        register_user, ha1 = _register(raw.get("register"), label)
        contact = raw.get("contact", "" if register_user else None)
        if register_user and "contact" in raw:
            raise SeatsFileInvalid(f"{label}: give contact or register, not both (a registered phone's contact "
                                   "is where it registers from)")
        if not register_user and (not isinstance(contact, str) or not SIP_URI.fullmatch(contact)):
            raise SeatsFileInvalid(f"{label}: field contact {contact!r} is not a sip: URI")
        skills = _skills(raw.get("skills"), label)
        status_raw = raw.get("status", SeatStatus.LOGGED_OUT.value)
        try:
            status = SeatStatus(status_raw)
        except ValueError:
            status = None
        if status not in INITIAL_STATUSES:
            raise SeatsFileInvalid(f"{label}: field status {status_raw!r} must be available, not_ready or logged_out")
        name = raw.get("name", "")
        if register_user:
            status = SeatStatus.LOGGED_OUT  # until its phone registers
        specs.append(SeatSpec(id=seat_id, contact=str(contact), skills=skills,
                              name="" if name is None else str(name), status=status,
                              register_user=register_user, ha1=ha1))
    return specs


def _register(raw: Any, label: str) -> tuple[str | None, str | None]:
    """``register: {username, ha1}``: digest credentials as HA1 = md5(username:realm:password)."""
    if raw is None:
        return None, None
    if not isinstance(raw, dict) or set(raw) != {"username", "ha1"}:
        raise SeatsFileInvalid(f"{label}: field register must be {{username: ..., ha1: ...}}")
    user, ha1 = raw["username"], raw["ha1"]
    if not isinstance(user, str) or not REGISTER_USER.fullmatch(user):
        raise SeatsFileInvalid(f"{label}: field register.username {user!r} must match [A-Za-z0-9_.-]{{1,64}}")
    if not isinstance(ha1, str) or not HA1.fullmatch(ha1):
        raise SeatsFileInvalid(f"{label}: field register.ha1 must be 32 hex digits (md5 of username:realm:password)")
    return user, ha1.lower()


def _skills(raw: Any, label: str) -> dict[str, int]:
    if isinstance(raw, list):
        pairs: list[tuple[Any, Any]] = [(s, 0) for s in raw]
    elif isinstance(raw, dict):
        pairs = list(raw.items())
    else:
        raise SeatsFileInvalid(f"{label}: field skills must be a list or a {{skill: penalty}} mapping")
    if not pairs:
        raise SeatsFileInvalid(f"{label}: field skills is empty")
    skills: dict[str, int] = {}
    for skill, penalty in pairs:
        if skill not in SKILLS:
            raise SeatsFileInvalid(f"{label}: field skills has unknown skill {skill!r}")
        if isinstance(penalty, bool) or not isinstance(penalty, int) or penalty < 0:
            raise SeatsFileInvalid(f"{label}: field skills.{skill} penalty {penalty!r} must be an integer >= 0")
        if skill in skills:
            raise SeatsFileInvalid(f"{label}: field skills lists {skill!r} twice")
        skills[skill] = penalty
    return skills
