"""The API in its own process under ``handoff122 serve``: real node, real callers and seat phones.

- the API process is not the control process, and killing it ends no call: a call in progress
  completes and the node starts the API again;
- a WebSocket client that stops reading delays neither another client's events nor SIP;
- a client that renders from ``SNAPSHOT`` plus deltas ends up with what REST says.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import free_port
from tests.node_harness import RunningNode, caller_result, start_caller, start_node, start_seat

pytestmark = [pytest.mark.sip]

#: "0" in the default flow: the caller asks for a person (intake guidance).
TO_A_PERSON = "0"
FLIPS = 300
REASON = "会议" * 90


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningNode]:
    tmp = tmp_path_factory.mktemp("api-process")
    p1, p3 = free_port(), free_port()
    seats = ("seats:\n"
             f"  - {{id: s1, contact: 'sip:s1@127.0.0.1:{p1}', skills: [intake_guidance], status: available}}\n"
             f"  - {{id: s3, contact: 'sip:s3@127.0.0.1:{p3}', skills: [intake_guidance], status: available}}\n"
             "  - {id: s2, contact: 'sip:s2@127.0.0.1:9', skills: [video_patrol], status: logged_out}\n"
             "queues:\n  intake_guidance: {wrap_up_s: 1}\n")
    n = start_node(tmp, workers=2, seats_yaml=seats, env={"HANDOFF_API_WS_QUEUE": "16"})
    try:
        start_seat(n, "s1", p1, "--answer-after", "0.3")
        start_seat(n, "s3", p3, "--answer-after", "0.3")
        yield n
    finally:
        n.stop()


def api_pid(node: RunningNode) -> int:
    return int((node.data_dir / "run" / "api.pid").read_text())


def ws_url(node: RunningNode) -> str:
    return f"ws://127.0.0.1:{node.api_port}/api/v1/events"


class Board:
    """What a page keeps: the last SNAPSHOT with the SEATS/QUEUES deltas applied."""

    def __init__(self) -> None:
        self.seats: dict[str, dict[str, Any]] = {}
        self.queues: dict[str, dict[str, Any]] = {}
        self.kinds: list[str] = []
        self.delays: list[float] = []

    def apply(self, msg: dict[str, Any], received: float) -> None:
        kind = msg["kind"]
        self.kinds.append(kind)
        if kind == "SNAPSHOT":
            self.seats = {s["id"]: s for s in msg["seats"]}
            self.queues = {q["skill"]: q for q in msg["queues"]}
        elif kind == "SEATS":
            self.seats.update({s["id"]: s for s in msg["rows"]})
            for sid in msg["removed"]:
                self.seats.pop(sid, None)
        elif kind == "QUEUES":
            self.queues.update({q["skill"]: q for q in msg["rows"]})
        elif kind not in ("HELLO", "RESYNC"):
            self.delays.append(received - float(msg["at"]))


async def follow(node: RunningNode, board: Board, stop: asyncio.Event) -> None:
    async with websockets.connect(ws_url(node)) as ws:
        await ws.send(json.dumps({"type": "auth", "token": node.token}))
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.2)
            except TimeoutError:
                continue
            board.apply(json.loads(raw), time.time())


def steady(rows: dict[str, dict[str, Any]], drop: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    return {k: {f: v for f, v in r.items() if f not in drop} for k, r in rows.items()}


CLOSE_TOO_SLOW = (4408).to_bytes(2, "big")


def stalled_client(node: RunningNode) -> socket.socket:
    """A WebSocket client by hand (so that no library reads on its behalf): upgrade, send the auth
    message, then leave everything the server sends in a tiny receive buffer."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    sock.connect(("127.0.0.1", node.api_port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1:{node.api_port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "auth", "token": node.token}).encode()
    mask = os.urandom(4)
    assert len(payload) < 126
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


def read_all(sock: socket.socket, quiet_s: float = 2.0) -> bytes:
    """Everything the server sent, until it is quiet for ``quiet_s`` or closes."""
    sock.settimeout(quiet_s)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except TimeoutError:
        pass
    finally:
        sock.close()
    return out


def seats_idle(node: RunningNode) -> bool:
    return all(s["status"] in ("available", "logged_out") for s in node.get("/api/v1/seats").json())


