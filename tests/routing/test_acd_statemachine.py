"""Random event sequences against the ACD: it never loses a caller, never double-books a seat, and
its metrics always add up (offered + escalated_in = answered + abandoned + waiting + ringing + escalated_out).
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from routing.acd import Acd, AcdConfig, IllegalTransition, SeatSpec, SkillPolicy
from routing.queue import EntryState
from routing.status import SeatStatus as S

SKILLS = ["rescue", "intake_guidance", "insurance_claim"]
SEATS = {
    "a": {"rescue": 0},
    "b": {"rescue": 1, "intake_guidance": 0},
    "c": {"intake_guidance": 0, "insurance_claim": 2},
    "d": {"insurance_claim": 0},
}


class AcdMachine(RuleBasedStateMachine):
    @initialize(strategy=st.sampled_from(["longest_idle", "fewest_calls", "round_robin"]),
                rona_after=st.integers(1, 3), reject_delay=st.sampled_from([0.0, 3.0]))
    def setup(self, strategy: str, rona_after: int, reject_delay: float) -> None:
        self.now = 1000.0
        self.acd = Acd(AcdConfig(
            ring_timeout_s=10, rona_not_ready_after=rona_after, reject_delay_s=reject_delay, strategy=strategy,
            callback_after_s=20, policies={
                "rescue": SkillPolicy(wrap_up_s=5, escalate_after_s=25, escalate_to="intake_guidance"),
                "insurance_claim": SkillPolicy(wrap_up_s=0),
            }))
        for seat_id, skills in SEATS.items():
            self.acd.add_seat(SeatSpec(seat_id, f"sip:{seat_id}@127.0.0.1", skills, status=S.AVAILABLE), self.now)
        self.entered: set[str] = set()
        self.finished: set[str] = set()
        self.n = 0

    def calls_in(self, *states: EntryState) -> list[str]:
        return sorted(c.id for c in self.acd._calls.values() if c.state in states)

    def step(self, dt: float = 0.5) -> None:
        self.now += dt

    # -- rules ---------------------------------------------------------------------------------
    @rule(skill=st.sampled_from(SKILLS), priority=st.integers(1, 4))
    def enqueue(self, skill: str, priority: int) -> None:
        self.step()
        self.n += 1
        call_id = f"c{self.n}"
        self.acd.enqueue(call_id, skill, priority, self.now, caller=f"13{self.n}")
        self.entered.add(call_id)

    @precondition(lambda self: self.calls_in(EntryState.RINGING))
    @rule(data=st.data())
    def answer(self, data: st.DataObject) -> None:
        self.step()
        self.acd.seat_answered(data.draw(st.sampled_from(self.calls_in(EntryState.RINGING))), self.now)

    @precondition(lambda self: self.calls_in(EntryState.RINGING))
    @rule(data=st.data())
    def rona(self, data: st.DataObject) -> None:
        self.step()
        self.acd.ring_no_answer(data.draw(st.sampled_from(self.calls_in(EntryState.RINGING))), self.now)

    @precondition(lambda self: self.calls_in(EntryState.RINGING))
    @rule(data=st.data(), reason=st.sampled_from(["busy", "declined", "unreachable", "hangup_before_bridge"]))
    def seat_failed(self, data: st.DataObject, reason: str) -> None:
        self.step()
        self.acd.seat_failed(data.draw(st.sampled_from(self.calls_in(EntryState.RINGING))), self.now, reason)

    @precondition(lambda self: self.calls_in(EntryState.WAITING, EntryState.RINGING))
    @rule(data=st.data())
    def abandon(self, data: st.DataObject) -> None:
        self.step()
        call_id = data.draw(st.sampled_from(self.calls_in(EntryState.WAITING, EntryState.RINGING)))
        self.acd.caller_abandoned(call_id, self.now)
        self.finished.add(call_id)

    @precondition(lambda self: self.calls_in(EntryState.CONNECTED))
    @rule(data=st.data(), by=st.sampled_from(["caller", "seat"]))
    def complete(self, data: st.DataObject, by: str) -> None:
        self.step()
        call_id = data.draw(st.sampled_from(self.calls_in(EntryState.CONNECTED)))
        self.acd.call_completed(call_id, self.now, by)
        self.finished.add(call_id)

    @rule(seat=st.sampled_from(sorted(SEATS)), status=st.sampled_from([S.AVAILABLE, S.NOT_READY, S.LOGGED_OUT]))
    def set_status(self, seat: str, status: S) -> None:
        self.step()
        before = self.acd.seat_view(seat, self.now)["status"]
        try:
            self.acd.set_status(seat, status, self.now, "break")
        except IllegalTransition:
            assert before in ("reserved", "on_call")
        else:
            assert before not in ("reserved", "on_call")

    @rule(seat=st.sampled_from(sorted(SEATS)))
    def end_wrap_up(self, seat: str) -> None:
        self.step()
        if self.acd.seat_view(seat, self.now)["status"] == "wrap_up":
            self.acd.end_wrap_up(seat, self.now)
        else:
            try:
                self.acd.end_wrap_up(seat, self.now)
            except IllegalTransition:
                pass
            else:
                raise AssertionError("end_wrap_up outside wrap-up was accepted")

    @rule(dt=st.floats(0.1, 30))
    def tick(self, dt: float) -> None:
        self.step(dt)
        self.acd.tick(self.now)
        deadline = self.acd.next_deadline()
        assert deadline is None or deadline > self.now

    # -- invariants ----------------------------------------------------------------------------
    @invariant()
    def never_loses_a_caller(self) -> None:
        if not hasattr(self, "acd"):
            return
        live = set(self.acd._calls)
        assert live == self.entered - self.finished
        for call in self.acd._calls.values():
            pos = self.acd.queue_position(call.id)
            assert (pos is not None) == (call.state is EntryState.WAITING)

    @invariant()
    def never_double_books(self) -> None:
        if not hasattr(self, "acd"):
            return
        holders: dict[str, str] = {}
        for view in self.acd.seats_view(self.now):
            if view["status"] in ("reserved", "on_call"):
                call_id = view["call_id"]
                assert call_id not in holders, f"{call_id} held by {holders.get(call_id)} and {view['id']}"
                holders[call_id] = view["id"]
                call = self.acd._calls[call_id]
                want = EntryState.RINGING if view["status"] == "reserved" else EntryState.CONNECTED
                assert call.state is want and call.seat_id == view["id"]
        for call in self.acd._calls.values():
            if call.state is not EntryState.WAITING:
                assert holders.get(call.id) == call.seat_id

    @invariant()
    def no_idle_seat_next_to_a_waiting_call(self) -> None:
        if not hasattr(self, "acd"):
            return
        for call in self.acd._calls.values():
            if call.state is EntryState.WAITING:
                free = set(self.acd._available[call.skill].seat_ids())
                assert free <= call.excluded, f"{call.id} waits while {free - call.excluded} are free"

    @invariant()
    def metrics_add_up(self) -> None:
        if not hasattr(self, "acd"):
            return
        views = {v["skill"]: v for v in self.acd.queues_view(self.now)}
        connected = {s: 0 for s in views}
        for call in self.acd._calls.values():
            if call.state is EntryState.CONNECTED:
                connected[call.skill] += 1
        for skill, v in views.items():
            entered = v["offered"] + v["escalated_in"]
            assert entered == v["answered"] + v["abandoned"] + v["waiting"] + v["ringing"] + v["escalated_out"]
            assert v["answered_within_sl"] <= v["answered"]
            assert v["answered"] >= connected[skill]
        # every ringing call holds exactly one reserved seat, every connected call one seat on a call
        statuses = [seat["status"] for seat in self.acd.seats_view(self.now)]
        ringing = [c for c in self.acd._calls.values() if c.state is EntryState.RINGING]
        assert statuses.count("reserved") == len(ringing) == sum(v["ringing"] for v in views.values())
        assert statuses.count("on_call") == sum(connected.values())
        assert sum(v["offered"] for v in views.values()) == len(self.entered)


AcdMachine.TestCase.settings = settings(max_examples=100, stateful_step_count=80, deadline=None,
                                        suppress_health_check=[HealthCheck.too_slow])
TestAcdStateMachine = AcdMachine.TestCase
