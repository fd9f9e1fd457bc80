"""Matching what the store says is in progress with what is really alive (issue 13).

Two moments lose calls: a whole node stops (every media worker with it), and one media worker
dies while the node runs.  In both the callers' SIP legs are gone, so nothing may stay queued for
them (a ghost offered to a seat would ring nobody and penalise the seat): each such call is closed
with a reason (``lost_node_failure`` / ``lost_worker_failure``), the seat it held is freed without
a ring-no-answer penalty, and the caller joins the callback list with the IVR's answers.

The node calls ``live_calls`` before the routing service restores its state and
``worker_lost`` when the pool reports a dead worker; the decisions themselves are the routing
service's (``RoutingService.start(live_calls=...)``, ``RoutingService.call_lost``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from routing.store.reconcile import LOST_WORKER_FAILURE

log = logging.getLogger("gateway.reconcile")


def live_calls(pool: Any) -> set[str]:
    """The calls whose media is alive on this node's workers right now.

    At a whole-node start the workers are started after routing, so this is empty: every call the
    store still shows in progress for this node is lost.  A control process that re-adopts running
    workers (a future control-only restart) passes their calls here and they keep their place.
    """
    if pool is None:
        return set()
    return set(getattr(pool, "call_worker", {}) or {})


def worker_lost(director: Any, routing: Any, call_ids: Iterable[str]) -> list[str]:
    """Record every call of a dead media worker as lost, with a callback, before the call flow
    forgets it; returns the call ids handled.  Calls that were in the IVR, waiting, ringing a seat
    or talking to one are all called back: the caller did not choose to hang up."""
    done: list[str] = []
    calls = getattr(director, "calls", {}) if director is not None else {}
    for call_id in sorted(call_ids):
        flow = calls.get(call_id)
        caller = getattr(flow, "caller", None)
        info: dict[str, Any] = {}
        state = getattr(getattr(flow, "state", None), "value", None)
        if state:
            info["lost_in"] = state
        ivr = getattr(flow, "ivr", None)
        if ivr is not None:
            try:
                info["ivr"] = ivr.record.to_dict()
            except Exception:  # the answers are a courtesy for the seat calling back
                log.exception("ivr_record_unreadable", extra={"call_id": call_id})
        try:
            routing.call_lost(call_id, LOST_WORKER_FAILURE, caller=caller, info=info,
                              enqueued_at=getattr(flow, "started_at", None))
        except Exception:
            log.exception("call_lost_failed", extra={"call_id": call_id})
            continue
        log.warning("call_lost", extra={"call_id": call_id, "reason": LOST_WORKER_FAILURE, "state": state})
        done.append(call_id)
    return done




async def seal_after_crash(catalog: Any, calls: Any, now: float) -> list[Any]:
    """At start, before any worker records: seal what this node's crash left unsealed (only its
    own recordings: another node's live ones are not touched) and link each to its call record,
    which the lost call's ``CALLEND`` could not do."""
    from recordings.catalog import RecordingStatus
    from recordings.closing import recover_unclosed

    rows = await recover_unclosed(catalog, [], now)
    for row in rows:
        if row.status is RecordingStatus.CLOSED:
            try:
                await calls.upsert_call(row.call_id, recording_id=row.id)
            except Exception:
                log.exception("recording_link_failed", extra={"call_id": row.call_id})
    return rows


__all__ = ["live_calls", "seal_after_crash", "worker_lost"]
