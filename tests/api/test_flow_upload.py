"""Flow uploads are untrusted: aliases refused, read off the control loop, within a time limit.

"Meanwhile" is checked with a real concurrent request: ``/api/v1/queues`` reads the ACD on the
control loop (this test's loop), so it can only answer while an upload is being judged if that
loop is free.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.api.conftest import Node

BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]',
        *(f"{c}: &{c} [{','.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
        "name: laughs", "start: i",
    ]
) + "\n"


async def _timed(coro) -> tuple[httpx.Response, float]:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    r = await coro
    return r, time.monotonic() - t0


async def _upload_while_reading_queues(node: Node, client: httpx.AsyncClient, body: bytes):  # type: ignore[no-untyped-def]
    h = {**node.auth("admin"), "Content-Type": "application/yaml"}
    upload = asyncio.create_task(_timed(client.put("/api/v1/admin/flow", content=body, headers=h)))
    queues = asyncio.create_task(_timed(client.get("/api/v1/queues", headers=node.auth("supervisor"))))
    return await upload, await queues


async def test_nested_aliases_are_refused_at_once_while_the_api_answers(node: Node, client: httpx.AsyncClient) -> None:
    assert len(BILLION_LAUGHS) < 600
    (r, took), (q, q_took) = await _upload_while_reading_queues(node, client, BILLION_LAUGHS.encode())
    print(f"\nbillion laughs refused in {took * 1000:.0f} ms; /api/v1/queues answered in {q_took * 1000:.0f} ms")
    assert r.status_code == 422, r.text
    problem = r.json()["detail"][0]
    assert "alias" in problem["message"] and problem["location"].startswith("line 1")
    # the refusal is an alias check, milliseconds; the bound only has to catch a parse that expands
    # the aliases (hours), with room for a loaded CI machine
    assert took < 2.0
    assert q.status_code == 200 and len(q.json()) == 8 and q_took < 2.0
    assert node.installed == []


async def test_an_anchor_alone_is_refused_too(node: Node, client: httpx.AsyncClient) -> None:
    h = {**node.auth("admin"), "Content-Type": "application/yaml"}
    good = node.flow_path.read_text(encoding="utf-8")
    anchored = good.replace("start: welcome", "start: &s welcome", 1)
    assert anchored != good
    r = await client.put("/api/v1/admin/flow", content=anchored.encode(), headers=h)
    assert r.status_code == 422 and "anchors" in r.json()["detail"][0]["message"]
    assert node.installed == []


async def test_a_slow_upload_is_refused_after_the_time_limit_and_the_loop_stays_free(
        node: Node, client: httpx.AsyncClient) -> None:
    node.ctx.flow_admin.parse_timeout_s = 0.05  # type: ignore[union-attr]
    # ~900 kB of plain keys: legal YAML, and far more than 50 ms of reading
    body = "".join(f"k{i:06d}: value {i}\n" for i in range(50_000)).encode()
    (r, took), (q, q_took) = await _upload_while_reading_queues(node, client, body)
    print(f"\n{len(body) // 1024} kB refused after {took * 1000:.0f} ms; queues answered in {q_took * 1000:.0f} ms")
    assert r.status_code == 422, r.text
    assert "longer than" in r.json()["detail"][0]["message"]
    # "longer than" proves the time limit ended it; the queues answered while it was being read
    assert q.status_code == 200 and q_took < 5.0
    assert node.installed == []


async def test_hostile_shapes_get_a_reason_never_a_500(node: Node, client: httpx.AsyncClient) -> None:
    h = {**node.auth("admin"), "Content-Type": "application/yaml"}
    for body in (b"[" * 50_000, b"{a: " * 20_000, b"!!python/object:os.system {}", b"- 1\n- 2\n", b"\xff\xfe",
                 b"", b"name: x\n" * 3):
        r = await client.put("/api/v1/admin/flow", content=body, headers=h)
        assert r.status_code == 422, (body[:20], r.status_code, r.text)
        detail = r.json()["detail"]
        assert detail and all(p.get("message") for p in detail), detail
    assert node.installed == []
    # and a good flow still installs afterwards
    good = node.flow_path.read_text(encoding="utf-8")
    r = await client.put("/api/v1/admin/flow", content=good.encode(), headers=h)
    assert r.status_code == 200 and len(node.installed) == 1
