"""The ACD's refusals, in their own module so seats, queues and the ACD can share them.

``routing.acd`` re-exports every name here; callers import them from there.
"""

from __future__ import annotations


class RoutingError(Exception):
    """Base of the ACD's refusals; the API maps them to 404/409."""


class UnknownSeat(RoutingError):
    pass


class UnknownCall(RoutingError):
    pass


class UnknownSkill(RoutingError):
    pass


class DuplicateId(RoutingError):
    """A seat or call id that is already known (a second ``add_seat`` / ``enqueue``)."""


class IllegalTransition(RoutingError):
    """A seat or call transition that the state machine does not allow (e.g. on_call -> reserved)."""
