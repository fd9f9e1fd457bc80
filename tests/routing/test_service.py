"""The routing service over the real ACD, event writer (SQLite and PostgreSQL) and Mosquitto."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiomqtt
import pytest

from gateway.settings import Settings
from routing.acd import IllegalTransition, SeatSpec, UnknownSeat
from routing.bus import BrokerAddress
from routing.events import Event, EventKind
from routing.service import RoutingService
from routing.status import SeatStatus
from routing.store import CallRecords, create_schema, make_engine
from routing.store.models import metadata

pytestmark = pytest.mark.timeout(60)

K = EventKind
S = SeatStatus


def seat(sid: str, skills: list[str], status: SeatStatus = S.AVAILABLE, contact: str | None = None) -> SeatSpec:
    return SeatSpec(id=sid, contact=contact or f"sip:{sid}@127.0.0.1:5091", skills=dict.fromkeys(skills, 0),
                    name=sid.upper(), status=status)


async def fresh_engine(url: str):
    engine = make_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
    await create_schema(engine)
    return engine


async def until(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def status_of(svc: RoutingService, sid: str) -> str:
    return svc.acd.seat_view(sid, svc.clock())["status"]


async def test_call_through_the_service_is_logged_and_timers_fire(db_url: str, tmp_path: Path) -> None:
    engine = await fresh_engine(db_url)
    settings = Settings(data_dir=tmp_path, db_url=db_url, ring_timeout=0.3, wrap_up_s=0.2)
    svc = RoutingService.from_settings(settings, engine, node_id="n1")
    seen: list[Event] = []
    svc.on_event(seen.append)
    await svc.start([seat("s1", ["rescue"]), seat("s2", ["rescue"], S.NOT_READY)])
    q = svc.subscribe()
    try:
        # the API and the Twilio ingress await commands, the SIP gateway calls them: both work
        out = await svc.enqueue("c1", "rescue", 2, caller="13800000000", info={"answers": [1, 2]})
        assert [e.kind for e in out] == [K.ENTERQUEUE, K.OFFER, K.SEATSTATUS]
        assert out[1].seat_id == "s1" and status_of(svc, "s1") == "reserved"
        # nobody answers: the ACD's own ring timer fires through the service's timer task
        await until(lambda: any(e.kind is K.RINGNOANSWER for e in seen))
        assert status_of(svc, "s1") == "not_ready" and svc.acd.queue_position("c1") == 1
        svc.set_status("s2", S.AVAILABLE)
        offer = [e for e in seen if e.kind is K.OFFER][-1]
        assert offer.seat_id == "s2"
        svc.seat_answered("c1")
        svc.call_completed("c1", "caller")
        assert status_of(svc, "s2") == "wrap_up"
        await until(lambda: status_of(svc, "s2") == "available")  # wrap-up ends by the timer
        svc.record([Event(K.CALLEND, svc.clock(), call_id="c1", data={"reason": "completed", "ended_by": "caller"})])
        with pytest.raises(IllegalTransition):
            svc.set_status("s2", S.ON_CALL)
        with pytest.raises(UnknownSeat):
            await svc.set_status("nope", S.AVAILABLE)
        assert svc.writer is not None
        await svc.writer.flush()
        streamed = []
        while not q.empty():
            streamed.append(q.get_nowait())
        assert streamed == [e for e in seen if e.at >= out[0].at]
    finally:
        svc.unsubscribe(q)
        await svc.stop()
    record = await CallRecords(engine).get("c1")
    await engine.dispose()
    assert record is not None
    kinds = [e["kind"] for e in record["events"]]
    assert kinds[:3] == ["ENTERQUEUE", "OFFER", "SEATSTATUS"] and "RINGNOANSWER" in kinds
    assert kinds.count("OFFER") == 2 and kinds[-1] == "CALLEND"
    assert record["seat_id"] == "s2" and record["end_reason"] == "completed"


async def test_restart_brings_back_seats_queue_callbacks_and_metrics(db_url: str, tmp_path: Path) -> None:
    engine = await fresh_engine(db_url)
    t = [1000.0]
    settings = Settings(data_dir=tmp_path, db_url=db_url, callback_after_s=30.0)
    a = RoutingService.from_settings(settings, engine, node_id="n1", clock=lambda: t[0])
    await a.start([seat("s1", ["rescue"]), seat("s2", ["rescue"], S.NOT_READY),
                   seat("s4", ["intake_guidance"], S.LOGGED_OUT)])
    a.enqueue("ring", "rescue", 2, caller="1")                 # rings s1 when the node dies
    t[0] = 1001.0
    a.enqueue("p1", "police_dispatch", 1, caller="2", info={"answers": ["1", "1"]})
    t[0] = 1002.0
    a.enqueue("p2", "police_dispatch", 1, caller="3")
    t[0] = 1003.0
    a.enqueue("gone", "police_dispatch", 1, caller="4")
    t[0] = 1050.0
    out = a.caller_abandoned("gone")                          # waited 47 s: onto the callback list
    assert [e.kind for e in out] == [K.ABANDON, K.CALLBACK]
    a.set_status("s2", S.NOT_READY, "lunch")
    await a.stop()
    await engine.dispose()

    engine = make_engine(db_url)  # a new process
    t[0] = 2000.0
    b = RoutingService.from_settings(settings, engine, node_id="n1", clock=lambda: t[0])
    try:
        await b.start([seat("s1", ["rescue"], contact="sip:s1@10.0.0.9"), seat("s2", ["rescue"]),
                       seat("s3", ["police_dispatch"], S.LOGGED_OUT), seat("s4", ["intake_guidance"])])
        seats = {s["id"]: s for s in b.acd.seats_view(t[0])}
        # the ringing seat's leg died with the node: not ready, not silently available
        assert seats["s1"]["status"] == "not_ready" and seats["s1"]["reason"] == "restart"
        assert seats["s1"]["contact"] == "sip:s1@10.0.0.9"   # the file's configuration wins ...
        assert seats["s2"]["status"] == "not_ready" and seats["s2"]["reason"] == "lunch"  # ... not its status
        assert seats["s3"]["status"] == "logged_out"
        assert [b.acd.queue_position(c) for c in ("ring", "p1", "p2", "gone")] == [1, 1, 2, None]
        assert b.acd.call_view("p1")["enqueued_at"] == 1001.0
        assert [c.call_id for c in b.acd.callbacks.pending()] == ["gone"]
        views = {v["skill"]: v for v in b.acd.queues_view(t[0])}
        assert views["police_dispatch"]["offered"] == 3 and views["police_dispatch"]["abandoned"] == 1
        assert views["police_dispatch"]["callbacks"] == 1 and views["rescue"]["offered"] == 1
        # the restored queue is live: a seat for it takes the first caller
        out = b.set_status("s3", S.AVAILABLE)
        assert [(e.kind, e.call_id) for e in out if e.kind is K.OFFER] == [(K.OFFER, "p1")]
        taken = b.take_callback("s4")
        assert taken[0].data["action"] == "taken" and taken[0].call_id == "gone"
    finally:
        await b.stop()
        await engine.dispose()


async def test_listener_commands_keep_log_order(sqlite_url: str, tmp_path: Path) -> None:
    """Like the gateway when no worker can ring the seat: it reports seat_failed from inside the OFFER."""
    engine = await fresh_engine(sqlite_url)
    svc = RoutingService.from_settings(Settings(data_dir=tmp_path, db_url=sqlite_url), engine, node_id="n1")
    seen: list[tuple[str, str | None]] = []

    def gateway(ev: Event) -> None:
        if ev.kind is K.OFFER and ev.seat_id == "s1":
            svc.seat_failed(ev.call_id, "unreachable")

    svc.on_event(gateway)
    svc.on_event(lambda ev: seen.append((ev.kind.value, ev.seat_id)))
    q = svc.subscribe()
    await svc.start([seat("s1", ["rescue"]), seat("s2", ["rescue"])])
    try:
        while not q.empty():
            q.get_nowait()
        seen.clear()
        svc.enqueue("c1", "rescue", 2)
        assert svc.acd.call_view("c1")["seat_id"] == "s2"
        streamed = [(e.kind.value, e.seat_id) for e in [q.get_nowait() for _ in range(q.qsize())]]
        assert seen == streamed
        assert [k for k, _ in seen] == ["ENTERQUEUE", "OFFER", "SEATSTATUS", "SEATFAILED", "SEATSTATUS",
                                        "OFFER", "SEATSTATUS"]
        await svc.writer.flush()
    finally:
        await svc.stop()
    record = await CallRecords(engine).get("c1")
    await engine.dispose()
    # the log holds the same order the listeners saw (seat moves about this call are in its timeline)
    assert [(e["kind"], e["seat_id"]) for e in record["events"]] == [(k, s) for k, s in seen]


async def test_a_restore_that_decides_nothing_still_runs_its_timers(tmp_path: Path) -> None:
    """What a cluster leader does on election (routing.cluster): it starts the service empty, then
    restores the ACD itself.  A seat whose call ended while no one led comes back in wrap-up with a
    caller waiting: the restore decides nothing (no event), but its wrap-up timer must still end
    and the waiting caller get the seat, without waiting for some later command to wake the timers."""
    from routing.acd import RestoredEntry, RestoredSeat

    svc = RoutingService.from_settings(Settings(data_dir=tmp_path, wrap_up_s=0.2), None, node_id="leader")
    seen: list[Event] = []
    svc.on_event(seen.append)
    await svc.start(seats=())
    try:
        await asyncio.sleep(0.05)  # the timer task is up and waiting: nothing is armed yet
        now = svc.clock()
        events = svc.acd.restore([RestoredSeat(seat("s1", ["rescue"]), S.WRAP_UP, None, now)],
                                 [RestoredEntry("c1", "rescue", 2, now - 5)], now)
        assert events == []
        svc.record(events)
        await until(lambda: any(e.kind is K.OFFER and e.call_id == "c1" for e in seen), timeout=5)
        assert svc.acd.call_view("c1")["seat_id"] == "s1"
    finally:
        await svc.stop()


async def test_slow_subscriber_loses_oldest_not_the_call(sqlite_url: str, tmp_path: Path) -> None:
    svc = RoutingService.from_settings(Settings(data_dir=tmp_path), None, node_id="n1")
    await svc.start([])
    q = svc.subscribe(maxsize=3)
    try:
        for i in range(5):
            svc.enqueue(f"c{i}", "rescue", 3)
        assert [q.get_nowait().call_id for _ in range(3)] == ["c2", "c3", "c4"]
        assert svc.subscriber_drops == 2 and svc.acd.queue_position("c0") == 1
    finally:
        await svc.stop()


@pytest.mark.mqtt
async def test_mqtt_seat_status_screen_pop_and_queue_snapshot(sqlite_url: str, tmp_path: Path, mqtt_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    addr = BrokerAddress.parse(mqtt_url)
    engine = await fresh_engine(sqlite_url)
    svc = RoutingService.from_settings(Settings(data_dir=tmp_path, db_url=sqlite_url, mqtt_url=mqtt_url),
                                       engine, node_id="n1")
    assert svc.bus is not None
    svc.bus.prefix = prefix
    async with aiomqtt.Client(addr.host, addr.port, identifier=f"{prefix}-desk") as desk:
        await desk.subscribe(f"{prefix}/#", qos=1)
        await svc.start([seat("s1", ["rescue"], S.NOT_READY)])
        try:
            await until(lambda: svc.bus.stats()["subscribed"])
            svc.enqueue("c1", "rescue", 2, caller="13912345678", info={"answers": ["1", "2", "2"]})
            # the seat's desktop says it is ready: the waiting call is offered to it
            await desk.publish(f"{prefix}/seats/s1/status/set", json.dumps({"status": "available"}), qos=1)
            got: dict[str, list[dict]] = {}
            async with asyncio.timeout(10):
                async for m in desk.messages:
                    got.setdefault(str(m.topic), []).append(json.loads(m.payload))
                    if f"{prefix}/seats/s1/offer" in got and any(
                            q.get("skill") == "rescue" and q.get("ringing") == 1
                            for q in got.get(f"{prefix}/queues/rescue", [])):
                        break
        finally:
            await svc.stop()
    await engine.dispose()
    pop = got[f"{prefix}/seats/s1/offer"][0]
    assert pop["call_id"] == "c1" and pop["caller"] == "13912345678" and pop["info"] == {"answers": ["1", "2", "2"]}
    assert [e["kind"] for e in got[f"{prefix}/calls/c1"]][:2] == ["ENTERQUEUE", "OFFER"]
    assert any(e["data"]["status"] == "available" for e in got[f"{prefix}/seats/s1"])
