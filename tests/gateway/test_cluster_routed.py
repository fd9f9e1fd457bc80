"""``handoff122 cluster --nodes 2`` with leader routing, end to end: the front door, two real nodes
that route through the elected routing authority (``serve --cluster true``), one real softphone
(baresip) registered as seat s1 at the front door, real pjsua2 callers dialling the front door.

What it proves:

* callers that land on both nodes reach the one seat one after another, in turns decided by the
  leader: the fence's history of the seat shows one offer / one dial at a time, and no node was
  ever refused at the front door (``486``): the routing never tried a second call to the seat;
* kill -9 of every process of the leader node while a caller waits: the other node takes over
  (its log says it routes for the cluster) and the waiting caller reaches the seat.

Which node led and which node carried a call are read from the nodes' own logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, own_pg_database
from tests.faults.harness import start_seat_sim
from tests.faults.services import OwnMosquitto
from tests.faults.test_broker_outage import broker  # noqa: F401  (a fixture: a broker of the test's own)
from tests.gateway.test_cluster import RunningCluster, _cli, processes_under, running_cluster
from tests.gateway.test_handoff import HUMAN
from tests.gateway.test_register import tone_wav
from tests.routing.test_cluster import assert_one_call_at_a_time, enqueued, fence_log

pytestmark = [pytest.mark.sip, pytest.mark.postgres, pytest.mark.timeout(420),
              pytest.mark.skipif(shutil.which("baresip") is None, reason="needs baresip-core")]

WORKERS = 1


@pytest.fixture
def own_db() -> Iterator[str]:
    """A database of its own: the routing authority's advisory lock is per database."""
    with own_pg_database("handoff_routed") as url:
        yield url


def leads(c: RunningCluster, i: int) -> list[dict[str, Any]]:
    """Node i's log lines that say it routes for the cluster (one per election it won)."""
    return [x for x in c.node_log(i) if x.get("event") == "routing for the cluster"]


def bridged(c: RunningCluster, i: int) -> int:
    return sum(1 for x in c.node_log(i) if x.get("event") == "bridged")


def refused_at_front_door(c: RunningCluster) -> list[dict[str, Any]]:
    return [x for i in (1, 2) for x in c.node_log(i) if x.get("event") == "seat_failed" and x.get("code") == 486]


def door_prefers(c: RunningCluster) -> str | None:
    """The node the API door sends connections to, as its last log line says."""
    said = [json.loads(ln) for ln in c.log_path.read_text(errors="replace").splitlines()
            if ln.startswith("{") and '"api_door_prefers"' in ln]
    return said[-1].get("node") if said else None


def dispatcher_uri(c: RunningCluster, duid: str) -> str:
    def walk(node: object) -> str | None:
        if isinstance(node, dict):
            dest = node.get("DEST")
            if isinstance(dest, dict) and (dest.get("ATTRS") or {}).get("DUID") == duid:
                return str(dest["URI"])
            return next((u for v in node.values() if (u := walk(v))), None)
        if isinstance(node, list):
            return next((u for v in node if (u := walk(v))), None)
        return None
    uri = walk(c.rpc.call("dispatcher.list"))
    assert uri, duid
    return uri


def start_caller(c: RunningCluster, stay: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "call", "--to",
                             f"sip:122@127.0.0.1:{c.sip_port}", "--digits", HUMAN, "--stay", str(stay)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def result(p: subprocess.Popen[str], timeout: float = 180) -> dict[str, Any]:
    out = p.communicate(timeout=timeout)[0]
    return json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])


@pytest.fixture
def routed_cluster(tmp_path: Path, own_db: str, mqtt_url: str) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path, own_db, mqtt_url, workers=WORKERS, env={"HANDOFF_WRAP_UP_S": "0"}) as c:
        assert "WARNING: --independent-routing" not in c.log_path.read_text()
        yield c


