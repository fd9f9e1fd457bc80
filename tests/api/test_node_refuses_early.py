"""Against a real ``handoff122 serve``: the node's API refuses early, and the node's own memory
(its process's peak RSS, read from /proc) does not grow by what an attacker sends.

The tokens come from ``handoff122 token create`` as an operator makes them, and
``handoff122 token list`` then shows when each was last used.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.test_flow_upload import BILLION_LAUGHS
from tests.node_harness import RunningNode, start_node

MB = 1024 * 1024


@pytest.fixture
def served(tmp_path: Path) -> Iterator[RunningNode]:
    node = start_node(tmp_path, workers=1)
    try:
        yield node
    finally:
        node.stop()


def _token(node: RunningNode, role: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", role,
                          "--data-dir", str(node.data_dir)], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


async def _declare_huge(port: int) -> int:
    """Announce a 1 GB body and send none of it: the answer must not wait for it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"PUT /api/v1/seats/s1/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        return int(head.split()[1])
    finally:
        writer.close()


async def _stream_chunked(port: int, method: str, path: str, total: int, token: str | None = None) -> tuple[int, int]:
    """Send ``total`` bytes chunked; returns (status, bytes sent before the answer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    chunk = b"y" * (256 * 1024)
    sent = 0
    try:
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        answer = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
        try:
            while sent < total and not answer.done():
                writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0)
                sent += len(chunk)
        except ConnectionError:
            pass
        async with asyncio.timeout(10):
            head = await answer
        return int(head.split()[1]), sent
    finally:
        writer.close()


async def _flow_and_queues(port: int, admin: str, supervisor: str) -> tuple[httpx.Response, float, httpx.Response, float]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
        async def timed(coro):  # type: ignore[no-untyped-def]
            t0 = time.monotonic()
            r = await coro
            return r, time.monotonic() - t0

        up, queues = await asyncio.gather(
            timed(c.put("/api/v1/admin/flow", content=BILLION_LAUGHS.encode(),
                        headers={"Authorization": f"Bearer {admin}", "Content-Type": "application/yaml"})),
            timed(c.get("/api/v1/queues", headers={"Authorization": f"Bearer {supervisor}"})))
        return up[0], up[1], queues[0], queues[1]


def test_the_node_refuses_early_and_keeps_its_memory(served: RunningNode) -> None:
    node = served
    pid = int((node.data_dir / "run" / "control.pid").read_text())  # the control process (node.proc: its supervisor)
    # 1. a huge declared body, no token: 413 at once
    t0 = time.monotonic()
    assert asyncio.run(_declare_huge(node.api_port)) == 413
    assert time.monotonic() - t0 < 2.0
    # 2. 256 MB streamed, chunked: at a JSON route without a token (FastAPI reads a JSON body before
    #    it authenticates), and at the flow upload (the largest limit) with an admin token
    admin, supervisor = _token(node, "admin"), _token(node, "supervisor")
    for method, path, token in (("POST", "/api/v1/admin/seats", None), ("PUT", "/api/v1/admin/flow", admin)):
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        before = _peak_rss(pid)
        status, sent = asyncio.run(_stream_chunked(node.api_port, method, path, 256 * MB, token))
        grown = _peak_rss(pid) - before
        print(f"\nnode pid {pid}, {path}: {sent / MB:.1f} MB of 256 MB streamed before {status}; "
              f"peak RSS grew {grown / MB:.1f} MB")
        assert status == 413
        assert sent < 64 * MB and grown < 16 * MB
    # 3. a billion laughs, with an admin token: refused at once while the queues answer
    up, took, queues, q_took = asyncio.run(_flow_and_queues(node.api_port, admin, supervisor))
    print(f"billion laughs: {up.status_code} in {took * 1000:.0f} ms; queues {queues.status_code} "
          f"in {q_took * 1000:.0f} ms")
    assert up.status_code == 422 and "alias" in json.dumps(up.json()) and took < 1.0
    assert queues.status_code == 200 and q_took < 1.0
    # 4. the operator sees both tokens and their last use, never a secret
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "list", "--json", "--data-dir",
                          str(node.data_dir)], capture_output=True, text=True, check=True, timeout=60)
    rows = {r["role"]: r for r in json.loads(out.stdout)}
    assert rows["admin"]["last_used_at"] is not None and rows["supervisor"]["last_used_at"] is not None
    assert admin not in out.stdout and supervisor not in out.stdout


def test_a_token_made_before_the_first_serve_works(tmp_path: Path) -> None:
    """``token create`` on a fresh data dir migrates the whole schema, so ``serve`` starts on it."""
    data = tmp_path / "var"
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "supervisor",
                          "--ttl", "1", "--data-dir", str(data)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    node = start_node(tmp_path, workers=1, token=False)
    try:
        node.token = out.stdout.strip()
        r = node.get("/api/v1/queues")
        assert r.status_code == 200, r.text
    finally:
        node.stop()
