"""Matching what the store says is in progress with what is really alive (issue 13).

Two moments lose calls: a whole node stops (every media worker with it), and one media worker
dies (while the control process runs, or while it is itself being restarted: ``died_with_workers``).  A restart of the control process alone loses none: the workers keep
their calls and list them when they reconnect (``Hello.calls``), so only what no worker carries
is closed as lost.  In both the callers' SIP legs are gone, so nothing may stay queued for
them (a ghost offered to a seat would ring nobody and penalise the seat): each such call is closed
with a reason (``lost_node_failure`` / ``lost_worker_failure``), the seat it held is freed without
a ring-no-answer penalty, and the caller joins the callback list with the IVR's answers.

The node calls ``live_calls`` before the routing service restores its state and
``worker_lost`` when the pool reports a dead worker; the decisions themselves are the routing
service's (``RoutingService.start(live_calls=...)``, ``RoutingService.call_lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from journey.stages import WAITING, Stage
from routing.store.reconcile import LOST_WORKER_FAILURE

if TYPE_CHECKING:
    from api.twilio.calls import TwilioCalls
    from gateway.callflow import CallDirector

log = logging.getLogger("gateway.reconcile")

#: Where a Twilio caller makes a webhook every few seconds (``api.twilio.store`` saves ``stage``):
#: one not heard from after a restart is gone.  A bridged caller makes none until the end.
UNCLAIMED_STAGES = frozenset(s.value for s in (Stage.ANSWERED, Stage.IN_IVR, *WAITING))


def live_calls(pool: Any) -> set[str]:
    """The calls whose media is alive on this node's workers right now (what they said at hello).

    At a whole-node start the workers are new, so this is empty: every call the store still shows
    in progress for this node is lost.  A control process started again by the node's supervisor
    finds the workers running: their calls keep their place, their seat and their recording.
    """
    if pool is None:
        return set()
    return set(getattr(pool, "call_worker", {}) or {})


async def live_calls_at_start(pool: Any, engine: Any, node_id: str) -> set[str]:
    """``live_calls`` plus the Twilio calls still in progress: their media is at Twilio, and their
    next webhook continues them on the restarted node (``routing.store.journeys``)."""
    from routing.store.journeys import JourneyStore

    alive = live_calls(pool)
    try:
        alive |= await JourneyStore(engine).in_progress(node_id, time.time())
    except Exception:  # no journeys to keep: they are reconciled as lost, with a callback
        log.exception("journeys_unreadable")
    return alive


async def died_with_workers(engine: Any, node_id: str, deaths: list[dict[str, Any]], alive: set[str]) -> set[str]:
    """The calls this node has open, not alive, whose media worker died after they started.

    A control process started again by the supervisor cannot tell from the workers' hellos alone
    why a call is gone: the replaced worker knows nothing of the calls of the one that died.  The
    supervisor remembers which workers died and when (``deaths``, ``WorkerProcesses.deaths``), and
    each call's ``CALLSTART`` names the worker that answered it: a call gone with its worker is
    ``lost_worker_failure``, as it would have been with the control process there; the rest of the
    gone calls are ``lost_node_failure``."""
    if not deaths:
        return set()
    from sqlalchemy import select

    from routing.events import EventKind
    from routing.store.models import calls, events

    died: dict[int, list[float]] = {}
    for d in deaths:
        died.setdefault(int(d["worker_id"]), []).append(float(d["died_at"]))
    out: set[str] = set()
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(calls.c.id, calls.c.started_at, events.c.data)
            .select_from(calls.join(events, events.c.call_id == calls.c.id))
            .where(calls.c.ended_at.is_(None), calls.c.node_id == node_id,
                   events.c.kind == EventKind.CALLSTART.value))).all()
    for call_id, started_at, data in rows:
        if call_id in alive or not isinstance(data, dict) or data.get("worker_id") is None:
            continue
        try:
            wid = int(data["worker_id"])
        except (TypeError, ValueError):
            continue
        if any(at >= (started_at or 0.0) for at in died.get(wid, ())):
            out.add(call_id)
    return out


def worker_lost(director: CallDirector | None, routing: Any, call_ids: Iterable[str]) -> list[str]:
    """Record every call of a dead media worker as lost, with a callback; returns the call ids
    handled.  Calls that were in the IVR, waiting, ringing a seat or talking to one are all called
    back: the caller did not choose to hang up.  A call the director knows ends through its journey
    (``CallJourney.line_lost``: the callback carries the caller's number, the IVR's answers and
    the stage it was lost in); one it does not know (its start never reached the control process)
    still leaves the ACD with a callback."""
    done: list[str] = []
    for call_id in sorted(call_ids):
        try:
            if director is None or not director.line_lost(call_id, LOST_WORKER_FAILURE):
                routing.call_lost(call_id, LOST_WORKER_FAILURE)
                log.warning("call_lost", extra={"call_id": call_id, "reason": LOST_WORKER_FAILURE,
                                                "stage": None})
        except Exception:
            log.exception("call_lost_failed", extra={"call_id": call_id})
            continue
        done.append(call_id)
    return done


def talking_at_hello(pool: Any) -> dict[str, str]:
    """Call id -> seat id of the calls the workers carry bridged to a seat (a control restart)."""
    live = getattr(pool, "live_at_hello", {}) or {}
    return {cid: c.seat_id for cid, (_w, c) in live.items() if c.seat_state == "bridged" and c.seat_id}


async def seal_after_crash(catalog: Any, calls: Any, now: float, open_calls: Iterable[str] = ()) -> list[Any]:
    """At start: seal what this node's crash left unsealed (only its own recordings: another
    node's live ones are not touched, nor those of ``open_calls``, still being recorded by a
    worker) and link each to its call record, which the lost call's ``CALLEND`` could not do."""
    from recordings.catalog import RecordingStatus
    from recordings.closing import recover_unclosed

    rows = await recover_unclosed(catalog, open_calls, now)
    for row in rows:
        if row.status is RecordingStatus.CLOSED:
            try:
                await calls.upsert_call(row.call_id, recording_id=row.id)
            except Exception:
                log.exception("recording_link_failed", extra={"call_id": row.call_id})
    return rows


