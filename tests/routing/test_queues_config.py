"""Per-skill queue policy: the seats file's ``queues:`` section and what the ACD does with it."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing.acd import Acd, AcdConfig, Escalation, SeatSpec, SkillPolicy
from routing.events import EventKind
from routing.queues_file import QueuesInvalid, load_queues
from routing.seats_file import load_seats
from routing.status import SeatStatus as S

DEFAULTS = SkillPolicy(wrap_up_s=15.0)


def spec(seat_id: str, skills: dict[str, int], status: S = S.AVAILABLE) -> SeatSpec:
    return SeatSpec(id=seat_id, contact=f"sip:{seat_id}@127.0.0.1:5091", skills=skills, status=status)


def test_the_contract_example_loads(tmp_path: Path) -> None:
    f = tmp_path / "seats.yaml"
    f.write_text("""seats:
  - id: s101
    contact: sip:s101@127.0.0.1:5091
    skills: [online_determination, insurance_claim]
queues:
  online_determination: {strategy: longest_idle, sl_threshold_s: 20, wrap_up_s: 30, announce_every_s: 30,
                         escalate: [{after_s: 60, also: intake_guidance}, {after_s: 90, priority: 1}]}
  rescue: {strategy: round_robin}
""")
    assert [s.id for s in load_seats(f)] == ["s101"]  # the seats loader ignores the section
    q = load_queues(f, DEFAULTS)
    assert q["online_determination"] == SkillPolicy(
        wrap_up_s=30.0, strategy="longest_idle", sl_threshold_s=20.0, announce_every_s=30.0,
        escalate=(Escalation(60.0, also="intake_guidance"), Escalation(90.0, priority=1)))
    assert q["rescue"] == SkillPolicy(wrap_up_s=15.0, strategy="round_robin")
    assert set(q) == {"online_determination", "rescue"}


def test_every_problem_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    f = tmp_path / "seats.yaml"
    f.write_text("""seats: []
queues:
  rescue:
    strategy: random
    sl_threshold_s: 0
    colour: red
    escalate:
      - {after_s: 60, also: rescue}
      - {after_s: 30, priority: 0}
      - {after_s: 10}
""")
    with pytest.raises(QueuesInvalid) as e:
        load_queues(f, DEFAULTS)
    got = [str(p) for p in e.value.problems]
    assert got == [
        "line 6: queues.rescue.colour: unknown field (known: strategy, sl_threshold_s, wrap_up_s, announce_every_s, "
        "escalate)",
        "line 4: queues.rescue.strategy: 'random' must be one of longest_idle, fewest_calls, round_robin",
        "line 5: queues.rescue.sl_threshold_s: 0 must be a number of seconds > 0",
        "line 8: queues.rescue.escalate[0].also: 'rescue' must be another known skill",
        "line 9: queues.rescue.escalate[1].priority: 0 must be an integer 1..9 (1 = most urgent)",
        "line 10: queues.rescue.escalate[2]: must be {after_s: N, also: skill} or {after_s: N, priority: P}",
    ]


def test_also_escalation_keeps_the_callers_place_and_lets_a_second_skill_take_it() -> None:
    a = Acd(AcdConfig(policies={"rescue": SkillPolicy(escalate=(Escalation(30, also="police_dispatch"),))}))
    a.add_seat(spec("d1", {"police_dispatch": 0}, S.NOT_READY), 0)
    a.enqueue("c1", "rescue", 2, 0)
    a.enqueue("c2", "rescue", 2, 1)
    assert a.tick(29.9) == []
    out = a.tick(31)
    assert [(e.kind, e.call_id, e.data.get("also")) for e in out if e.kind is EventKind.ESCALATE] == [
        (EventKind.ESCALATE, "c1", "police_dispatch"), (EventKind.ESCALATE, "c2", "police_dispatch")]
    assert a.queue_position("c1") == 1 and a.queue_position("c2") == 2  # still in rescue, in order
    out = a.set_status("d1", S.AVAILABLE, 32)
    offer = next(e for e in out if e.kind is EventKind.OFFER)
    assert (offer.call_id, offer.seat_id) == ("c1", "d1")
    assert a.queue_position("c2") == 1
    waiting = {q["skill"]: q["waiting"] for q in a.queues_view(32)}
    assert (waiting["rescue"], waiting["police_dispatch"]) == (1, 1)
    a.caller_abandoned("c2", 33)  # leaves both queues
    waiting = {q["skill"]: q["waiting"] for q in a.queues_view(33)}
    assert (waiting["rescue"], waiting["police_dispatch"]) == (0, 0)


def test_priority_escalation_moves_a_caller_ahead_of_newer_urgent_ones() -> None:
    a = Acd(AcdConfig(policies={"accident_query": SkillPolicy(escalate=(Escalation(60, priority=1),))}))
    a.enqueue("old", "accident_query", 4, 0)
    a.enqueue("urgent", "accident_query", 2, 10)
    assert a.queue_position("old") == 2
    out = a.tick(61)
    esc = [e for e in out if e.kind is EventKind.ESCALATE]
    assert [(e.call_id, e.data["priority"], e.data["previous_priority"]) for e in esc] == [("old", 1, 4)]
    assert a.queue_position("old") == 1 and a.queue_position("urgent") == 2


def test_strategy_and_service_level_per_queue() -> None:
    a = Acd(AcdConfig(strategy="longest_idle", service_level_s=20, policies={
        "rescue": SkillPolicy(strategy="fewest_calls", sl_threshold_s=5, wrap_up_s=0)}))
    # r1 idles longest but has taken more calls: fewest_calls picks r2 for rescue
    a.add_seat(spec("r1", {"rescue": 0}), 0)
    a.add_seat(spec("r2", {"rescue": 0}), 0)
    a.enqueue("x", "rescue", 2, 1)
    a.seat_answered("x", 2, seat_id="r1")
    a.call_completed("x", 3, "caller")
    out = a.enqueue("y", "rescue", 2, 4)
    assert next(e for e in out if e.kind is EventKind.OFFER).seat_id == "r2"
    a.seat_answered("y", 11, seat_id="r2")  # waited 7 s: beyond rescue's own 5 s threshold
    q = next(q for q in a.queues_view(12) if q["skill"] == "rescue")
    assert (q["answered"], q["answered_within_sl"]) == (2, 1)
    assert q["policy"]["strategy"] == "fewest_calls" and q["policy"]["sl_threshold_s"] == 5
