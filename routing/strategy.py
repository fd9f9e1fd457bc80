"""Which free seat gets the call: a strategy is a sort key over the available seats of a skill.

The key is computed when a seat becomes offerable and stays fixed while it waits, so the per-skill
index stays sorted without rescoring; the first element is always the seat's penalty for the skill
(0 = first choice), so every strategy only chooses among the lowest-penalty free seats.
"""

from __future__ import annotations

from typing import Protocol

from routing.seat import Seat


class Strategy(Protocol):
    name: str

    def key(self, seat: Seat, penalty: int) -> tuple: ...


class LongestIdle:
    """The seat idle longest (since its last call ended or since it became available) goes first."""

    name = "longest_idle"

    def key(self, seat: Seat, penalty: int) -> tuple:
        return (penalty, seat.idle_since, seat.order, seat.id)


class FewestCalls:
    """Spread the load: the seat that has taken the fewest calls, then the longest idle."""

    name = "fewest_calls"

    def key(self, seat: Seat, penalty: int) -> tuple:
        return (penalty, seat.calls_taken, seat.idle_since, seat.order, seat.id)


class RoundRobin:
    """The seat offered a call least recently (``rrmemory`` in app_queue)."""

    name = "round_robin"

    def key(self, seat: Seat, penalty: int) -> tuple:
        return (penalty, seat.last_offer, seat.order, seat.id)


STRATEGIES: dict[str, type[LongestIdle] | type[FewestCalls] | type[RoundRobin]] = {
    "longest_idle": LongestIdle,
    "fewest_calls": FewestCalls,
    "round_robin": RoundRobin,
}


def strategy_named(name: str) -> Strategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown routing strategy {name!r}; one of {', '.join(STRATEGIES)}") from None
