"""Folding a batch of events into the tables that a restart and the call records read.

A batch is reduced in memory to its *net* effect first (the last status of each seat, one row
change per call, the queue entries that still wait at the end of the batch), then applied with a
handful of bulk statements.  That keeps a 500-event batch at a few round trips instead of a
thousand, which is what lets persistence keep up with the ACD.

Why a ringing call stays in ``queue_entries``: an ``OFFER`` only reserves a seat; if the node dies
while the seat rings, the caller is still on the line and must come back *waiting*, in its place.
Only ``CONNECT``, ``ABANDON``, ``COMPLETE`` and ``CALLEND`` take a call out of the queue.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, func, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from routing.events import Event, EventKind
from routing.store.bounds import bounded, bounded_rows
from routing.store.models import callbacks, calls, events, queue_entries, seats

#: Call columns that keep their first value: a later event never rewrites when the call started,
#: first queued or ended (a CALLEND after an ABANDON keeps the outcome "abandoned").
FIRST_WINS = frozenset({"started_at", "queued_at", "ended_at", "end_reason", "ended_by", "answered_at", "node_id"})

LEAVES_QUEUE = frozenset({EventKind.CONNECT, EventKind.ABANDON, EventKind.COMPLETE, EventKind.CALLEND})
#: ``COMPLETE.ended_by`` values that end one seat's part of a call, not the call: a blind transfer
#: and a seat lost mid-conversation.  The caller is still on the line and queued again, so the
#: call record is not ended by them (its end is the next real one: first wins).
SEAT_PART_ENDS = frozenset({"transfer", "seat_lost"})


@dataclass
class QueueChange:
    op: str  # "upsert" | "replace" (delete, then insert) | "update" | "delete"
    row: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchChanges:
    event_rows: list[dict[str, Any]] = field(default_factory=list)
    seats: dict[str, dict[str, Any] | None] = field(default_factory=dict)  # None = delete
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    queue: dict[str, QueueChange] = field(default_factory=dict)
    callbacks: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (action, row), in order


def _outcome_name(outcome: Any) -> str | None:
    if outcome is None:
        return None
    if isinstance(outcome, dict):
        for key in ("reason", "name", "id", "skill"):
            if outcome.get(key) is not None:
                return str(outcome[key])[:64]
        return None
    return str(outcome)[:64]


def event_row(ev: Event, node_id: str | None) -> dict[str, Any]:
    return {"at": ev.at, "kind": ev.kind.value, "call_id": ev.call_id, "seat_id": ev.seat_id,
            "skill": ev.skill, "data": ev.data or {}, "node_id": node_id}


def _callback_change(ev: Event, d: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """CALLBACK events: ``queued`` (an abandoned caller joins the list), ``taken``, ``completed``."""
    action = d.get("action") or "queued"
    cid = ev.call_id
    if action == "queued":
        wait = d.get("wait_s", d.get("waited_s"))
        enq = d.get("enqueued_at")
        if enq is None:  # the ACD says how long the caller waited; the place is abandon time - wait
            enq = ev.at - float(wait or 0.0)
        return "queued", {
            "call_id": cid, "caller": d.get("caller"), "skill": ev.skill, "enqueued_at": float(enq),
            "abandoned_at": ev.at, "waited_s": wait, "status": "pending",
        }
    if action == "taken":
        return "taken", {"call_id": cid, "status": "taken", "done_by": ev.seat_id}
    return "completed", {"call_id": cid, "status": "done", "done_at": ev.at}


def fold(batch: list[Event], node_id: str | None, now: float) -> BatchChanges:
    """The net changes of a batch, in event order (pure: no I/O)."""
    ch = BatchChanges()

    def call(call_id: str, **values: Any) -> None:
        # the node that logged a call first owns it: a restart restores only its own waiting calls
        row = ch.calls.setdefault(call_id, {"node_id": node_id} if node_id else {})
        for k, v in values.items():
            if v is None:
                continue
            if k in FIRST_WINS and k in row:
                continue
            row[k] = v

    for ev in batch:
        d = ev.data or {}
        ch.event_rows.append(event_row(ev, node_id))
        k = ev.kind
        if k in (EventKind.SEATSTATUS, EventKind.SEATADDED) and ev.seat_id:
            row = ch.seats.get(ev.seat_id) or {}
            if k is EventKind.SEATADDED:
                for src, dst in (("contact", "contact"), ("name", "name"), ("skills", "skills")):
                    if d.get(src) is not None:
                        row[dst] = d[src]
                if isinstance(row.get("skills"), list):
                    row["skills"] = {s: 0 for s in row["skills"]}
            if d.get("status") is not None and not (k is EventKind.SEATADDED and d.get("updated")):
                row["status"] = str(d["status"])
                row["reason"] = d.get("reason")
                row["since"] = ev.at
            ch.seats[ev.seat_id] = row
        elif k is EventKind.SEATREMOVED and ev.seat_id:
            ch.seats[ev.seat_id] = None

        if not ev.call_id:
            continue
        cid = ev.call_id
        if k is EventKind.CALLSTART:
            if d.get("node_id"):
                ch.calls.setdefault(cid, {})["node_id"] = d["node_id"]
            call(cid, started_at=ev.at, caller=d.get("caller"), callee=d.get("callee"),
                 ingress=d.get("ingress"), answered_at=d.get("answered_at"))
        elif k is EventKind.IVRDONE:
            record = d.get("record", d)
            rec = record if isinstance(record, dict) else {}
            call(cid, ivr=record, outcome=_outcome_name(rec.get("outcome") or d.get("reason")),
                 skill=ev.skill or d.get("skill") or rec.get("skill"),
                 priority=d.get("priority", rec.get("priority")))
        elif k is EventKind.ENTERQUEUE:
            enq = float(d.get("enqueued_at", ev.at))
            prio = int(d.get("priority", 0) or 0)
            call(cid, skill=ev.skill, priority=prio, queued_at=enq, caller=d.get("caller"))
            row = {"call_id": cid, "skill": ev.skill, "priority": prio, "enqueued_at": enq,
                   "caller": d.get("caller"), "info": d.get("info") or {}}
            prev = ch.queue.get(cid)
            if prev is None or prev.op == "update":
                ch.queue[cid] = QueueChange("upsert", {**row, **(prev.row if prev else {})})
            elif prev.op == "delete":
                ch.queue[cid] = QueueChange("replace", row)
            else:  # a re-queue inside the batch keeps the first enqueue time
                prev.row.update({**row, "enqueued_at": prev.row["enqueued_at"]})
        elif k is EventKind.ESCALATE:
            target = d.get("to") or ev.skill
            if target:
                call(cid, skill=target)
                prev = ch.queue.get(cid)
                if prev is None:
                    ch.queue[cid] = QueueChange("update", {"call_id": cid, "skill": target})
                elif prev.op != "delete":
                    prev.row["skill"] = target
        elif k is EventKind.CONNECT:
            call(cid, seat_id=ev.seat_id, seat_answered_at=ev.at)
        elif k is EventKind.ABANDON:
            call(cid, ended_at=ev.at, end_reason="abandoned", ended_by="caller")
        elif k is EventKind.COMPLETE and d.get("ended_by") in SEAT_PART_ENDS:
            call(cid)
        elif k is EventKind.COMPLETE:
            call(cid, ended_at=ev.at, end_reason="completed", ended_by=d.get("ended_by"))
        elif k is EventKind.CALLEND:
            call(cid, ended_at=ev.at, end_reason=d.get("reason") or "ended", ended_by=d.get("ended_by"),
                 recording_id=d.get("recording_id"))
        elif k is EventKind.CALLBACK:
            ch.callbacks.append(_callback_change(ev, d))
        else:
            call(cid)  # every call in the log gets a row, even one that only rang
        if k in LEAVES_QUEUE:
            ch.queue[cid] = QueueChange("delete")
    for row in ch.calls.values():
        row["updated_at"] = now
    return ch


def dialect_insert(conn: AsyncConnection, table: Any) -> Any:
    """INSERT with ON CONFLICT support for the connection's dialect (SQLite or PostgreSQL)."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {name!r}")