async def test_a_snapshot_and_delta_client_converges_to_the_rest_view(node: RunningNode) -> None:
    board, stop = Board(), asyncio.Event()
    watcher = asyncio.create_task(follow(node, board, stop))
    callers = [start_caller(node, TO_A_PERSON, stay="3") for _ in range(2)]
    results = await asyncio.gather(*(asyncio.to_thread(caller_result, c) for c in callers))
    assert all(r["answered"] and r["bridged"] for r in results), results
    await asyncio.to_thread(node.wait_for, lambda: seats_idle(node), 30)

    def converged() -> bool:
        rest_seats = {s["id"]: s for s in node.get("/api/v1/seats").json()}
        rest_queues = {q["skill"]: q for q in node.get("/api/v1/queues").json()}
        return (steady(board.seats, ("idle_s",)) == steady(rest_seats, ("idle_s",))
                and steady(board.queues, ("label_zh",)) == steady(rest_queues, ("label_zh",)))

    try:
        await asyncio.to_thread(node.wait_for, converged, 15)
    finally:
        stop.set()
        await watcher
    assert board.kinds[:2] == ["HELLO", "SNAPSHOT"]
    assert "SEATS" in board.kinds and "QUEUES" in board.kinds and "CONNECT" in board.kinds
    assert board.seats["s1"]["calls_taken"] + board.seats["s3"]["calls_taken"] >= 2


async def test_a_slow_websocket_client_delays_neither_another_client_nor_sip(node: RunningNode) -> None:
    # The slow client: a browser tab that authenticates, then never reads its socket again.
    slow = await asyncio.to_thread(stalled_client, node)
    board, stop = Board(), asyncio.Event()
    watcher = asyncio.create_task(follow(node, board, stop))
    await asyncio.to_thread(node.wait_for, lambda: "SNAPSHOT" in board.kinds, 10)
    caller = start_caller(node, TO_A_PERSON, stay="3")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{node.api_port}", timeout=10,
                                 headers={"Authorization": f"Bearer {node.token}"}) as http:
        for i in range(FLIPS):
            status = "not_ready" if i % 2 == 0 else "logged_out"
            r = await http.put("/api/v1/seats/s2/status", json={"status": status, "reason": REASON})
            assert r.status_code == 200, r.text
    result = await asyncio.to_thread(caller_result, caller)
    await asyncio.to_thread(node.wait_for, lambda: board.kinds.count("SEATSTATUS") >= FLIPS, 20)
    stop.set()
    await watcher
    # the reading client got every change, promptly, while the other one sat on its socket
    assert result["answered"] and result["bridged"], result
    delays = sorted(board.delays)
    p99 = delays[int(0.99 * (len(delays) - 1))]
    assert "RESYNC" not in board.kinds
    assert p99 < 0.5, (p99, statistics.median(delays))
    # the slow one fell behind: resynced (RESYNC, then a fresh SNAPSHOT) or closed for it
    seen = await asyncio.to_thread(read_all, slow)
    assert b'"kind":"RESYNC"' in seen or CLOSE_TOO_SLOW in seen, seen[-300:]


async def test_killing_the_api_process_ends_no_call_and_it_comes_back(node: RunningNode) -> None:
    first = api_pid(node)
    assert first != node.proc.pid
    assert b"gateway.api_process" in Path(f"/proc/{first}/cmdline").read_bytes()
    caller = start_caller(node, TO_A_PERSON, stay="6")
    await asyncio.to_thread(node.wait_for, lambda: any(s["status"] == "on_call"
                                                       for s in node.get("/api/v1/seats").json()), 30)
    os.kill(first, signal.SIGKILL)
    result = await asyncio.to_thread(caller_result, caller)
    assert result["answered"] and result["bridged"] and result["hung_up_by"] == "caller", result
    assert result["duration_s"] >= 5.5, result
    await asyncio.to_thread(node.wait_for, lambda: api_pid(node) != first and node.get("/healthz").status_code == 200,
                            30)
    calls = await asyncio.to_thread(node.wait_for, lambda: [c for c in node.calls(5) if c["end_reason"]], 20)
    assert calls[0]["end_reason"] == "completed" and calls[0]["seat_id"] in ("s1", "s3"), calls[0]
    assert node.proc.poll() is None
    assert any(x.get("event") == "api_process_restarted" for x in node.logs())
