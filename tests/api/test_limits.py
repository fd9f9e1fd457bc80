"""Body size limits: refused before authentication, on ``Content-Length`` and while streaming.

The attacker here is a raw TCP client, because that is what an attacker is: it declares a huge
body, or streams one chunked, and never authenticates.  The API runs in this test's process (as
it runs in the node's), so the process's peak RSS is the node's memory.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from api.limits import ApiLimits
from tests.api.conftest import Node

MB = 1024 * 1024


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> None:
    """Linux: make VmHWM (peak RSS) start again from the current RSS."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    return _kib("VmHWM") * 1024


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


def _host_port(node: Node) -> tuple[str, int]:
    host, port = node.url.removeprefix("http://").split(":")
    return host, int(port)


async def test_a_declared_oversized_body_is_413_before_authentication(node: Node) -> None:
    """1 GB announced, nothing sent, no token: the answer is 413 at once (nothing waited for the body)."""
    reader, writer = await asyncio.open_connection(*_host_port(node))
    try:
        writer.write(b"PUT /api/v1/seats/s1/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
        await writer.drain()
        started = time.monotonic()
        async with asyncio.timeout(5):
            status, headers, body = await _read_response(reader)
        assert status == 413, (status, body)
        assert "detail" in json.loads(body) and headers["connection"] == "close"
        assert time.monotonic() - started < 1.0
    finally:
        writer.close()


async def test_a_streamed_oversized_body_is_refused_and_memory_does_not_grow(node: Node) -> None:
    """128 MB chunked at an admin route without a token: refused after the limit; the peak RSS of
    the process that runs the API grows by far less than the body."""
    total = 128 * MB
    chunk = b"x" * (256 * 1024)
    reader, writer = await asyncio.open_connection(*_host_port(node))
    reset_peak_rss()
    before = peak_rss_bytes()
    sent = 0
    try:
        writer.write(b"POST /api/v1/admin/seats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        answer = asyncio.create_task(_read_response(reader))
        try:
            while sent < total and not answer.done():
                writer.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0)  # let the reader see an answer, as a client reading concurrently does
                sent += len(chunk)
        except ConnectionError:
            pass  # the server closed after refusing: that is the point
        async with asyncio.timeout(5):
            status, headers, body = await answer
        assert headers["connection"] == "close"
    finally:
        writer.close()
    grown = peak_rss_bytes() - before
    print(f"\nstreamed {sent / MB:.1f} MB of a {total / MB:.0f} MB body before the 413; "
          f"peak RSS grew {grown / MB:.1f} MB")
    assert status == 413, (status, body)
    assert "detail" in json.loads(body)
    assert sent < 32 * MB
    assert grown < 16 * MB


async def test_flow_uploads_have_their_own_larger_limit(node: Node, client: httpx.AsyncClient) -> None:
    limits = ApiLimits()
    h = {**node.auth("admin"), "Content-Type": "application/yaml"}
    # over the general limit, under the flow limit: read and judged (a YAML comment is a valid document)
    padding = b"# " + b"x" * (limits.max_body_bytes * 2) + b"\n"
    r = await client.put("/api/v1/admin/flow", content=padding + b"name: x\n", headers=h)
    assert r.status_code == 422, r.text
    r = await client.put("/api/v1/admin/flow", content=b"#" * (limits.max_flow_bytes + 1), headers=h)
    assert r.status_code == 413 and "detail" in r.json()
    # the same size anywhere else is refused
    r = await client.post("/api/v1/admin/seats", content=padding, headers=node.auth("admin"))
    assert r.status_code == 413 and "detail" in r.json()


async def test_a_small_body_still_works_after_a_refusal(node: Node, client: httpx.AsyncClient) -> None:
    r = await client.put("/api/v1/seats/s2/status", content=b'{"status":"available"}' + b" " * (70 * 1024),
                         headers={**node.auth("seat_s2"), "Content-Type": "application/json"})
    assert r.status_code == 413
    r = await client.put("/api/v1/seats/s2/status", json={"status": "available"}, headers=node.auth("seat_s2"))
    assert r.status_code == 200 and r.json()["status"] == "available"
