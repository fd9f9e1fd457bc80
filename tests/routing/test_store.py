"""The event log and its projections on SQLite and PostgreSQL: restart recovery, call records,
batching, and the database going away while calls go on."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from routing.acd import SeatSpec
from routing.events import Event, EventKind
from routing.status import SeatStatus
from routing.store import CallRecords, EventWriter, create_schema, load_callbacks, load_state, make_engine
from routing.store.models import events as events_table
from routing.store.models import metadata

pytestmark = pytest.mark.timeout(60)

K = EventKind


async def fresh_engine(url: str):
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await create_schema(engine)
    return engine


def seat_status(seat: str, status: str, at: float, reason: str | None = None, previous: str = "logged_out") -> Event:
    return Event(K.SEATSTATUS, at, seat_id=seat, data={"status": status, "previous": previous, "reason": reason})


def enqueue(call: str, skill: str, prio: int, at: float, caller: str = "13800000000", **data) -> Event:
    return Event(K.ENTERQUEUE, at, call_id=call, skill=skill,
                 data={"priority": prio, "caller": caller, "info": {"ivr": "x"}, **data})


async def test_restart_recovery_restores_seat_status_and_waiting_order(db_url: str) -> None:
    engine = await fresh_engine(db_url)
    writer = EventWriter(engine, "node-a", batch_window_s=0.01, max_batch=4)  # several batches
    await writer.start()
    writer.append([
        Event(K.SEATADDED, 1.0, seat_id="s1", data={"contact": "sip:s1@127.0.0.1:5091", "name": "一号",
                                                     "skills": {"online_review": 0, "rescue": 2}}),
        seat_status("s1", "available", 1.5),
        Event(K.SEATADDED, 1.0, seat_id="s2", data={"contact": "sip:s2@x", "skills": ["rescue"]}),
        seat_status("s2", "available", 2.0),
        seat_status("s2", "not_ready", 3.0, reason="no answer", previous="available"),
        seat_status("s3", "on_call", 4.0),  # a seat only the log knows about still comes back
        Event(K.SEATADDED, 1.0, seat_id="gone", data={"contact": "sip:g@x", "skills": {"rescue": 0}}),
        Event(K.SEATREMOVED, 2.0, seat_id="gone"),
    ])
    writer.append([
        enqueue("c-late", "rescue", 2, 20.0),
        enqueue("c-urgent", "rescue", 1, 30.0),
        enqueue("c-early", "rescue", 2, 10.0),
        enqueue("c-ringing", "rescue", 2, 15.0),
        Event(K.OFFER, 31.0, call_id="c-ringing", seat_id="s1", skill="rescue", data={"ring_timeout_s": 20}),
        enqueue("c-talking", "rescue", 2, 5.0),
        Event(K.OFFER, 6.0, call_id="c-talking", seat_id="s1", skill="rescue"),
        Event(K.CONNECT, 7.0, call_id="c-talking", seat_id="s1", skill="rescue", data={"wait_s": 2.0}),
        enqueue("c-gone", "rescue", 2, 8.0),
        Event(K.ABANDON, 9.0, call_id="c-gone", skill="rescue", data={"wait_s": 1.0}),
        enqueue("c-esc", "online_review", 3, 11.0),
        Event(K.ESCALATE, 40.0, call_id="c-esc", skill="intake_guidance",
              data={"from": "online_review", "to": "intake_guidance"}),
    ])
    await writer.flush()
    # a RONA puts the call back at the head: a repeated ENTERQUEUE must not move its enqueue time
    writer.append([
        Event(K.RINGNOANSWER, 51.0, call_id="c-ringing", seat_id="s1", skill="rescue"),
        enqueue("c-ringing", "rescue", 2, 51.0),
    ])
    await writer.stop()
    assert writer.stats()["batches"] >= 4
    await engine.dispose()

    engine2 = make_engine(db_url)  # a new process: nothing in memory
    try:
        seats, waiting = await load_state(engine2)
    finally:
        await engine2.dispose()
    by_id = {s.spec.id: s for s in seats}
    assert set(by_id) == {"s1", "s2", "s3"}
    assert by_id["s1"].status is SeatStatus.AVAILABLE and by_id["s1"].since == 1.5
    assert by_id["s1"].spec.contact == "sip:s1@127.0.0.1:5091"
    assert by_id["s1"].spec.skills == {"online_review": 0, "rescue": 2}
    assert by_id["s2"].status is SeatStatus.NOT_READY and by_id["s2"].reason == "no answer"
    assert by_id["s2"].spec.skills == {"rescue": 0}
    assert by_id["s3"].status is SeatStatus.ON_CALL

    assert [(e.call_id, e.enqueued_at) for e in waiting] == [
        ("c-urgent", 30.0), ("c-early", 10.0), ("c-ringing", 15.0), ("c-late", 20.0), ("c-esc", 11.0)]
    esc = next(e for e in waiting if e.call_id == "c-esc")
    assert esc.skill == "intake_guidance" and esc.priority == 3
    assert waiting[0].caller == "13800000000" and waiting[0].info == {"ivr": "x"}


async def test_a_node_restores_only_its_own_waiting_calls(db_url: str) -> None:
    """Nodes of a cluster share the database; each caller is on the SIP legs of the node that took it."""
    engine = await fresh_engine(db_url)
    a, b = EventWriter(engine, "node-a", batch_window_s=0.005), EventWriter(engine, "node-b", batch_window_s=0.005)
    await a.start()
    await b.start()
    try:
        a.append([Event(K.CALLSTART, 1.0, call_id="a1", data={"caller": "1"}), enqueue("a1", "rescue", 2, 2.0)])
        b.append([Event(K.CALLSTART, 1.0, call_id="b1", data={"caller": "2"}), enqueue("b1", "rescue", 2, 1.5)])
        await a.flush()
        await b.flush()
        a.append([enqueue("a2", "rescue", 2, 3.0)])  # no CALLSTART logged: still node-a's
        await a.flush()
        assert [e.call_id for e in (await load_state(engine, node_id="node-a"))[1]] == ["a1", "a2"]
        assert [e.call_id for e in (await load_state(engine, node_id="node-b"))[1]] == ["b1"]
        assert [e.call_id for e in (await load_state(engine))[1]] == ["b1", "a1", "a2"]
        assert (await CallRecords(engine).get("a2"))["node_id"] == "node-a"
    finally:
        await a.stop()
        await b.stop()
        await engine.dispose()


async def test_event_log_keeps_append_order_across_batches(db_url: str) -> None:
    engine = await fresh_engine(db_url)
    writer = EventWriter(engine, "node-b", batch_window_s=0.005, max_batch=7)
    await writer.start()
    sent = [enqueue(f"c{i:03d}", "rescue", 3, 100.0 - i) for i in range(60)]
    for i in range(0, 60, 5):
        writer.append(sent[i:i + 5])
        if i % 20 == 0:
            await asyncio.sleep(0.01)
    await writer.flush()
    stats = writer.stats()
    await writer.stop()
    async with engine.connect() as conn:
        rows = (await conn.execute(select(events_table.c.call_id, events_table.c.node_id)
                                   .order_by(events_table.c.seq))).all()
    await engine.dispose()
    assert [r[0] for r in rows] == [e.call_id for e in sent]
    assert {r[1] for r in rows} == {"node-b"}
    assert stats["events_written"] == 60 and stats["max_batch"] <= 7 and stats["batches"] >= 9


async def test_call_record_timeline_filters_and_flags(db_url: str) -> None:
    engine = await fresh_engine(db_url)
    writer = EventWriter(engine, "node-c", batch_window_s=0.005)
    await writer.start()
    ivr = {"answers": [{"node": "welcome", "key": "1", "at": 101.0}], "outcome": {"name": "dispute"},
           "skill": "online_determination", "priority": 3}
    writer.append([
        Event(K.CALLSTART, 100.0, call_id="A", data={"caller": "13900000001", "callee": "122", "ingress": "sip"}),
        Event(K.IVRDONE, 110.0, call_id="A", skill="online_determination", data={"record": ivr, "priority": 3}),
        enqueue("A", "online_determination", 3, 110.5, caller="13900000001"),
        Event(K.OFFER, 111.0, call_id="A", seat_id="s7", skill="online_determination"),
        Event(K.CONNECT, 113.0, call_id="A", seat_id="s7", skill="online_determination", data={"wait_s": 2.5}),
        Event(K.COMPLETE, 200.0, call_id="A", seat_id="s7", skill="online_determination",
              data={"ended_by": "seat", "talk_s": 87.0}),
        Event(K.CALLEND, 200.1, call_id="A", data={"reason": "hangup", "ended_by": "caller", "recording_id": "rec-A"}),
        Event(K.CALLSTART, 300.0, call_id="B", data={"caller": "13900000002", "ingress": "twilio"}),
        enqueue("B", "rescue", 2, 310.0, caller="13900000002"),
        Event(K.ABANDON, 350.0, call_id="B", skill="rescue", data={"wait_s": 40.0}),
        Event(K.CALLBACK, 350.0, call_id="B", skill="rescue",
              data={"action": "queued", "callback_id": "cb-B", "caller": "13900000002", "enqueued_at": 310.0,
                    "wait_s": 40.0}),
        Event(K.CALLEND, 350.2, call_id="B", data={"reason": "hangup", "ended_by": "caller"}),
        Event(K.CALLSTART, 320.0, call_id="C", data={"caller": "13900000003", "ingress": "sip"}),
        enqueue("C", "rescue", 2, 305.0, caller="13900000003"),
        Event(K.ABANDON, 360.0, call_id="C", skill="rescue", data={"wait_s": 55.0}),
        Event(K.CALLBACK, 360.0, call_id="C", skill="rescue",  # as the ACD says it: the wait, not the place
              data={"action": "queued", "callback_id": "cb-C", "caller": "13900000003", "wait_s": 55.0}),
    ])
    await writer.stop()
    records = CallRecords(engine)
    try:
        a = await records.get("A")
        assert a is not None
        assert a["caller"] == "13900000001" and a["started_at"] == 100.0 and a["ingress"] == "sip"
        assert a["ivr"]["answers"] == ivr["answers"] and a["ivr"]["skill"] == "online_determination"
        assert a["ivr"]["priority"] == 3
        assert [e["kind"] for e in a["events"]] == ["CALLSTART", "IVRDONE", "ENTERQUEUE", "OFFER", "CONNECT",
                                                   "COMPLETE", "CALLEND"]
        assert a["events"][3]["seat_id"] == "s7"
        assert a["seat_id"] == "s7" and a["seat_answered_at"] == 113.0
        # the first end wins: COMPLETE closed the call, CALLEND only adds the recording
        assert a["ended_at"] == 200.0 and a["end_reason"] == "completed" and a["ended_by"] == "seat"
        assert a["recording_id"] == "rec-A"
        b = await records.get("B")
        assert b["end_reason"] == "abandoned" and b["seat_id"] is None and b["queued_at"] == 310.0
        assert await records.get("nope") is None

        assert [c["id"] for c in await records.list()] == ["C", "B", "A"]
        assert [c["id"] for c in await records.list(limit=1, before=320.0)] == ["B"]
        assert [c["id"] for c in await records.list(skill="rescue")] == ["C", "B"]
        assert [c["id"] for c in await records.list(outcome="dispute")] == ["A"]
        assert [c["id"] for c in await records.list(outcome="abandoned")] == ["C", "B"]
        assert [c["id"] for c in await records.list(outcome="completed")] == ["A"]
        assert [c["id"] for c in await records.list(seat_id="s7")] == ["A"]
        assert [c["id"] for c in await records.list(caller="13900000002")] == ["B"]
        assert [c["id"] for c in await records.list(since=300.0, until=320.0)] == ["B"]

        assert await records.set_flags("A", recording_failed=True) == {"recording_failed": True}
        assert await records.set_flags("A", note="x") == {"recording_failed": True, "note": "x"}
        assert (await records.get("A"))["flags"] == {"recording_failed": True, "note": "x"}

        # callbacks in the callers' original queue order, not the order they hung up
        cbs = await records.list_callbacks()
        assert [(c["call_id"], c["enqueued_at"]) for c in cbs] == [("C", 305.0), ("B", 310.0)]
        loaded = await load_callbacks(engine)
        assert [(c["call_id"], c["callback_id"], c["priority"], c["info"]) for c in loaded] == [
            ("C", "cb-C", 2, {"ivr": "x"}), ("B", "cb-B", 2, {"ivr": "x"})]
        assert await records.complete_callback("B", "s1") is True
        assert await records.complete_callback("B", "s1") is False
        assert [c["call_id"] for c in await records.list_callbacks()] == ["C"]
        _, waiting = await load_state(engine)
        assert waiting == []  # answered and abandoned calls never come back as waiting
    finally:
        await engine.dispose()


async def test_callbacks_follow_taken_and_completed(db_url: str) -> None:
    engine = await fresh_engine(db_url)
    writer = EventWriter(engine, "node-f", batch_window_s=0.005)
    await writer.start()
    writer.append([
        Event(K.CALLBACK, 50.0, call_id="X", skill="rescue",
              data={"action": "queued", "callback_id": "cb-X", "caller": "1", "wait_s": 40.0}),
        Event(K.CALLBACK, 51.0, call_id="Y", skill="rescue",
              data={"action": "queued", "callback_id": "cb-Y", "caller": "2", "wait_s": 45.0}),
    ])
    await writer.flush()
    writer.append([Event(K.CALLBACK, 60.0, call_id="Y", seat_id="s2", skill="rescue",
                         data={"action": "taken", "callback_id": "cb-Y"})])
    await writer.flush()
    records = CallRecords(engine)
    try:
        taken = await records.list_callbacks(status="taken")
        assert [(c["call_id"], c["done_by"]) for c in taken] == [("Y", "s2")]
        assert [c["call_id"] for c in await load_callbacks(engine)] == ["Y", "X"]  # Y waited since 6.0
        writer.append([Event(K.CALLBACK, 70.0, call_id="Y", seat_id="s2", skill="rescue",
                             data={"action": "completed", "callback_id": "cb-Y"})])
        await writer.flush()
        assert [c["call_id"] for c in await load_callbacks(engine)] == ["X"]
        assert (await records.list_callbacks(status="done"))[0]["done_at"] == 70.0
    finally:
        await writer.stop()
        await engine.dispose()


async def test_saved_seat_keeps_its_logged_status(db_url: str) -> None:
    engine = await fresh_engine(db_url)
    records = CallRecords(engine)
    writer = EventWriter(engine, "node-d", batch_window_s=0.005)
    await writer.start()
    try:
        await records.save_seat(SeatSpec("s9", "sip:s9@x", {"rescue": 0}, name="九", status=SeatStatus.AVAILABLE))
        writer.append([seat_status("s9", "not_ready", 5.0, reason="break", previous="available")])
        await writer.flush()
        # the seats file is read again at the next start: config changes, the status does not
        await records.save_seat(SeatSpec("s9", "sip:s9@y", {"rescue": 1, "online_review": 0}, name="九号"))
        seats, _ = await load_state(engine)
        assert len(seats) == 1
        s = seats[0]
        assert s.status is SeatStatus.NOT_READY and s.reason == "break" and s.since == 5.0
        assert s.spec.contact == "sip:s9@y" and s.spec.skills == {"rescue": 1, "online_review": 0}
        assert s.spec.name == "九号"
        assert await records.delete_seat("s9") is True
        assert await load_state(engine) == ([], [])
    finally:
        await writer.stop()
        await engine.dispose()


class TcpRelay:
    """A loopback relay in front of PostgreSQL that the test cuts and restores (a real outage:
    connects are refused and open connections drop)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return
        self._writers.update({w, uw})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))
        self._writers.difference_update({w, uw})