def register_seat_phone(c: RunningCluster, tone_s: int = 60, password: str = "seat-pass") -> None:
    """baresip registered as s1 at the front door, answering every call at once (auto answer); it
    hangs up itself when its ``tone_s`` tone file ends."""
    conf = c.data_dir.parent / "baresip-s1"
    conf.mkdir()
    tone_wav(conf / "tone.wav", 1000, seconds=tone_s)
    port = free_port()
    (conf / "config").write_text(
        f"poll_method epoll\nsip_listen 127.0.0.1:{port}\naudio_player aufile,{conf / 'heard.wav'}\n"
        f"audio_source aufile,{conf / 'tone.wav'}\naudio_alert aufile,/dev/null\n"
        "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n"
        "module_app account.so\nmodule_app menu.so\n")
    (conf / "accounts").write_text(f"<sip:s1@127.0.0.1:{c.sip_port};transport=udp>;auth_pass={password};"
                                   "answermode=auto;regint=30;audio_codecs=PCMU,PCMA\n")
    c.softphones.append(subprocess.Popen(["baresip", "-f", str(conf)], stdin=subprocess.DEVNULL,
                                         stdout=(conf / "out.log").open("wb"), stderr=subprocess.STDOUT,
                                         env={**os.environ, "HOME": str(conf)}))
    for i in (1, 2):
        c.wait_for(lambda i=i: any(x.get("event") == "seat_registered" and x.get("seat_id") == "s1"
                                   for x in c.node_log(i)))


def test_callers_on_both_nodes_share_one_front_door_seat_and_a_killed_leader_is_replaced(
        routed_cluster: RunningCluster) -> None:
    c = routed_cluster
    leader = c.wait_for(lambda: next((i for i in (1, 2) if leads(c, i)), None), timeout=60)
    other = 3 - leader
    register_seat_phone(c)

    # the agent says ready through the cluster's API door, which sends every connection to the
    # leader's API (a non-leader's views are empty, docs/CLUSTER.md): the seat is there every time
    token = _cli("token", "create", "--role", "supervisor", "--db-url", c.db_url, "--data-dir",
                 str(c.data_dir)).stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    api = f"http://127.0.0.1:{c.api_port}"
    c.wait_for(lambda: door_prefers(c) == f"node-{leader}")
    for _ in range(6):
        assert [x["id"] for x in httpx.get(f"{api}/api/v1/seats", headers=auth, timeout=10).json()] == ["s1"]
    r = httpx.put(f"{api}/api/v1/seats/s1/status", headers=auth, timeout=10, json={"status": "available", "reason": None})
    assert r.status_code == 200, r.text

    def seat() -> dict[str, Any]:
        return next(x for x in httpx.get(f"{api}/api/v1/seats", headers=auth, timeout=10).json() if x["id"] == "s1")
    c.wait_for(lambda: seat()["status"] == "available")
    assert seat()["contact"] == f"sip:s1@127.0.0.1:{c.sip_port}"  # its AOR at the front door

    # 1. four callers at once-ish, through the front door: they land on both nodes, wait in one
    # queue, and each reaches the seat in turn (each stays 5 s longer than the one before it)
    callers = []
    for n in range(1, 5):
        callers.append(start_caller(c, stay=4.0 + 5.0 * n))
        c.wait_for(lambda n=n: enqueued(c.db_url) >= n, timeout=30)
    results = [result(p) for p in callers]
    assert all(r["answered"] and r["bridged"] for r in results), results
    on = {i: bridged(c, i) for i in (1, 2)}
    assert on[1] >= 1 and on[2] >= 1 and on[1] + on[2] == 4, on
    dialed = assert_one_call_at_a_time(asyncio.run(fence_log(c.db_url)))
    assert len(dialed) == 4, dialed
    assert refused_at_front_door(c) == []  # the routing never sent a second call to the seat

    # 2. new callers only to the node that will survive (the leader taken out of the front door's
    # set by the operator), one talking to the seat and one waiting; then kill -9 of the leader
    # node's every process
    c.rpc.call("dispatcher.set_state", "d", 1, dispatcher_uri(c, f"node-{leader}"))
    c.wait_for(lambda: c.in_set() == {f"node-{leader}": False, f"node-{other}": True})
    before = bridged(c, other)
    talking = start_caller(c, stay=14.0)
    c.wait_for(lambda: bridged(c, other) == before + 1, timeout=60)
    waiting = start_caller(c, stay=60.0)
    c.wait_for(lambda: enqueued(c.db_url) >= 6, timeout=30)
    assert not leads(c, other)
    pids = c.node_pids(leader)
    killed = time.time()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    line = c.wait_for(lambda: leads(c, other), timeout=60, every=0.05)[0]
    takeover = float(line["ts"]) - killed
    first = result(talking)
    second = result(waiting)
    reached = next(float(x["ts"]) for x in reversed(c.node_log(other)) if x.get("event") == "bridged")
    print(f"\nkill -9 of the leader node (node-{leader}, {len(pids)} processes) -> node-{other} routes for the "
          f"cluster after {takeover * 1000:.0f} ms (restore {line.get('restore_s')} s); the waiting caller "
          f"reached the seat {reached - killed:.1f} s after the kill (the talking caller stayed until then)")
    assert first["answered"] and first["bridged"], first
    assert second["answered"] and second["bridged"], second
    dialed = assert_one_call_at_a_time(asyncio.run(fence_log(c.db_url)))
    assert len(dialed) == 6, dialed
    assert refused_at_front_door(c) == []
    c.wait_for(lambda: not processes_under(c.data_dir / f"node-{leader}"))
    assert c.proc.poll() is None
    # the API door follows the new leader: its view, with the seat, on every connection
    c.wait_for(lambda: door_prefers(c) == f"node-{other}")
    for _ in range(4):
        assert seat()["contact"] == f"sip:s1@127.0.0.1:{c.sip_port}"


