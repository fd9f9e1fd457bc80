from __future__ import annotations

from pathlib import Path

import pytest

from routing.acd import Acd, SeatSpec
from routing.seats_file import SeatsFileInvalid, load_seats
from routing.status import SeatStatus

GOOD = """
seats:
  - id: s101
    name: 在线认定 1
    contact: sip:s101@127.0.0.1:5091
    skills: [online_determination, insurance_claim]
    status: available
  - id: s-2_b
    contact: sip:s2@10.0.0.2
    skills: {rescue: 0, intake_guidance: 2}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "seats.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_loads_list_and_penalty_forms_with_default_status(tmp_path: Path) -> None:
    seats = load_seats(write(tmp_path, GOOD))
    assert seats == [
        SeatSpec(id="s101", contact="sip:s101@127.0.0.1:5091", name="在线认定 1",
                 skills={"online_determination": 0, "insurance_claim": 0}, status=SeatStatus.AVAILABLE),
        SeatSpec(id="s-2_b", contact="sip:s2@10.0.0.2", skills={"rescue": 0, "intake_guidance": 2},
                 status=SeatStatus.LOGGED_OUT),
    ]
    acd = Acd()
    for s in seats:
        acd.add_seat(s, 0)
    assert {v["id"]: v["status"] for v in acd.seats_view(0)} == {"s101": "available", "s-2_b": "logged_out"}


@pytest.mark.parametrize(("seat_yaml", "needle"), [
    ("  - {id: s1, contact: 'sip:s1@h', skills: [plumbing]}", "seat s1: field skills has unknown skill 'plumbing'"),
    ("  - {id: s1, contact: 'http://h', skills: [rescue]}", "seat s1: field contact"),
    ("  - {id: s1, contact: 's1@h', skills: [rescue]}", "seat s1: field contact"),
    ("  - {id: S1, contact: 'sip:s1@h', skills: [rescue]}", "seat #1: field id"),
    ("  - {id: " + "a" * 33 + ", contact: 'sip:a@h', skills: [rescue]}", "field id"),
    ("  - {id: s1, contact: 'sip:s1@h', skills: [rescue], status: on_call}", "seat s1: field status"),
    ("  - {id: s1, contact: 'sip:s1@h', skills: {rescue: -1}}", "seat s1: field skills.rescue"),
    ("  - {id: s1, contact: 'sip:s1@h', skills: []}", "seat s1: field skills is empty"),
    ("  - {id: s1, contact: 'sip:s1@h', skills: [rescue], colour: red}", "seat s1: unknown field 'colour'"),
    ("  - {id: s1, contact: 'sip:s1@h', skills: [rescue]}\n  - {id: s1, contact: 'sip:x@h', skills: [rescue]}",
     "seat s1: field id is a duplicate"),
])
def test_bad_seat_is_one_line_naming_seat_and_field(tmp_path: Path, seat_yaml: str, needle: str) -> None:
    with pytest.raises(SeatsFileInvalid) as e:
        load_seats(write(tmp_path, "seats:\n" + seat_yaml + "\n"))
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(SeatsFileInvalid, match="seats file"):
        load_seats(tmp_path / "missing.yaml")
    with pytest.raises(SeatsFileInvalid, match="not valid YAML"):
        load_seats(write(tmp_path, "seats: [\n"))
    with pytest.raises(SeatsFileInvalid, match="'seats:' list"):
        load_seats(write(tmp_path, "- id: s1\n"))
