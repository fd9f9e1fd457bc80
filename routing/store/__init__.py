"""Persistence of the routing service: the event log, its projections and the restart state."""

from __future__ import annotations

from routing.store.calls import CallRecords
from routing.store.database import create_schema, make_engine
from routing.store.models import metadata
from routing.store.restore import load_callbacks, load_state
from routing.store.writer import EventWriter

__all__ = ["CallRecords", "EventWriter", "create_schema", "load_callbacks", "load_state", "make_engine", "metadata"]