# -- leftovers of a crashed control process ----------------------------------------------------------
def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def clear_leftovers(run_dir: Path, wait_s: float = 5.0) -> list[int]:
    """Before a node starts on ``run_dir``: end what a crashed control process of the *same* node
    left running (its Kamailio runs in its own session and keeps the SIP port; a media worker may
    not have noticed yet).  Nothing is touched while the process that wrote ``node.pid`` is alive
    (another node on this data dir: the port check then says so), and only processes whose pid
    file is in ``run_dir`` and whose command line names ``run_dir`` are ended, so a reused pid is
    never killed.  Returns the ids ended.
    """
    if not run_dir.is_dir():
        return []
    node_pid = _read_pid(run_dir / "node.pid")  # the node's supervisor (this process's parent)
    if node_pid and node_pid not in (os.getpid(), os.getppid()) and _alive(node_pid):
        return []
    killed: list[int] = []
    markers = {str(run_dir), str(run_dir.resolve())}
    for pid_file in [run_dir / "kamailio.pid", *sorted(run_dir.glob("worker-*.pid"))]:
        pid = _read_pid(pid_file)
        if pid and _alive(pid) and any(m in _cmdline(pid) for m in markers):
            try:
                if pid_file.name == "kamailio.pid":
                    os.killpg(pid, signal.SIGKILL)  # Kamailio and its children: one process group
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed.append(pid)
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + wait_s
    while any(_alive(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    if killed:
        log.warning("leftover_processes_ended", extra={"pids": killed, "run_dir": str(run_dir)})
    return killed


def wait_gone(pid_file: Path, wait_s: float = 10.0) -> None:
    """The process named by ``pid_file`` (the API process of a control process that died: it gets
    SIGTERM then) has let go of its port; killed if it has not within ``wait_s``."""
    pid = _read_pid(pid_file)
    if not pid or pid == os.getpid():
        return
    deadline = time.monotonic() + wait_s
    while _alive(pid) and "gateway.api_process" in _cmdline(pid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 2.0
        time.sleep(0.05)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


async def expire_unclaimed(routing: Any, twilio: TwilioCalls | None, engine: Any, node_id: str, call_ids: Iterable[str],
                           after_s: float) -> list[str]:
    """Twilio calls kept alive at start whose caller never came back: closed as lost.

    A Twilio caller who hung up while the node was down is still "in progress" in the store (the
    status callback met the dead node).  Kept in the queue, it would be offered to seat after seat
    and never dialled: a ghost.  A caller in the IVR or the queue makes a webhook every few
    seconds, so one not heard from ``after_s`` after the start is gone: it is closed
    ``lost_node_failure`` with a callback.  (Should it call after all, its journey is adopted and
    queued again at the head.)  Bridged calls make no webhook until the conversation ends and are
    left alone.
    """
    from routing.events import Event, EventKind
    from routing.store.journeys import JourneyStore
    from routing.store.reconcile import LOST_NODE_FAILURE

    await asyncio.sleep(after_s)
    journeys = JourneyStore(engine)
    claimed = set() if twilio is None else {c.call_id for c in [*twilio.live.values(), *twilio.ended.values()]}
    expired: list[str] = []
    for call_id in sorted(set(call_ids) - claimed):
        try:
            state = await journeys.load(call_id)
            if state is None or state.get("stage") not in UNCLAIMED_STAGES:
                continue
            entry = routing.acd.call_view(call_id)
            info: dict[str, Any] = {"lost_in": state["stage"], "ingress": "twilio"}
            if state.get("ivr"):
                info["ivr"] = state["ivr"]
            routing.call_lost(call_id, LOST_NODE_FAILURE, caller=state.get("caller"), info=info,
                              enqueued_at=(entry or {}).get("enqueued_at", state.get("started_at")))
            routing.record([Event(EventKind.CALLEND, time.time(), call_id=call_id, data={
                "reason": LOST_NODE_FAILURE, "ended_by": "node_failure"})])
            await journeys.save(call_id, node_id, "twilio", state, ended=True)
        except Exception:
            log.exception("twilio_expiry_failed", extra={"call_id": call_id})
            continue
        log.warning("call_lost", extra={"call_id": call_id, "reason": LOST_NODE_FAILURE, "ingress": "twilio"})
        expired.append(call_id)
    return expired


__all__ = ["clear_leftovers", "died_with_workers", "expire_unclaimed", "live_calls", "live_calls_at_start", "seal_after_crash",
           "talking_at_hello", "wait_gone", "worker_lost"]