@pytest.mark.postgres
async def test_database_away_and_back_keeps_every_event(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    await (await fresh_engine(pg_url)).dispose()
    u = make_url(pg_url)
    relay = TcpRelay(u.host or "127.0.0.1", u.port or 5432)
    await relay.up()
    engine = make_engine(u.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False))
    writer = EventWriter(engine, "node-e", batch_window_s=0.005, max_batch=20)
    await writer.start()
    try:
        writer.append([enqueue(f"before{i}", "rescue", 3, float(i)) for i in range(10)])
        await writer.flush()
        await relay.down()
        caplog.set_level(logging.ERROR, logger="routing.store.writer")
        for i in range(50):  # the call flow goes on: appends neither block nor raise
            writer.append([enqueue(f"during{i}", "rescue", 3, 100.0 + i)])
        while writer.stats()["failures"] < 2:
            await asyncio.sleep(0.02)
        assert writer.buffered == 50
        failed = [r for r in caplog.records if "write failed" in r.getMessage()]
        assert failed and failed[-1].count == 50
        await relay.up()
        await writer.flush()
        assert writer.stats()["database_down"] is False
    finally:
        await writer.stop()
        await relay.down()
        await engine.dispose()
    engine = make_engine(pg_url)
    try:
        async with engine.connect() as conn:
            n = (await conn.execute(select(func.count()).select_from(events_table))).scalar_one()
            order = (await conn.execute(select(events_table.c.call_id).order_by(events_table.c.seq))).scalars().all()
        assert n == 60
        assert order == [f"before{i}" for i in range(10)] + [f"during{i}" for i in range(50)]
        _, waiting = await load_state(engine)
        assert len(waiting) == 60
    finally:
        await engine.dispose()


