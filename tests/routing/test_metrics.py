"""Metrics are folded from events: the formulas of docs/METRICS.md, and no double counting."""

from __future__ import annotations

from routing.acd import Acd, AcdConfig, SeatSpec, SkillPolicy
from routing.metrics import Metrics
from routing.status import SeatStatus as S

R = "rescue"


def test_formulas_and_no_double_count_across_ronas() -> None:
    a = Acd(AcdConfig(service_level_s=20, callback_after_s=1000, rona_not_ready_after=5, reject_delay_s=0,
                      policies={R: SkillPolicy(wrap_up_s=10)}))
    a.add_seat(SeatSpec("s1", "sip:s1@h", {R: 0}, status=S.AVAILABLE), 0)
    a.add_seat(SeatSpec("s2", "sip:s2@h", {R: 0}, status=S.AVAILABLE), 0)
    a.enqueue("fast", R, 3, 0)           # s1
    a.ring_no_answer("fast", 5)          # -> s2
    a.seat_answered("fast", 10)          # wait 10: within SL
    a.call_completed("fast", 70, "caller")
    a.enqueue("slow", R, 3, 20)          # s1 (the RONA seat is available again)
    a.seat_answered("slow", 50)          # wait 30: not within SL
    a.call_completed("slow", 60, "seat")
    a.end_wrap_up("s1", 65)
    a.tick(80)                           # s2's wrap-up ends at 80
    a.set_status("s1", S.NOT_READY, 81, "x")
    a.set_status("s2", S.NOT_READY, 81, "x")
    a.enqueue("short_abandon", R, 3, 100)
    a.caller_abandoned("short_abandon", 105)   # within SL: not in the denominator
    a.enqueue("long_abandon", R, 3, 100)
    a.caller_abandoned("long_abandon", 140)    # after SL: counts against the service level
    c = a.metrics.cumulative(R)
    assert (c.offered, c.attempts, c.rona, c.answered, c.abandoned) == (4, 3, 1, 2, 2)
    assert c.answered_within_sl == 1 and c.abandoned_after_sl == 1
    assert c.service_level == 1 / (2 + 1)
    assert c.asa_s == (10 + 30) / 2
    assert c.aht_s == ((60 + 10) + (10 + 5)) / 2     # talk + wrap-up per handled call


def test_replaying_the_event_log_gives_the_same_figures_and_intervals_split_by_time() -> None:
    a = Acd(AcdConfig(policies={R: SkillPolicy(wrap_up_s=0)}))
    log = []
    log += a.add_seat(SeatSpec("s1", "sip:s1@h", {R: 0}, status=S.AVAILABLE), 0)
    for i, t in enumerate((100.0, 1000.0, 1900.0)):
        log += a.enqueue(f"c{i}", R, 3, t)
        log += a.seat_answered(f"c{i}", t + 5)
        log += a.call_completed(f"c{i}", t + 50, "caller")
    replay = Metrics(interval_s=900)
    replay.observe_all(log)
    assert replay.cumulative(R).to_dict() == a.metrics.cumulative(R).to_dict()
    assert [replay.interval(R, b).answered for b in (0.0, 900.0, 1800.0)] == [1, 1, 1]
    assert replay.interval(R, 2700.0).answered == 0
    assert replay.bucket_of(1799.9) == 900.0
