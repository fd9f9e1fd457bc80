"""``handoff122 cluster --nodes 2``: the front door, two real nodes, real SIPp callers and a real softphone.

One cluster runs for the module, on a fresh PostgreSQL database and the test Mosquitto, with
``--independent-routing`` (each node routes alone: what the front door's one-call-per-seat guard must
hold against).  The cluster with leader routing is tested in tests/gateway/test_cluster_routed.py.  Which node carried a call is read from that node's own
log (``call_started``), never from the front door's word.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.bench.processes import processes_under
from gateway.bench.runner import free_block, rtp_base_below_ephemeral
from gateway.cluster import front_door_set
from gateway.kamailio import KamailioRpc, find_kamailio
from gateway.local_sockets import unix_socket_path
from tests.conftest import free_port
from tests.gateway.test_register import ha1, tone_wav
from tests.node_harness import poll_until
from tests.sipp_driver import run_sipp

WORKERS = 2


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def test_cluster_refuses_sqlite_in_one_line(tmp_path: Path) -> None:
    r = _cli("cluster", "--nodes", "2", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "--db-url is required" in r.stderr
    r = _cli("cluster", "--db-url", f"sqlite+aiosqlite:///{tmp_path}/x.sqlite3", "--data-dir", str(tmp_path))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "PostgreSQL" in r.stderr
    assert not list(tmp_path.glob("node-*.pid"))


@pytest.mark.postgres
@pytest.mark.skipif(find_kamailio("auto") is None, reason="kamailio not installed")
def test_cluster_says_in_one_line_that_its_api_port_is_taken_before_starting_a_node(tmp_path: Path,
                                                                                    pg_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        api = taken.getsockname()[1]
        sip = free_port()
        r = _cli("cluster", "--nodes", "1", "--sip-port", str(sip), "--api-port", str(api), "--data-dir",
                 str(tmp_path / "d"), "--db-url", pg_url, "--workers", "1", "--node-base-port", str(free_block(3)),
                 "--rtp-base-port", str(rtp_base_below_ephemeral(sip, 40)))
    assert r.returncode == 1, r.stderr
    said = [ln for ln in r.stderr.splitlines() if not ln.startswith("{")]  # the JSON log lines aside
    assert said == [f"handoff122 cluster: API port 127.0.0.1:{api}: Address already in use"], r.stderr
    assert not (tmp_path / "d" / "node-1.log").exists()  # no node was started


def test_nodes_route_through_the_authority_unless_told_to_route_alone(tmp_path: Path) -> None:
    from gateway.cli import build_parser
    from gateway.cluster import Cluster, ClusterOptions

    for alone in (False, True):
        c = Cluster(ClusterOptions(nodes=2, sip_port=5060, api_port=8000, data_dir=tmp_path / str(alone),
                                   db_url="postgresql+asyncpg://x/y", mqtt_url=None, workers=1, node_base_port=5061,
                                   rtp_base_port=20000, independent_routing=alone))
        args = [build_parser().parse_args(c.node_argv(p)[2:]) for p in c.plans]
        assert [(a.cluster, a.cluster_node_id) for a in args] == [("false" if alone else "true", p.name) for p in c.plans]


@pytest.mark.skipif(find_kamailio("auto") is None, reason="kamailio not installed")
def test_every_node_gets_its_own_ports_and_the_front_door_config_is_accepted(tmp_path: Path) -> None:
    from gateway.cli import _settings_from, build_parser
    from gateway.cluster import Cluster, ClusterOptions

    c = Cluster(ClusterOptions(nodes=3, sip_port=5060, api_port=8000, data_dir=tmp_path, db_url="postgresql+asyncpg://x/y",
                               mqtt_url=None, workers=4, node_base_port=5061, rtp_base_port=20000,
                               independent_routing=True))
    taken: list[tuple[str, int, int]] = [("front door", 5060, 5060), ("api door", 8000, 8000)]
    for p in c.plans:
        s = _settings_from(build_parser().parse_args(c.node_argv(p)[2:]))  # what the node itself will load
        assert "postgresql" not in " ".join(c.node_argv(p))  # the database URL (a password) goes by environment
        assert (s.cluster_node_id, s.front_door_sip, s.data_dir) == (p.name, "127.0.0.1:5060", p.data_dir)
        taken += [(f"{p.name} {what}", a, b) for what, a, b in s.port_ranges()]
    for i, (a, a1, a2) in enumerate(taken):
        for b, b1, b2 in taken[i + 1:]:
            assert not (a1 <= b2 and b1 <= a2), f"{a} {a1}-{a2} overlaps {b} {b1}-{b2}"
    cfg = c.front.write_config()
    p = subprocess.run([find_kamailio("auto") or "", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "duid=node-3" in (tmp_path / "front" / "dispatcher.list").read_text()


@dataclass
class RunningCluster:
    proc: subprocess.Popen[bytes]
    data_dir: Path
    sip_port: int
    api_port: int
    log_path: Path
    softphones: list[subprocess.Popen[bytes]]
    db_url: str

    @property
    def rpc(self) -> KamailioRpc:
        return KamailioRpc(unix_socket_path(self.data_dir / "front", "kamailio-rpc.sock"))

    def node_log(self, i: int) -> list[dict[str, Any]]:
        path = self.data_dir / f"node-{i}.log"
        out = []
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def started_calls(self, i: int) -> int:
        return sum(1 for x in self.node_log(i) if x.get("event") == "call_started")

    def node_pids(self, i: int) -> list[int]:
        """Node i's supervisor, control process, media workers and API: everything but its Kamailio,
        which must go down by itself when its supervisor dies (parent-death signal)."""
        pids = [int((self.data_dir / f"node-{i}.pid").read_text())]
        pids += [int(p.read_text()) for p in (self.data_dir / f"node-{i}" / "run").glob("*.pid")
                 if p.name != "kamailio.pid"]
        return sorted(set(pids))

    def in_set(self) -> dict[str, bool]:
        return front_door_set(self.rpc.call("dispatcher.list"))

    def wait_for(self, what: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
        return poll_until(what, timeout, every, lambda: "--- cluster ---\n"
                          + self.log_path.read_text(errors="replace")[-2500:] + "\n"
                          + "\n".join(f"--- {p.name} ---\n" + p.read_text(errors="replace")[-2500:]
                                      for p in sorted(self.data_dir.glob("*.log"))))


@contextlib.contextmanager
def running_cluster(tmp: Path, db_url: str, mqtt_url: str, *, workers: int, extra: tuple[str, ...] = (),
                    env: dict[str, str] | None = None, nodes: int = 2,
                    seats: tuple[str, ...] = ("s1",)) -> Iterator[RunningCluster]:
    """``handoff122 cluster --nodes <nodes>`` with ``seats`` (phones registering at the front door,
    password ``seat-pass``), run as an operator would; stopped with Ctrl-C, and nothing it started
    is left running."""
    data = tmp / "d"
    seats_file = tmp / "seats.yaml"
    seats_file.write_text("seats:\n" + "".join(
        f"  - id: {s}\n    register: {{username: {s}, ha1: {ha1(s, 'seat-pass')}}}\n"
        "    skills: [intake_guidance]\n" for s in seats))
    sip, api = free_port(), free_port()
    node_base = free_block(nodes * (workers + 2))
    cmd = [sys.executable, "-m", "gateway.cli", "cluster", "--nodes", str(nodes), "--sip-port", str(sip),
           "--api-port", str(api), "--data-dir", str(data), "--db-url", db_url, "--mqtt-url", mqtt_url, "--workers",
           str(workers), "--node-base-port", str(node_base),
           "--rtp-base-port", str(rtp_base_below_ephemeral(sip, nodes * workers * 40)), *extra]
    log_path = tmp / "cluster.log"
    proc = subprocess.Popen(cmd, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                            env={**os.environ, "HANDOFF_SEATS": str(seats_file), **(env or {})})
    c = RunningCluster(proc, data, sip, api, log_path, [], db_url)
    try:
        c.wait_for(lambda: proc.poll() is not None or "front door sip:" in log_path.read_text(), timeout=120)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        yield c
    finally:
        for p in c.softphones:
            p.kill()
            p.wait()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid, _ in processes_under(data):  # never leave a process of this test behind
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pg_url: str, mqtt_url: str) -> Iterator[RunningCluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), pg_url, mqtt_url, workers=WORKERS,
                         extra=("--independent-routing",), env={"HANDOFF_ANSWER_DELAY_S": "0.2"}) as c:
        yield c


@pytest.mark.sip
def test_options_at_the_front_door_and_the_api_door_answer(cluster: RunningCluster) -> None:
    assert run_sipp("uac_options.xml", cluster.sip_port).ok
    assert httpx.get(f"http://127.0.0.1:{cluster.api_port}/healthz", timeout=10).status_code == 200
    assert cluster.wait_for(lambda: cluster.in_set() == {"node-1": True, "node-2": True})
    for i in (1, 2):
        assert (cluster.data_dir / f"node-{i}.pid").read_text().strip().isdigit()
        assert any(x.get("event") == "node_ready" and x.get("node_id") == f"node-{i}" for x in cluster.node_log(i))


needs_baresip = pytest.mark.skipif(shutil.which("baresip") is None, reason="needs baresip-core")


@pytest.fixture(scope="module")
def seat_phone(cluster: RunningCluster) -> subprocess.Popen[bytes]:
    """A real softphone registered as seat s1 at the cluster's front door with the seat's password;
    both nodes (which loaded the seat's HA1 into the front door) see the registration there."""
    conf = cluster.data_dir.parent / "baresip-s1"
    conf.mkdir()
    tone_wav(conf / "tone.wav", 1000, seconds=30)
    port = free_port()
    (conf / "config").write_text(
        f"poll_method epoll\nsip_listen 127.0.0.1:{port}\naudio_player aufile,{conf / 'heard.wav'}\n"
        f"audio_source aufile,{conf / 'tone.wav'}\naudio_alert aufile,/dev/null\n"
        "module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n"
        "module_app account.so\nmodule_app menu.so\n")
    (conf / "accounts").write_text(f"<sip:s1@127.0.0.1:{cluster.sip_port};transport=udp>;auth_pass=seat-pass;"
                                   "answermode=auto;regint=30;audio_codecs=PCMU,PCMA\n")
    phone = subprocess.Popen(["baresip", "-f", str(conf)], stdin=subprocess.DEVNULL,
                             stdout=(conf / "out.log").open("wb"), stderr=subprocess.STDOUT,
                             env={**os.environ, "HOME": str(conf)})
    cluster.softphones.append(phone)
    for i in (1, 2):
        cluster.wait_for(lambda i=i: any(x.get("event") == "seat_registered" and x.get("seat_id") == "s1"
                                         for x in cluster.node_log(i)))
    return phone


@pytest.mark.sip
@needs_baresip
def test_a_second_simultaneous_invite_to_one_seat_is_refused_at_the_front_door(
        cluster: RunningCluster, seat_phone: subprocess.Popen[bytes]) -> None:
    def seat_calls() -> int:
        size = cluster.rpc.call("dlg.profile_get_size", "seat", "s1")
        return int(size.get("count", 0) if isinstance(size, dict) else size)

    # first call to the seat (as a node's worker sends it: sip:s1@front) is answered and held 4 s
    first: dict[str, Any] = {}
    t = threading.Thread(target=lambda: first.update(r=run_sipp(
        "uac_122_dtmf.xml", cluster.sip_port, service="s1", first="500", stay="4000", digits="")))
    t.start()
    cluster.wait_for(lambda: seat_calls() == 1)
    # a second one while it lasts: refused by the front door's dialog profile, the phone never rings
    second = run_sipp("uac_expect_code.xml", cluster.sip_port, service="s1", code="486", ra_check="false")
    t.join(60)
    assert second.ok, second.stdout + second.log
    assert first["r"].ok, first["r"].stdout + first["r"].log
    # the guard lets go with the call: the seat can be called again
    cluster.wait_for(lambda: seat_calls() == 0)
    again = run_sipp("uac_122_dtmf.xml", cluster.sip_port, service="s1", first="300", stay="300", digits="")
    assert again.ok, again.stdout + again.log


@pytest.mark.sip
@needs_baresip
def test_two_nodes_routing_alone_never_ring_one_seat_twice(cluster: RunningCluster,
                                                           seat_phone: subprocess.Popen[bytes]) -> None:
    # --independent-routing: each node's ACD offers s1 on its own.  Two callers asking for a person
    # at once land on different nodes; both nodes dial s1 (through the front door): one rings the
    # phone, the other is refused there with 486, and the phone never has two calls.
    token = _cli("token", "create", "--role", "supervisor", "--db-url", cluster.db_url, "--data-dir",
                 str(cluster.data_dir)).stdout.strip().splitlines()[-1]
    auth = {"Authorization": f"Bearer {token}"}
    apis = {i: next(x["api"] for x in cluster.node_log(i) if x.get("event") == "node_ready") for i in (1, 2)}
    for api in apis.values():
        def seat(api: str = api) -> dict[str, Any]:
            return next(x for x in httpx.get(f"{api}/api/v1/seats", headers=auth, timeout=10).json() if x["id"] == "s1")
        cluster.wait_for(lambda seat=seat: seat()["contact"] == f"sip:s1@127.0.0.1:{cluster.sip_port}")
        r = httpx.put(f"{api}/api/v1/seats/s1/status", headers=auth, timeout=10,
                      json={"status": "available", "reason": None})
        assert r.status_code == 200, r.text
    before = {i: cluster.started_calls(i) for i in (1, 2)}
    callers = [subprocess.Popen([sys.executable, "-m", "gateway.cli", "call", "--to",
                                 f"sip:122@127.0.0.1:{cluster.sip_port}", "--digits", "0", "--stay", "8"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    results = [json.loads([ln for ln in p.communicate(timeout=120)[0].splitlines() if ln.startswith("{")][-1])
               for p in callers]
    assert {i: cluster.started_calls(i) - before[i] for i in (1, 2)} == {1: 1, 2: 1}
    refused = {i for i in (1, 2) for x in cluster.node_log(i) if x.get("event") == "seat_failed" and x.get("code") == 486}
    assert len(refused) == 1, refused  # one node was told "busy" (maybe more than once), the other rang the phone
    assert sorted(bool(r.get("bridged")) for r in results) == [False, True], results


@pytest.mark.sip
def test_calls_through_the_front_door_reach_both_nodes(cluster: RunningCluster) -> None:
    before = {i: cluster.started_calls(i) for i in (1, 2)}
    r = run_sipp("uac_122_dtmf.xml", cluster.sip_port, calls=6, concurrency=6, rate=20, service="122",
                 first="1000", stay="2000", digits="")
    assert r.ok, r.stdout + r.log
    after = cluster.wait_for(lambda: (lambda a: a if sum(a[i] - before[i] for i in a) == 6 else None)(
        {i: cluster.started_calls(i) for i in (1, 2)}))
    assert after[1] > before[1] and after[2] > before[2], (before, after)


@pytest.mark.sip
def test_a_killed_node_leaves_the_set_and_new_calls_go_to_the_other(cluster: RunningCluster) -> None:
    pids = cluster.node_pids(2)
    supervisor = int((cluster.data_dir / "node-2.pid").read_text())
    killed_at = time.monotonic()
    for pid in pids:  # the node's processes at once: supervisor, control, workers, API
        os.kill(pid, signal.SIGKILL)
    cluster.wait_for(lambda: cluster.in_set().get("node-2") is False, timeout=15, every=0.05)
    left_after = time.monotonic() - killed_at
    print(f"node-2 left the front door's set {left_after:.2f} s after kill -9 "
          "(probe every 1 s, a probe times out after 2 s)")
    assert cluster.in_set()["node-1"] is True
    cluster.wait_for(lambda: not processes_under(cluster.data_dir / "node-2"))  # its Kamailio went with it
    before = {i: cluster.started_calls(i) for i in (1, 2)}
    r = run_sipp("uac_122_dtmf.xml", cluster.sip_port, calls=4, concurrency=2, rate=10, service="122",
                 first="500", stay="500", digits="")
    assert r.ok, r.stdout + r.log
    cluster.wait_for(lambda: cluster.started_calls(1) == before[1] + 4)
    assert cluster.started_calls(2) == before[2]
    assert cluster.proc.poll() is None  # the cluster and node-1 run on
    assert httpx.get(f"http://127.0.0.1:{cluster.api_port}/healthz", timeout=10).status_code == 200
    assert f"node-2 (pid {supervisor}) exited" in cluster.log_path.read_text()


@pytest.mark.sip
def test_ctrl_c_stops_everything(cluster: RunningCluster) -> None:
    assert processes_under(cluster.data_dir)
    cluster.proc.send_signal(signal.SIGINT)
    assert cluster.proc.wait(90) == 0, cluster.log_path.read_text()[-3000:]
    cluster.wait_for(lambda: not processes_under(cluster.data_dir), timeout=10)
    assert not list(cluster.data_dir.glob("node-*.pid"))


@pytest.mark.sip
def test_front_door_alone_for_nodes_elsewhere_speaks_rpc_over_udp(tmp_path: Path) -> None:
    # `handoff122 front-door`: the front door of nodes on other machines; they reach its JSON-RPC
    # over UDP.  No node listens here: the node is probed, found dead and kept out of the set.
    sip, rpc_port, node_sip, node_api = free_port(), free_port(), free_port(), free_port()
    log_path = tmp_path / "front.log"
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "front-door", "--sip-port", str(sip), "--api-port",
                             "0", "--data-dir", str(tmp_path / "fd"), "--rpc-listen", f"udp:127.0.0.1:{rpc_port}",
                             "--node", f"node-1=127.0.0.1:{node_sip}:{node_api}"],
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT)
    try:
        rpc = KamailioRpc(f"udp:127.0.0.1:{rpc_port}")
        end = time.monotonic() + 30
        state: dict[str, bool] = {}
        while time.monotonic() < end and state.get("node-1") is not False:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            try:
                state = front_door_set(rpc.call("dispatcher.list", timeout=0.5))
            except OSError:
                pass
            time.sleep(0.2)
        assert state == {"node-1": False}, log_path.read_text()[-2000:]
        assert run_sipp("uac_options.xml", sip).ok
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log_path.read_text()[-2000:]
    assert not processes_under(tmp_path / "fd")