def seat_phone_log(c: RunningCluster) -> str:
    return (c.data_dir.parent / "baresip-s1" / "out.log").read_text(errors="replace")


def seat_calls_ended(c: RunningCluster) -> int:
    """Calls the seat phone (baresip) saw end: it prints "Call with ... terminated" for each."""
    return sum(1 for ln in seat_phone_log(c).splitlines() if "terminated" in ln)


def seat_profile(c: RunningCluster) -> int:
    """The front door's count of calls in progress to seat s1 (dialog profile ``seat``)."""
    size = c.rpc.call("dlg.profile_get_size", "seat", "s1")
    return int(size.get("count", 0) if isinstance(size, dict) else size)


def supervised_seat_behind(c: RunningCluster, leader: int, other: int) -> tuple[str, dict[str, str]]:
    """A supervisor token and s1 ready through the API door (which prefers the leader's API), and
    the leader taken out of the front door's set: new callers land on ``other``.  Returns the
    door's URL and the token's headers."""
    token = _cli("token", "create", "--role", "supervisor", "--db-url", c.db_url, "--data-dir",
                 str(c.data_dir)).stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    api = f"http://127.0.0.1:{c.api_port}"
    c.wait_for(lambda: door_prefers(c) == f"node-{leader}")
    r = httpx.put(f"{api}/api/v1/seats/s1/status", headers=auth, timeout=10, json={"status": "available", "reason": None})
    assert r.status_code == 200, r.text
    c.rpc.call("dispatcher.set_state", "d", 1, dispatcher_uri(c, f"node-{leader}"))
    c.wait_for(lambda: c.in_set() == {f"node-{leader}": False, f"node-{other}": True})
    return api, auth


