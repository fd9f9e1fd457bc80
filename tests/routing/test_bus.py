"""The MQTT bus against a real Mosquitto: topics, QoS 1, inbound seat status, broker outages."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import subprocess
import uuid
from pathlib import Path

import aiomqtt
import pytest

from routing.bus import BrokerAddress, EventBus
from routing.events import Event, EventKind
from routing.status import SeatStatus
from tests.conftest import free_port

pytestmark = [pytest.mark.mqtt, pytest.mark.timeout(60)]

K = EventKind


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


async def wait_for(predicate, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def collect(client: aiomqtt.Client, n: int, timeout: float = 10.0) -> list[aiomqtt.Message]:
    out: list[aiomqtt.Message] = []
    async with asyncio.timeout(timeout):
        async for m in client.messages:
            out.append(m)
            if len(out) == n:
                return out
    return out


def test_broker_url_parsing() -> None:
    assert BrokerAddress.parse("mqtt://127.0.0.1:1884") == BrokerAddress("127.0.0.1", 1884)
    assert BrokerAddress.parse("mqtt://u%40x:p%3Aw@broker") == BrokerAddress("broker", 1883, "u@x", "p:w")
    with pytest.raises(ValueError):
        BrokerAddress.parse("http://127.0.0.1:1883")


async def test_events_arrive_on_their_topics_with_qos1(mqtt_url: str) -> None:
    prefix = unique_prefix()
    addr = BrokerAddress.parse(mqtt_url)
    bus = EventBus(mqtt_url, "node-1", prefix=prefix)
    sent = [
        Event(K.SEATSTATUS, 1.0, seat_id="s1", data={"status": "available", "previous": "logged_out"}),
        Event(K.ENTERQUEUE, 2.0, call_id="c1", skill="rescue", data={"priority": 2, "caller": "139"}),
        Event(K.OFFER, 3.0, call_id="c1", seat_id="s1", skill="rescue", data={"ring_timeout_s": 20}),
        Event(K.CONNECT, 4.0, call_id="c1", seat_id="s1", skill="rescue", data={"wait_s": 2.0}),
    ]
    async with aiomqtt.Client(addr.host, addr.port, identifier=f"{prefix}-sub") as sub:
        await sub.subscribe(f"{prefix}/#", qos=1)
        for ev in sent[:2]:  # published before the bus even runs: buffered, then sent in order
            bus.publish(ev)
        assert bus.stats()["buffered"] == 2
        await bus.start()
        try:
            for ev in sent[2:]:
                bus.publish(ev)
            bus.publish_queue("rescue", {"skill": "rescue", "waiting": 0})
            bus.publish_screen_pop("s1", {"call_id": "c1", "caller": "139", "ivr": {"answers": []}})
            got = await collect(sub, 6)
        finally:
            await bus.stop()
    assert [str(m.topic) for m in got] == [
        f"{prefix}/seats/s1", f"{prefix}/calls/c1", f"{prefix}/calls/c1", f"{prefix}/calls/c1",
        f"{prefix}/queues/rescue", f"{prefix}/seats/s1/offer"]
    assert all(m.qos == 1 for m in got)
    assert [Event.from_dict(json.loads(m.payload)) for m in got[:4]] == sent
    assert json.loads(got[5].payload)["call_id"] == "c1"
    stats = bus.stats()
    assert stats["published"] == 6 and stats["buffered"] == 0 and stats["dropped"] == 0


async def test_seat_status_messages_reach_the_callback(mqtt_url: str) -> None:
    prefix = unique_prefix()
    addr = BrokerAddress.parse(mqtt_url)
    got: list[tuple[str, SeatStatus, str | None]] = []

    async def on_status(seat_id: str, status: SeatStatus, reason: str | None) -> None:
        got.append((seat_id, status, reason))

    bus = EventBus(mqtt_url, "node-2", prefix=prefix, on_seat_status=on_status)
    await bus.start()
    try:
        await wait_for(lambda: bus.stats()["subscribed"])  # the broker acknowledged the subscription
        async with aiomqtt.Client(addr.host, addr.port, identifier=f"{prefix}-desk") as desk:
            t = f"{prefix}/seats/s5/status/set"
            await desk.publish(t, json.dumps({"status": "not_ready", "reason": "break"}), qos=1)
            await desk.publish(t, b"not json", qos=1)
            await desk.publish(t, json.dumps({"status": "flying"}), qos=1)
            await desk.publish(t, json.dumps({"status": "on_call"}), qos=1)  # only the ACD puts a seat on a call
            await desk.publish(t, json.dumps(["available"]), qos=1)
            await desk.publish(t, json.dumps({"status": "available", "reason": 7}), qos=1)
            await desk.publish(f"{prefix}/seats/s6/status/set", json.dumps({"status": "available"}), qos=1)
        await wait_for(lambda: len(got) == 2 and bus.stats()["invalid"] == 5)
    finally:
        await bus.stop()
    assert got == [("s5", SeatStatus.NOT_READY, "break"), ("s6", SeatStatus.AVAILABLE, None)]


def test_full_buffer_drops_the_oldest() -> None:
    bus = EventBus("mqtt://127.0.0.1:1", "node-3", buffer=3)
    for i in range(5):
        bus.publish(Event(K.ENTERQUEUE, float(i), call_id=f"c{i}", skill="rescue"))
    assert bus.stats()["buffered"] == 3 and bus.stats()["dropped"] == 2
    assert [json.loads(m.payload)["call_id"] for m in bus._buffer] == ["c2", "c3", "c4"]


class PrivateBroker:
    """A Mosquitto of our own that the test can stop and restart on the same port.  Persistence is
    on so the test subscriber's QoS 1 session (and what is queued for it) survives the restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port(kind=1, also_tcp=False)  # SOCK_STREAM
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nlog_dest none\n"
            # as root mosquitto would switch to its own user, which cannot write the test's tmp dir
            f"user {getpass.getuser()}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    async def up(self) -> None:
        self.proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        async with asyncio.timeout(10):
            while True:
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", self.port)
                    w.close()
                    return
                except OSError:
                    await asyncio.sleep(0.02)

    def down(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its sessions
            self.proc.wait(10)
            self.proc = None


async def test_broker_away_and_back(tmp_path: Path) -> None:
    broker = PrivateBroker(tmp_path)
    prefix = unique_prefix()
    url = f"mqtt://127.0.0.1:{broker.port}"
    sub_id = f"{prefix}-sub"
    bus = EventBus(url, "node-4", prefix=prefix)
    await bus.start()  # no broker yet: the bus keeps trying, the caller never sees it
    bus.publish(Event(K.ENTERQUEUE, 1.0, call_id="early", skill="rescue"))
    await asyncio.sleep(0.3)
    assert bus.stats()["connected"] is False and bus.stats()["buffered"] == 1
    try:
        await broker.up()
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=sub_id, clean_session=False) as sub:
            await sub.subscribe(f"{prefix}/#", qos=1)
            bus.publish(Event(K.ENTERQUEUE, 2.0, call_id="before", skill="rescue"))
            # "early" may have gone out before the subscription existed; "before" is after it
            async with asyncio.timeout(10):
                async for m in sub.messages:
                    if json.loads(m.payload)["call_id"] == "before":
                        break
        await wait_for(lambda: bus.stats()["buffered"] == 0)

        broker.down()
        await wait_for(lambda: not bus.stats()["connected"])
        for i in range(20):  # while the broker is away: buffered, no exception
            bus.publish(Event(K.ENTERQUEUE, 10.0 + i, call_id=f"during{i}", skill="rescue"))
        await asyncio.sleep(0.3)
        assert bus.stats()["buffered"] == 20 and bus.stats()["connected"] is False

        await broker.up()
        await wait_for(lambda: bus.stats()["buffered"] == 0, timeout=15)
        assert bus.stats()["connects"] == 2
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier=sub_id, clean_session=False) as sub:
            msgs = await collect(sub, 20)
        assert [json.loads(m.payload)["call_id"] for m in msgs] == [f"during{i}" for i in range(20)]
        assert all(m.qos == 1 for m in msgs)
    finally:
        await bus.stop()
        with contextlib.suppress(Exception):
            broker.down()
