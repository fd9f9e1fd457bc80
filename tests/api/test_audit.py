"""The audit log: every recording download, every seat-status change made by someone else."""

from __future__ import annotations

import time

import httpx

from tests.api.conftest import Node, add_recording


async def _audit(client: httpx.AsyncClient, node: Node, query: str = "") -> list[dict]:
    r = await client.get(f"/api/v1/audit{query}", headers=node.auth("supervisor"))
    assert r.status_code == 200, r.text
    return r.json()


async def test_every_recording_download_is_recorded(node: Node, client: httpx.AsyncClient) -> None:
    rid = f"rec-a-{int(time.time() * 1000)}"
    await add_recording(node.catalog, rid, "call-audit")
    t0 = time.time()
    sup = await node.token_store.resolve(node.tokens["supervisor"])
    assert sup is not None
    assert (await client.get(f"/api/v1/recordings/{rid}", headers=node.auth("supervisor"))).status_code == 200
    r = await client.get(f"/api/v1/recordings/{rid}", headers={**node.auth("admin"), "Range": "bytes=0-99"})
    assert r.status_code == 206
    # refused attempts download nothing and are not downloads
    assert (await client.get(f"/api/v1/recordings/{rid}", headers=node.auth("seat_s1"))).status_code == 403
    assert (await client.get("/api/v1/recordings/nope", headers=node.auth("supervisor"))).status_code == 404

    rows = await _audit(client, node, "?kind=recording.download")
    assert [(e["target"], e["actor"]["role"]) for e in rows] == [(rid, "admin"), (rid, "supervisor")]
    ranged, whole = rows
    assert ranged["detail"]["range"] == [0, 99] and whole["detail"]["bytes"] > 100
    assert whole["actor"]["token_id"] == sup.token_id and whole["actor"]["seat_id"] is None
    assert whole["source_ip"] == "127.0.0.1" and whole["node_id"] == "test-node"
    assert t0 <= whole["at"] <= ranged["at"] <= time.time()


async def test_status_changes_by_someone_else_are_recorded(node: Node, client: httpx.AsyncClient) -> None:
    # the seat's own changes are its work, not an audit matter
    r = await client.put("/api/v1/seats/s2/status", json={"status": "available"}, headers=node.auth("seat_s2"))
    assert r.status_code == 200
    assert await _audit(client, node, "?kind=seat.status") == []
    r = await client.put("/api/v1/seats/s2/status", json={"status": "not_ready", "reason": "meeting"},
                         headers=node.auth("supervisor"))
    assert r.status_code == 200
    r = await client.put("/api/v1/seats/s1/status", json={"status": "logged_out"}, headers=node.auth("admin"))
    assert r.status_code == 200
    # refused changes change nothing and are not recorded
    assert (await client.put("/api/v1/seats/s2/status", json={"status": "available"},
                             headers=node.auth("seat_s1"))).status_code == 403
    rows = await _audit(client, node, "?kind=seat.status")
    assert [(e["target"], e["actor"]["role"], e["detail"]["from"], e["detail"]["to"]) for e in rows] == [
        ("s1", "admin", "available", "logged_out"), ("s2", "supervisor", "available", "not_ready")]
    assert rows[1]["detail"]["reason"] == "meeting"
    # filters
    assert [e["target"] for e in await _audit(client, node, "?kind=seat.status&limit=1")] == ["s1"]
    assert [e["target"] for e in await _audit(client, node, "?target=s2")] == ["s2"]
    assert await _audit(client, node, f"?since={time.time() + 60}") == []
    assert len(await _audit(client, node, f"?since={time.time() - 60}")) == 2


async def test_only_supervisors_read_the_audit_log(node: Node, client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/audit", headers=node.auth("seat_s1"))).status_code == 403
    assert (await client.get("/api/v1/audit")).status_code == 401
    assert (await client.get("/api/v1/audit", headers=node.auth("admin"))).status_code == 200
    for bad in ("limit=0", "limit=5000", "since=x", "kind=DROP%20TABLE", "since=10&until=5"):
        r = await client.get(f"/api/v1/audit?{bad}", headers=node.auth("supervisor"))
        assert r.status_code == 422 and "detail" in r.json(), bad