def test_a_dead_nodes_seat_call_is_ended_at_the_front_door_and_a_live_one_is_never_cut(
        routed_cluster: RunningCluster) -> None:
    """The front door's in-dialog keep-alives (OPTIONS to the node's worker, SEAT_KEEPALIVE_S):
    a live call outlasts three of them; kill -9 of the node carrying a seat call ends that call
    at the front door (BYE to the seat phone, its ``seat`` profile back to 0), and the seat takes
    the next caller: it is not left stuck busy (486) until the dialog timeout (4 h)."""
    from gateway.kamailio import SEAT_KEEPALIVE_S

    c = routed_cluster
    leader = c.wait_for(lambda: next((i for i in (1, 2) if leads(c, i)), None), timeout=60)
    x = 3 - leader  # the node that carries the seat calls and is killed: routing stays where it is
    register_seat_phone(c, tone_s=3 * SEAT_KEEPALIVE_S + 60)  # outlasts every call below
    supervised_seat_behind(c, leader, x)  # callers only to node X (the leader out of the set for now)

    # 1. a live call through the front door lasting more than three keep-alive intervals
    stay = 3 * SEAT_KEEPALIVE_S + 10.0
    live = start_caller(c, stay=stay)
    c.wait_for(lambda: bridged(c, x) == 1, timeout=60)
    c.wait_for(lambda: seat_profile(c) == 1)
    first = result(live, timeout=stay + 60)
    assert first["answered"] and first["bridged"] and first["hung_up_by"] == "caller", first
    assert first["duration_s"] >= stay - 1, first
    assert refused_at_front_door(c) == []
    c.wait_for(lambda: seat_profile(c) == 0 and seat_calls_ended(c) == 1, timeout=20)

    # 2. a caller on node X talks to the seat; kill -9 of every process of node X
    talking = start_caller(c, stay=240.0)
    try:
        c.wait_for(lambda: bridged(c, x) == 2, timeout=60)
        c.wait_for(lambda: seat_profile(c) == 1)
        pids = c.node_pids(x)
        killed = time.monotonic()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        # keep-alive interval + OPTIONS timeout (2 s) + the module's 10 s + timer step: at most 43 s
        c.wait_for(lambda: seat_calls_ended(c) == 2, timeout=SEAT_KEEPALIVE_S + 20, every=0.2)
        seat_bye = time.monotonic() - killed
        c.wait_for(lambda: seat_profile(c) == 0, timeout=5)
        freed = time.monotonic() - killed
    finally:
        talking.kill()
        talking.wait()
    print(f"\nkill -9 of node-{x} ({len(pids)} processes) during a seat call: the seat phone's call ended "
          f"{seat_bye:.1f} s after the kill, the front door's seat profile was 0 after {freed:.1f} s "
          f"(keep-alive every {SEAT_KEEPALIVE_S} s)")

    # 3. the seat takes the next caller, through the surviving node
    c.rpc.call("dispatcher.set_state", "ap", 1, dispatcher_uri(c, f"node-{leader}"))
    c.wait_for(lambda: c.in_set().get(f"node-{leader}") is True, timeout=30)
    before = bridged(c, leader)
    nxt = start_caller(c, stay=4.0)
    c.wait_for(lambda: bridged(c, leader) == before + 1, timeout=90)
    third = result(nxt)
    assert third["answered"] and third["bridged"], third
    assert refused_at_front_door(c) == []


class BusWatch:
    """``mosquitto_sub`` on the cluster's broker: every message as (topic, JSON body), as a seat
    desktop or a wallboard would receive it."""

    def __init__(self, port: int, out: Path) -> None:
        self.port, self.out = port, out
        self.proc = subprocess.Popen(["mosquitto_sub", "-p", str(port), "-t", "handoff122/#", "-v"],
                                     stdout=out.open("wb"), stderr=subprocess.DEVNULL)

    def messages(self) -> list[tuple[str, dict[str, Any]]]:
        got = []
        for ln in self.out.read_text(errors="replace").splitlines():
            topic, _, body = ln.partition(" ")
            with contextlib.suppress(ValueError):
                if isinstance(doc := json.loads(body), dict):
                    got.append((topic, doc))
        return got

    def seat_statuses(self, seat: str) -> list[str]:
        return [d["data"].get("status") for t, d in self.messages()
                if t == f"handoff122/seats/{seat}" and d.get("kind") == "SEATSTATUS"]

    def desktop_says(self, seat: str, status: str) -> None:
        subprocess.run(["mosquitto_pub", "-p", str(self.port), "-q", "1", "-t", f"handoff122/seats/{seat}/status/set",
                        "-m", json.dumps({"status": status, "reason": "desk"})], check=True, timeout=10)


