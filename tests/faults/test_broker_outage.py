"""The node's Mosquitto is killed and started again while calls go on (the test's own broker).

No call is dropped and the bus reconnects by itself: a subscriber of the restarted broker sees the
next call's events.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.faults.harness import NodePorts, boot, seats_yaml, start_seat_sim
from tests.faults.services import OwnMosquitto
from tests.node_harness import run_caller

pytestmark = pytest.mark.sip

HUMAN = "0"


@pytest.fixture
def broker() -> Iterator[OwnMosquitto]:
    b = OwnMosquitto()
    b.start()
    try:
        yield b
    finally:
        b.close()


def test_mosquitto_killed_mid_traffic_drops_no_call_and_the_bus_catches_up(tmp_path: Path,
                                                                           broker: OwnMosquitto) -> None:
    p1 = free_port()
    node = boot(tmp_path, NodePorts.pick(workers=2), seats_yaml=seats_yaml(("s1", "intake_guidance", p1, "available")),
                args=["--mqtt-url", broker.url], env={"HANDOFF_WRAP_UP_S": "0"})
    seat = start_seat_sim(tmp_path, "s1", p1, "--answer-after", "0.3")
    sub: subprocess.Popen[bytes] | None = None
    try:
        broker.kill()                                     # the broker dies ...
        during = run_caller(node, HUMAN, gap=0.5, stay=1)  # ... a whole call meanwhile
        assert during["answered"] and during["bridged"], during
        call_id = node.wait_for(lambda: next((c["id"] for c in node.calls() if c["end_reason"] == "completed"),
                                             None))
        broker.start()                                    # back on the same port, empty
        out = tmp_path / "bus.txt"
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(broker.port), "-t", "handoff122/#", "-v"],
                               stdout=out.open("wb"), stderr=subprocess.DEVNULL)
        after = run_caller(node, HUMAN, gap=0.5, stay=1)
        assert after["answered"] and after["bridged"], after
        # the bus reconnected: the new call's events reach a subscriber
        second = node.wait_for(lambda: next((c["id"] for c in node.calls()
                                             if c["end_reason"] == "completed" and c["id"] != call_id), None))
        node.wait_for(lambda: f"handoff122/calls/{second}" in out.read_text(errors="replace"), timeout=30)
        assert sum(1 for x in node.logs() if x.get("event") == "MQTT connected") >= 2  # a reconnect
    finally:
        if sub is not None:
            sub.terminate()
        seat.terminate()
        seat.wait(5)
        node.stop()
