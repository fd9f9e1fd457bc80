"""A node's children die with it and its local sockets are its own (issue 12).

Real processes throughout: ``handoff122 serve`` killed with SIGKILL, its Kamailio and workers
watched in /proc, the same command started again on the same ports; a stranger process talking
to the control socket as if it were a worker."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.local_sockets import unix_socket_path
from tests.conftest import free_port, serve_port_args
from tests.gateway.test_edge_flood import kamailio_pids
from tests.node_harness import RunningNode, start_node
from tests.sipp_driver import run_sipp

pytestmark = pytest.mark.sip


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper (a container's init may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def test_kill_9_of_the_node_leaves_nothing_behind_and_serve_starts_again_at_once(tmp_path: Path) -> None:
    n = start_node(tmp_path, workers=2, token=False)
    children = kamailio_pids(n) | set(n.worker_pids().values())
    assert len(children) >= 4, children
    cmdline = Path(f"/proc/{n.proc.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    env = dict(e.split(b"=", 1) for e in Path(f"/proc/{n.proc.pid}/environ").read_bytes().split(b"\0") if b"=" in e)
    t0 = time.monotonic()
    os.kill(n.proc.pid, signal.SIGKILL)
    n.proc.wait()
    try:
        n.wait_for(lambda: not any(_alive(p) for p in children), timeout=15, every=0.05)
    finally:
        for pid in children:  # if they outlived the node, this test must not leave them running
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    gone_s = time.monotonic() - t0
    print(f"\nkill -9 of the node: its {len(children)} children gone in {gone_s:.2f} s")

    # the same command, the same ports: it starts at once
    log2 = tmp_path / "node2.log"
    t1 = time.monotonic()
    proc = subprocess.Popen(cmdline, stdout=log2.open("wb"), stderr=subprocess.STDOUT,
                            env={k.decode(): v.decode() for k, v in env.items()})
    again = RunningNode(proc, n.sip_port, n.api_port, n.data_dir, log2)
    try:
        again.wait_for(lambda: proc.poll() is not None or any(x.get("event") == "node_ready" for x in again.logs()),
                       timeout=60)
        assert proc.poll() is None, log2.read_text()[-2000:]
        print(f"serve again on the same ports: ready in {time.monotonic() - t1:.2f} s")
        r = run_sipp("uac_122_dtmf.xml", again.sip_port, service="122", first="500", stay="500", digits="")
        assert r.ok, r.stdout + r.log
    finally:
        assert again.stop() == 0


def test_a_held_sip_port_is_named_with_its_holder(tmp_path: Path) -> None:
    # this test process holds the port, UDP and TCP, as a leftover front door would
    port = free_port()
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", port))
    listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", port))
    listening.listen()
    try:
        p = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "v"),
                            *serve_port_args(port, workers=1), "--api-port", "0"],
                           capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
        listening.close()
    line = p.stderr.strip()
    assert p.returncode == 2 and len(line.splitlines()) == 1, p.stderr
    assert f"already in use by pid {os.getpid()} (" in line, line


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_local_sockets_are_private_and_a_stranger_cannot_pose_as_a_worker(tmp_path: Path) -> None:
    n = start_node(tmp_path, workers=1, token=False)
    try:
        run = n.data_dir / "run"
        # a socket whose path is too long for sun_path lives in a short private dir instead
        control = unix_socket_path(run, "control.sock")
        rpc = unix_socket_path(run / "kamailio", "kamailio-rpc.sock")
        assert _mode(run) == 0o700 and _mode(control.parent) == 0o700 and _mode(control) == 0o600
        assert _mode(run / "kamailio") == 0o700 and _mode(rpc.parent) == 0o700 and _mode(rpc) == 0o600
        workers = n.worker_pids()

        # A local process (same uid, not spawned by the node) says hello as worker 0.
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(control))
        s.settimeout(10)
        hello = {"v": 1, "type": "hello", "worker_id": 0, "pid": os.getpid(), "sip_port": 1, "max_calls": 4,
                 "secret": "guess"}
        s.sendall((json.dumps(hello) + "\n").encode())
        assert s.recv(1024) == b""  # the node hung up on it
        s.close()
        n.wait_for(lambda: any(x.get("event") == "control_peer_refused" for x in n.logs()), timeout=10)
        # The real worker 0 is untouched and still takes calls.
        assert n.worker_pids() == workers
        r = run_sipp("uac_122_dtmf.xml", n.sip_port, service="122", first="500", stay="500", digits="")
        assert r.ok, r.stdout + r.log
    finally:
        assert n.stop() == 0