def test_seat_desktops_and_wallboards_hear_whoever_leads_over_mqtt(tmp_path: Path, own_db: str,
                                                                  broker: OwnMosquitto) -> None:  # noqa: F811
    """In cluster mode the ACD's decisions are published by the leader (screen pops, call and seat
    events, queue snapshots) and the node that carries a call publishes its own journey; a seat
    desktop's status request over MQTT reaches the ACD that decides, also after a failover."""
    with running_cluster(tmp_path, own_db, broker.url, workers=WORKERS, env={"HANDOFF_WRAP_UP_S": "0"}) as c:
        leader = c.wait_for(lambda: next((i for i in (1, 2) if leads(c, i)), None), timeout=60)
        other = 3 - leader
        register_seat_phone(c)
        bus = BusWatch(broker.port, tmp_path / "bus.txt")
        c.softphones.append(bus.proc)
        # retained: the subscriber gets it once its subscription is in place, whenever that is
        subprocess.run(["mosquitto_pub", "-p", str(broker.port), "-r", "-t", "handoff122/probe", "-m", "{}"], check=True)
        c.wait_for(lambda: any(t == "handoff122/probe" for t, _ in bus.messages()))

        bus.desktop_says("s1", "available")  # the agent's desktop, not the API
        c.wait_for(lambda: "available" in bus.seat_statuses("s1"), timeout=30)
        caller = result(start_caller(c, stay=3.0))
        assert caller["answered"] and caller["bridged"], caller
        pop = c.wait_for(lambda: next((d for t, d in bus.messages() if t == "handoff122/seats/s1/offer"), None))
        call_id = pop["call_id"]
        assert pop["skill"] == "intake_guidance" and pop["caller"], pop  # who is calling, before the phone rings

        def kinds() -> set[str]:
            return {d.get("kind") for t, d in bus.messages() if t == f"handoff122/calls/{call_id}"}
        # the journey from the node that carried the call, the decisions from the leader
        c.wait_for(lambda: {"OFFER", "CONNECT"} <= kinds() and kinds() & {"CALLSTART", "CALLEND"}, timeout=60)
        print("call events on the bus:", sorted(kinds()))
        c.wait_for(lambda: any(t == "handoff122/queues/intake_guidance" for t, _ in bus.messages()))

        # the leader's node dies: the next leader hears the desktops once its bus is on the broker (a
        # request published while no leader is subscribed, during the election, is not kept: the
        # desktop sees no SEATSTATUS event and asks again, docs/CLUSTER.md)
        for pid in c.node_pids(leader):
            os.kill(pid, signal.SIGKILL)
        c.wait_for(lambda: leads(c, other), timeout=60)
        c.wait_for(lambda: any(x.get("event") == "MQTT connected" and x.get("client") == f"node-{other}-leader"
                               and x.get("subscribed") for x in c.node_log(other)), timeout=30)
        c.wait_for(lambda: bus.seat_statuses("s1")[-1:] == ["available"])  # after the caller's wrap-up
        bus.desktop_says("s1", "not_ready")
        c.wait_for(lambda: bus.seat_statuses("s1")[-1:] == ["not_ready"], timeout=30)