def _group_by_keys(rows: list[dict[str, Any]]) -> dict[frozenset[str], list[dict[str, Any]]]:
    groups: dict[frozenset[str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(frozenset(r), []).append(r)
    return groups


def _bounded(ch: BatchChanges) -> BatchChanges:
    """Every text bound for a column normalised and cut to its length (``routing.store.bounds``):
    a caller id of 300 characters must not fail the batch it rides in."""
    return BatchChanges(
        event_rows=bounded_rows(events, ch.event_rows),
        seats=ch.seats,  # bounded below, with their ids
        calls=ch.calls,
        queue={cid: QueueChange(c.op, bounded(queue_entries, c.row)) for cid, c in ch.queue.items()},
        callbacks=[(action, bounded(callbacks, row)) for action, row in ch.callbacks],
    )


#: The first key of the call-row locks (``pg_advisory_xact_lock(int4, int4)``: a key space apart
#: from the routing channel's one-key locks).
CALL_ROW_LOCKS = 0x68314331


def call_lock_keys(call_ids: list[str]) -> list[int]:
    """One signed 32-bit key per call id, distinct and ascending: the order every writer locks in."""
    return sorted({int.from_bytes(hashlib.blake2b(c.encode(), digest_size=4).digest(), "big", signed=True)
                   for c in call_ids})


async def _lock_calls_in_order(conn: AsyncConnection, call_ids: list[str]) -> None:
    """In cluster mode two writers upsert the same ``calls`` rows: the leader's (its decisions:
    queued, offered, answered) and the node's (its calls' journey).  Their upserts come in batch
    order, so two batches could take two rows' locks in opposite orders, and PostgreSQL settles a
    deadlock only after ``deadlock_timeout`` (1 s): the leader's writer stalled for a second and
    the callers' queue wait with it (seen in ``bench cluster``).  Taking the rows' locks first, in
    one global order, leaves waits but no cycle.  SQLite locks the whole database instead."""
    if not call_ids or conn.dialect.name != "postgresql":
        return
    await conn.execute(text("SELECT pg_advisory_xact_lock(:cls, k) FROM unnest(CAST(:keys AS integer[])) AS k"),
                       {"cls": CALL_ROW_LOCKS, "keys": call_lock_keys(call_ids)})


async def apply(conn: AsyncConnection, ch: BatchChanges, now: float) -> None:
    """Write the log rows and the net projection changes inside the caller's transaction."""
    ch = _bounded(ch)
    if ch.event_rows:
        await conn.execute(events.insert(), ch.event_rows)

    # seats: upsert what the events said, delete removed ones
    removed = [sid for sid, row in ch.seats.items() if row is None]
    if removed:
        await conn.execute(delete(seats).where(seats.c.id.in_(removed)))
    seat_rows = bounded_rows(seats, [{"id": sid, **row, "updated_at": now} for sid, row in ch.seats.items()
                                     if row is not None])
    for keys, rows in _group_by_keys(seat_rows).items():
        ins = dialect_insert(conn, seats)
        set_ = {k: ins.excluded[k] for k in keys if k != "id"}
        await conn.execute(ins.on_conflict_do_update(index_elements=["id"], set_=set_), rows)

    # calls: one upsert per shape of change; first-wins columns only fill a NULL
    await _lock_calls_in_order(conn, list(ch.calls))
    call_rows = bounded_rows(calls, [{"id": cid, **row} for cid, row in ch.calls.items()])
    for keys, rows in _group_by_keys(call_rows).items():
        ins = dialect_insert(conn, calls)
        set_: dict[str, Any] = {}
        for k in keys:
            if k == "id":
                continue
            set_[k] = func.coalesce(calls.c[k], ins.excluded[k]) if k in FIRST_WINS else ins.excluded[k]
        await conn.execute(ins.on_conflict_do_update(index_elements=["id"], set_=set_), rows)

    # queue entries: deletes (and the delete half of a replace) first, then inserts/updates
    gone = [cid for cid, c in ch.queue.items() if c.op in ("delete", "replace")]
    if gone:
        await conn.execute(delete(queue_entries).where(queue_entries.c.call_id.in_(gone)))
    upserts = [c.row for c in ch.queue.values() if c.op in ("upsert", "replace")]
    if upserts:
        ins = dialect_insert(conn, queue_entries)
        stmt = ins.on_conflict_do_update(
            index_elements=["call_id"],
            set_={"skill": ins.excluded.skill, "priority": ins.excluded.priority,
                  "caller": func.coalesce(ins.excluded.caller, queue_entries.c.caller)},
        )
        await conn.execute(stmt, upserts)
    moves = [{"cid": c.row["call_id"], "new_skill": c.row["skill"]} for c in ch.queue.values() if c.op == "update"]
    if moves:
        stmt = (update(queue_entries).where(queue_entries.c.call_id == bindparam("cid"))
                .values(skill=bindparam("new_skill")))
        await conn.execute(stmt, moves)

    for action, row in ch.callbacks:
        if action == "queued":
            ins = dialect_insert(conn, callbacks)
            await conn.execute(ins.on_conflict_do_nothing(index_elements=["call_id"]), row)
        else:
            values = {k: v for k, v in row.items() if k != "call_id"}
            await conn.execute(update(callbacks).where(callbacks.c.call_id == row["call_id"]).values(**values))