async def test_persistence_bench_persists_every_event(db_url: str) -> None:
    from routing.store.bench import persistence_bench

    evs = [enqueue(f"b{i}", "rescue", 3, float(i)) for i in range(300)]
    fig = await persistence_bench(evs, db_url, batch_window_s=0.01, max_batch=50, paced_rate=3000)
    assert fig["throughput"]["persisted"] == 300 and fig["throughput"]["max_batch"] <= 50
    assert fig["paced"]["persisted"] == 300
    assert fig["crash_loss_window_ms"] == fig["paced"]["max_append_to_commit_ms"] > 0


async def test_a_refused_event_does_not_stop_the_log(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    engine = await fresh_engine(db_url)
    writer = EventWriter(engine, "node-g", batch_window_s=0.005)
    await writer.start()
    caplog.set_level(logging.ERROR, logger="routing.store.writer")
    try:
        writer.append([
            enqueue("ok1", "rescue", 3, 1.0),
            Event(K.CALLSTART, 2.0, call_id="bad", data={"caller": object()}),  # not storable as JSON
            Event(K.ENTERQUEUE, 2.5, call_id="odd", skill="rescue", data={"priority": "urgent"}),  # no projection
            enqueue("ok2", "rescue", 3, 3.0),
        ])
        await writer.flush()
        writer.append([enqueue("later", "rescue", 3, 4.0)])  # the writer goes on afterwards
        await writer.flush()
        assert writer.stats()["poisoned"] == 1
        async with engine.connect() as conn:
            logged = (await conn.execute(select(events_table.c.call_id).order_by(events_table.c.seq))).scalars().all()
        assert logged == ["ok1", "odd", "ok2", "later"]
        assert any("refused by the database" in r.getMessage() and r.call_id == "bad" for r in caplog.records)
        _, waiting = await load_state(engine)  # the good events kept their projections
        assert [e.call_id for e in waiting] == ["ok1", "ok2", "later"]
    finally:
        await writer.stop()
        await engine.dispose()


async def test_reconcile_closes_only_this_nodes_lost_calls_and_frees_their_seats(db_url: str, tmp_path) -> None:
    """Two nodes on one database; n1 restarts with nothing alive.  Its waiting, ringing and IVR
    calls are closed ``lost_node_failure`` with callbacks, its reserved seat is free without
    penalty; n2's waiting call and the seat ringing for it are not touched."""
    from gateway.settings import Settings
    from routing.service import RoutingService

    engine = await fresh_engine(db_url)
    settings = Settings(data_dir=tmp_path, db_url=db_url)
    t = [1000.0]
    specs = [SeatSpec("s1", "sip:s1@127.0.0.1:5091", {"rescue": 0}, status=SeatStatus.AVAILABLE)]
    other_specs = [SeatSpec("s2", "sip:s2@127.0.0.1:5092", {"police_dispatch": 0}, status=SeatStatus.AVAILABLE)]
    n1 = RoutingService.from_settings(settings, engine, node_id="n1", clock=lambda: t[0])
    await n1.start(specs)
    n2 = RoutingService.from_settings(settings, engine, node_id="n2", clock=lambda: t[0])
    await n2.start(other_specs, live_calls=set())
    n1.record([Event(K.CALLSTART, 999.0, call_id="ivr-1", data={"caller": "13900000001", "node_id": "n1"})])
    n1.record([Event(K.CALLSTART, 999.0, call_id="ring-1", data={"caller": "13900000002", "node_id": "n1"})])
    n1.enqueue("ring-1", "rescue", 2, caller="13900000002", info={"ivr": {"answers": ["1", "2", "2"]}})
    n1.record([Event(K.CALLSTART, 999.0, call_id="wait-1", data={"caller": "13900000003", "node_id": "n1"})])
    n1.enqueue("wait-1", "rescue", 2, caller="13900000003", info={"ivr": {"answers": ["1", "2", "2"]}})
    assert n1.acd.seat_view("s1", t[0])["status"] == "reserved"
    n2.record([Event(K.CALLSTART, 999.0, call_id="other", data={"caller": "13900000009", "node_id": "n2"})])
    n2.enqueue("other", "police_dispatch", 1, caller="13900000009")
    assert n2.acd.seat_view("s2", t[0])["status"] == "reserved"
    await n1.stop()
    await n2.stop()

    t[0] = 2000.0
    again = RoutingService.from_settings(settings, engine, node_id="n1", clock=lambda: t[0])
    await again.start(specs, live_calls=set())
    try:
        assert again.acd.seat_view("s1", t[0])["status"] == "available"  # no "no answer" penalty
        assert again.acd.call_view("ring-1") is None and again.acd.call_view("wait-1") is None
        pending = {c.call_id: c for c in again.acd.callbacks.pending()}
        assert set(pending) == {"ivr-1", "ring-1", "wait-1"}
        assert pending["wait-1"].caller == "13900000003" and pending["wait-1"].enqueued_at == 1000.0
        assert pending["wait-1"].info["ivr"]["answers"] == ["1", "2", "2"]
        assert pending["ivr-1"].info["lost"] == "lost_node_failure"
        await again.writer.flush()
        records = CallRecords(engine)
        for cid in ("ivr-1", "ring-1", "wait-1"):
            rec = await records.get(cid)
            assert rec["end_reason"] == "lost_node_failure" and rec["ended_at"] == 2000.0, rec
        other = await records.get("other")
        assert other["ended_at"] is None  # n2's call: not ours to reconcile ...
        assert {s["id"]: s for s in await records.list_seats()}["s2"]["status"] == "reserved"  # ... nor its seat
        assert again.acd.seat_view("s2", t[0])["status"] == "not_ready"  # and n1 does not offer it
        _, waiting = await load_state(engine)
        assert [e.call_id for e in waiting] == ["other"]
        stored = {r["call_id"]: r for r in await load_callbacks(engine)}
        assert set(stored) == {"ivr-1", "ring-1", "wait-1"} and stored["ring-1"]["caller"] == "13900000002"
        assert stored["ring-1"]["info"]["ivr"]["answers"] == ["1", "2", "2"]
    finally:
        await again.stop()
    # a second restart changes nothing: reconciling is idempotent
    t[0] = 3000.0
    third = RoutingService.from_settings(settings, engine, node_id="n1", clock=lambda: t[0])
    await third.start(specs, live_calls=set())
    try:
        assert {c.call_id for c in third.acd.callbacks.pending()} == {"ivr-1", "ring-1", "wait-1"}
        rec = await CallRecords(engine).get("wait-1")
        assert rec["ended_at"] == 2000.0
    finally:
        await third.stop()
        await engine.dispose()


async def test_a_hostile_caller_id_is_bounded_and_costs_no_event_of_its_batch(db_url: str) -> None:
    """300 characters, a NUL, a lone surrogate and a right-to-left override in a caller id: on
    PostgreSQL each would fail the whole batch.  Normalised and cut to the column, nothing is lost,
    not even the first attempt (no retry)."""
    engine = await fresh_engine(db_url)
    writer = EventWriter(engine, "node-h", batch_window_s=0.05)
    await writer.start()
    hostile = "\u202e" + "8" * 300 + "\x00\ud800 "
    try:
        writer.append([
            Event(K.CALLSTART, 1.0, call_id="evil", data={"caller": hostile, "callee": "122\x00", "node_id": "node-h"}),
            Event(K.IVRDONE, 1.5, call_id="evil", skill="rescue",
                  data={"record": {"answers": ["1", "\x00"], "outcome": "x" * 500}, "priority": 2}),
            enqueue("evil", "rescue", 2, 2.0, caller=hostile),
            Event(K.CALLSTART, 1.0, call_id="fine", data={"caller": "13800000000", "node_id": "node-h"}),
            enqueue("fine", "rescue", 3, 2.1),
        ])
        await writer.flush()
        stats = writer.stats()
        assert stats["failures"] == 0 and stats["poisoned"] == 0 and stats["events_written"] == 5
        records = CallRecords(engine)
        evil = await records.get("evil")
        assert evil["caller"] == "8" * 200 and evil["callee"] == "122"
        assert evil["ivr"]["answers"] == ["1", ""] and len(evil["ivr"]["outcome"]) <= 2000
        _, waiting = await load_state(engine)
        assert [(e.call_id, e.caller) for e in waiting] == [("evil", "8" * 200), ("fine", "13800000000")]
        assert (await records.get("fine"))["caller"] == "13800000000"
    finally:
        await writer.stop()
        await engine.dispose()


@pytest.mark.parametrize("ended_by", ["seat_lost", "transfer"])
async def test_a_seat_lost_or_a_transfer_does_not_end_the_call_record(db_url: str, ended_by: str) -> None:
    """The caller is queued again: the record ends with the call's real end, not the first seat's."""
    engine = await fresh_engine(db_url)
    writer = EventWriter(engine, "node-d", batch_window_s=0.005)
    await writer.start()
    writer.append([
        Event(K.CALLSTART, 100.0, call_id="D", data={"caller": "13900000004", "ingress": "sip"}),
        enqueue("D", "intake_guidance", 3, 101.0),
        Event(K.CONNECT, 102.0, call_id="D", seat_id="s1", skill="intake_guidance"),
        Event(K.COMPLETE, 120.0, call_id="D", seat_id="s1", skill="intake_guidance",
              data={"ended_by": ended_by, "talk_s": 18.0}),
        enqueue("D", "intake_guidance", 3, 120.0),
    ])
    await writer.flush()
    records = CallRecords(engine)
    try:
        live = await records.get("D")
        assert live["end_reason"] is None and live["ended_at"] is None, live
        writer.append([Event(K.ABANDON, 140.0, call_id="D", skill="intake_guidance", data={"wait_s": 20.0}),
                       Event(K.CALLEND, 140.1, call_id="D", data={"reason": "abandoned", "ended_by": "caller"})])
        await writer.stop()
        done = await records.get("D")
        assert done["end_reason"] == "abandoned" and done["ended_at"] == 140.0, done
        assert done["seat_id"] == "s1"
    finally:
        await engine.dispose()


async def test_a_control_restart_tells_worker_losses_from_node_losses_and_frees_a_consult_seat(
        db_url: str, tmp_path) -> None:
    """The control process restarts alone (issue 13).  Meanwhile media worker 1 died: its call is
    ``lost_worker_failure``; a call of worker 0 that no worker reports is ``lost_node_failure``;
    both get callbacks.  The conversation still bridged to s1 keeps s1 ``on_call``, and s2, reserved
    for the warm transfer the worker cancelled when the control went away, is ``available`` (not
    stuck reserved, not penalised)."""
    from gateway.reconcile import died_with_workers
    from gateway.settings import Settings
    from routing.service import RoutingService
    from routing.store.reconcile import LOST_WORKER_FAILURE

    engine = await fresh_engine(db_url)
    settings = Settings(data_dir=tmp_path, db_url=db_url)
    t = [1000.0]
    specs = [SeatSpec("s1", "sip:s1@127.0.0.1:5091", {"rescue": 0}, status=SeatStatus.AVAILABLE),
             SeatSpec("s2", "sip:s2@127.0.0.1:5092", {"rescue": 0}, status=SeatStatus.AVAILABLE)]
    n1 = RoutingService.from_settings(settings, engine, node_id="n1", clock=lambda: t[0])
    await n1.start(specs)
    n1.record([Event(K.CALLSTART, 999.0, call_id="talk-1", data={"caller": "13900000001", "node_id": "n1",
                                                                 "worker_id": 0})])
    n1.enqueue("talk-1", "rescue", 2, caller="13900000001")
    n1.seat_answered("talk-1")
    n1.consult_reserve("talk-1", seat_id="s2")
    assert n1.acd.seat_view("s2", t[0])["status"] == "reserved"
    for cid, wid in (("on-w1", 1), ("on-w0", 0)):
        n1.record([Event(K.CALLSTART, 999.5, call_id=cid, data={"caller": "139000000" + cid[-1] + "9",
                                                               "node_id": "n1", "worker_id": wid})])
        n1.enqueue(cid, "rescue", 3, caller="139000000" + cid[-1] + "9")
    await n1.stop()

    t[0] = 2000.0
    alive = {"talk-1"}
    deaths = [{"worker_id": 1, "pid": 4242, "died_at": 1500.0, "exit_code": -9},
              {"worker_id": 0, "pid": 4241, "died_at": 900.0, "exit_code": -9}]  # before on-w0 started
    reasons = dict.fromkeys(await died_with_workers(engine, "n1", deaths, alive), LOST_WORKER_FAILURE)
    assert reasons == {"on-w1": LOST_WORKER_FAILURE}
    again = RoutingService.from_settings(settings, engine, node_id="n1", clock=lambda: t[0])
    await again.start(specs, live_calls=alive, talking={"talk-1": "s1"}, lost_reasons=reasons)
    try:
        assert again.acd.seat_view("s1", t[0])["status"] == "on_call"
        assert again.acd.seat_view("s2", t[0])["status"] == "available"
        await again.writer.flush()
        records = CallRecords(engine)
        assert (await records.get("on-w1"))["end_reason"] == "lost_worker_failure"
        assert (await records.get("on-w0"))["end_reason"] == "lost_node_failure"
        assert (await records.get("talk-1"))["ended_at"] is None
        assert {c.call_id for c in again.acd.callbacks.pending()} == {"on-w1", "on-w0"}
    finally:
        await again.stop()
        await engine.dispose()


async def test_flush_waits_for_what_came_before_it_not_for_an_empty_queue(db_url: str) -> None:
    """A busy leader appends events all the time; ``flush`` (the routing authority's, before it moves
    its command cursor) must return once what was appended before it is committed, not wait for a
    moment with nothing queued, which under steady load never came (seconds of queue wait in
    ``bench cluster``)."""
    engine = await fresh_engine(db_url)
    writer = EventWriter(engine, "node-i", batch_window_s=0.005)
    await writer.start()
    flushed = asyncio.Event()
    appended = 0

    async def busy() -> bool:
        """Appends until the flush returns; True if it had to give up (the flush never returned)."""
        nonlocal appended
        end = asyncio.get_running_loop().time() + 20
        while not flushed.is_set():
            if asyncio.get_running_loop().time() > end:
                return True
            writer.append([enqueue(f"b{appended:05d}", "rescue", 3, 200.0)])
            appended += 1
            await asyncio.sleep(0)  # the writer runs between appends, its queue is never empty for long
        return False

    before = [enqueue(f"a{i:03d}", "rescue", 3, 100.0) for i in range(50)]
    writer.append(before)
    load = asyncio.create_task(busy())
    await asyncio.sleep(0.05)
    await writer.flush()
    flushed.set()
    gave_up = await load
    async with engine.connect() as conn:
        written = {r[0] for r in (await conn.execute(select(events_table.c.call_id))).all()}
    await writer.stop()
    await engine.dispose()
    assert not gave_up, "flush returned only once the appends stopped"
    assert {e.call_id for e in before} <= written
    print(f"\nflush returned while events kept coming ({appended} appended meanwhile)")


async def test_two_writers_upserting_the_same_call_rows_never_deadlock(pg_url: str) -> None:
    """Cluster mode: the leader's writer (queued, offered, answered) and a node's writer (its calls'
    journey) upsert the same ``calls`` rows.  Batches that name the rows in opposite orders used
    to deadlock; PostgreSQL settles that only after ``deadlock_timeout`` (1 s), which stalled the
    leader and every caller's queue wait behind it (``bench cluster``'s 1 s tail).  Both writers
    now take the rows' locks in one order: many rounds, no deadlock, every row written."""
    from routing.store.projection import apply, fold

    engine = await fresh_engine(pg_url)
    ids = [f"c-{i:04d}" for i in range(300)]
    failures: list[str] = []

    async def write(batch: list[Event], node_id: str | None) -> None:
        try:
            async with engine.begin() as conn:
                await apply(conn, fold(batch, node_id, 1.0), 1.0)
        except Exception as e:  # what the writer would log and retry: "deadlock detected"
            failures.append(f"{type(e).__name__}: {str(e)[:120]}")

    try:
        for r in range(8):
            mine = [f"{c}-{r}" for c in ids]
            leader = [enqueue(c, "rescue", 3, 10.0 + r) for c in mine]
            node = [Event(K.CALLSTART, 10.0 + r, call_id=c, data={"caller": "13800000000", "node_id": "node-2"})
                    for c in reversed(mine)]
            await asyncio.gather(write(leader, None), write(node, "node-2"))
        assert failures == []
        async with engine.connect() as conn:
            n = (await conn.execute(select(func.count()).select_from(metadata.tables["calls"]))).scalar()
        assert n == len(ids) * 8
    finally:
        await engine.dispose()