def test_a_seat_added_through_the_api_door_takes_calls_and_outlives_its_leader(routed_cluster: RunningCluster) -> None:
    """Seat changes asked through the cluster's API door are decided by the leader's ACD (answered at
    once, like on one node) and logged: the seat takes a caller of either node, and after a kill -9 of
    the leader the next leader has it and changes it."""
    c = routed_cluster
    leader = c.wait_for(lambda: next((i for i in (1, 2) if leads(c, i)), None), timeout=60)
    other = 3 - leader
    token = _cli("token", "create", "--role", "admin", "--db-url", c.db_url, "--data-dir",
                 str(c.data_dir)).stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    api = f"http://127.0.0.1:{c.api_port}"
    c.wait_for(lambda: door_prefers(c) == f"node-{leader}")
    port = free_port()
    c.softphones.append(start_seat_sim(c.data_dir.parent, "s2", port, "--answer-after", "0.3", "--hangup-after", "2"))
    r = httpx.post(f"{api}/api/v1/admin/seats", headers=auth, timeout=10, json={
        "id": "s2", "name": "Desk 2", "contact": f"sip:s2@127.0.0.1:{port}", "skills": ["intake_guidance"],
        "status": "available"})
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["status"]) == ("Desk 2", "available")
    assert httpx.post(f"{api}/api/v1/admin/seats", headers=auth, timeout=10, json={
        "id": "s2", "contact": f"sip:s2@127.0.0.1:{port}", "skills": ["intake_guidance"]}).status_code == 409

    caller = result(start_caller(c, stay=4.0))
    assert caller["answered"] and caller["bridged"], caller
    invites = [x for x in map(json.loads, (c.data_dir.parent / "seat-s2.jsonl").read_text().splitlines())
               if "invite_at" in x]
    assert len(invites) == 1, invites  # the seat the API added is the one that took the caller

    for pid in c.node_pids(leader):
        os.kill(pid, signal.SIGKILL)
    c.wait_for(lambda: leads(c, other), timeout=60)
    c.wait_for(lambda: door_prefers(c) == f"node-{other}")

    def s2() -> dict[str, Any] | None:
        return next((x for x in httpx.get(f"{api}/api/v1/seats", headers=auth, timeout=10).json() if x["id"] == "s2"),
                    None)
    c.wait_for(lambda: (s2() or {}).get("name") == "Desk 2")  # restored from the log by the next leader
    r = httpx.put(f"{api}/api/v1/admin/seats/s2", headers=auth, timeout=10, json={
        "name": "Desk 2 (east)", "contact": f"sip:s2@127.0.0.1:{port}", "skills": ["intake_guidance"]})
    assert r.status_code == 200 and r.json()["name"] == "Desk 2 (east)", r.text
    c.wait_for(lambda: (s2() or {}).get("status") == "available")
    assert httpx.delete(f"{api}/api/v1/admin/seats/s2", headers=auth, timeout=10).status_code == 204
    assert s2() is None


def test_seat_phone_credentials_set_through_the_api_door_open_the_front_door(routed_cluster: RunningCluster) -> None:
    """The admin API's seat credentials in a cluster: stored in the shared database by the leader's
    node and loaded into the front door's registrar, where the phone registers with the new password."""
    c = routed_cluster
    leader = c.wait_for(lambda: next((i for i in (1, 2) if leads(c, i)), None), timeout=60)
    token = _cli("token", "create", "--role", "admin", "--db-url", c.db_url, "--data-dir",
                 str(c.data_dir)).stdout.strip().splitlines()[-1]
    c.wait_for(lambda: door_prefers(c) == f"node-{leader}")
    r = httpx.put(f"http://127.0.0.1:{c.api_port}/api/v1/seats/s1/credentials", timeout=10,
                  headers={"Authorization": f"Bearer {token}"}, json={"username": "s1", "password": "fresh-pass"})
    assert r.status_code == 200, r.text
    assert r.json()["register"] == {"username": "s1", "has_credentials": True}
    register_seat_phone(c, password="fresh-pass")  # both nodes see it registered at the front door


def test_hold_transfer_and_listen_through_the_api_door_reach_a_call_on_another_node(
        routed_cluster: RunningCluster) -> None:
    """The API door sends every request to the leader's API, but a call's media is on the node
    whose worker answered it: hold, resume, a supervisor's listen and a blind transfer of a call
    on the other node are carried out by that node (a ``CONTROL`` delivery, its answer a command),
    and its refusals come back with their status and reason."""
    c = routed_cluster
    leader = c.wait_for(lambda: next((i for i in (1, 2) if leads(c, i)), None), timeout=60)
    other = 3 - leader
    register_seat_phone(c, tone_s=120)
    api, auth = supervised_seat_behind(c, leader, other)  # the caller lands on the node that does not lead
    caller = start_caller(c, stay=60.0)
    c.wait_for(lambda: bridged(c, other) == 1, timeout=60)
    call_id = next(x["call_id"] for x in c.node_log(other) if x.get("event") == "bridged")

    def moves() -> list[tuple[str, str]]:
        return [(x["to"], x["cause"]) for x in c.node_log(other)
                if x.get("event") == "journey" and x.get("call_id") == call_id]

    def act(path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return httpx.post(f"{api}/api/v1/calls/{call_id}/{path}", headers=auth, json=body, timeout=15)

    try:
        t0 = time.monotonic()
        r = act("hold")
        took = time.monotonic() - t0
        assert r.status_code == 200, r.text
        c.wait_for(lambda: moves()[-1][0] == "on_hold")
        print(f"\nhold through the API door, carried out by node-{other}: answered in {took * 1000:.0f} ms")
        r = act("hold")  # the node that carries the call refuses, and says why
        assert r.status_code == 409 and "on_hold" in r.json()["detail"], r.text
        r = act("resume")
        assert r.status_code == 200, r.text
        c.wait_for(lambda: moves()[-1][0] == "talking")

        # the node of the call frozen: the request times out with a reason, and the node, woken,
        # does not act on it late (the person who asked was told nothing was done)
        control = int((c.data_dir / f"node-{other}" / "run" / "control.pid").read_text())
        os.kill(control, signal.SIGSTOP)
        try:
            r = act("hold")
        finally:
            os.kill(control, signal.SIGCONT)
        assert r.status_code == 504 and "nothing was done" in r.json()["detail"], r.text
        c.wait_for(lambda: any(x.get("event") == "call control request read after its deadline, not carried out"
                               for x in c.node_log(other)), timeout=30)
        assert moves()[-1][0] == "talking"

        # a supervisor listens: the node of the call dials the supervisor's phone for that call
        sup_port = free_port()
        c.softphones.append(start_seat_sim(c.data_dir.parent, "sup", sup_port, "--answer-after", "0.3",
                                           "--hangup-after", "2"))
        r = act("monitor", {"mode": "listen", "contact": f"sip:sup@127.0.0.1:{sup_port}"})
        assert r.status_code == 200, r.text
        sup_log = c.data_dir.parent / "seat-sup.jsonl"
        heard = c.wait_for(lambda: [x for x in map(json.loads, sup_log.read_text().splitlines())
                                    if x.get("call_id") == call_id and x.get("answered")], timeout=30)
        assert heard, sup_log.read_text()

        # refusals decided on the leader, before any node is asked
        assert act("transfer", {"to_seat": "s1"}).status_code == 409  # the seat on the call
        r = act("transfer", {"to_skill": "intake_guidance", "mode": "warm"})
        assert r.status_code == 409 and "cluster mode" in r.json()["detail"], r.text
        assert httpx.post(f"{api}/api/v1/calls/c-nosuchcall/hold", headers=auth, timeout=15).status_code == 404
        # a node that does not lead, asked directly about a call it does not carry, says where to ask
        own_api = next(x["api"] for x in c.node_log(other) if x.get("event") == "node_ready")
        r = httpx.post(f"{own_api}/api/v1/calls/c-nosuchcall/hold", headers=auth, timeout=15)
        assert r.status_code == 409 and "API door" in r.json()["detail"], r.text

        # a blind transfer: the caller goes back to the queue on its own node, never hung up on,
        # and the seat (wrap-up 0 s) takes it again
        r = act("transfer", {"to_skill": "intake_guidance", "note": "back to intake"})
        assert r.status_code == 200, r.text
        c.wait_for(lambda: ("queued", "transferred") in moves())
        c.wait_for(lambda: bridged(c, other) == 2, timeout=60)
    finally:
        out = result(caller, timeout=120)
    assert out["answered"] and out["hung_up_by"] == "caller", out
    carried = [x for x in c.node_log(other) if x.get("event") == "call control request carried out"]
    assert {x["op"] for x in carried} == {"hold_call", "monitor_call", "transfer_call"}, carried
    assert not any(x.get("event") == "call control request carried out" for x in c.node_log(leader))
