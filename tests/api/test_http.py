"""The HTTP API over real HTTP: roles, errors, seats, queues, calls, recordings, admin, metrics."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.conftest import Node, add_recording

# (method, path, who may): "supervisor" = supervisor and admin; "admin" = admin only; "any" = every token.
ENDPOINTS = [
    ("GET", "/api/v1/queues", "supervisor"),
    ("GET", "/api/v1/seats", "supervisor"),
    ("GET", "/api/v1/calls", "supervisor"),
    ("GET", "/api/v1/calls/nope", "supervisor"),
    ("GET", "/api/v1/recordings/nope", "supervisor"),
    ("GET", "/api/v1/audit", "supervisor"),
    ("GET", "/api/v1/admin/seats", "admin"),
    ("GET", "/api/v1/admin/skills", "admin"),
    ("GET", "/api/v1/admin/tokens", "admin"),
    ("GET", "/api/v1/seats/s1", "s1"),
    ("GET", "/api/v1/callbacks", "any"),
    ("GET", "/api/v1/me", "any"),
]


def _allowed(rule: str, who: str) -> bool:
    if rule == "any":
        return True
    if rule == "admin":
        return who == "admin"
    if rule == "supervisor":
        return who in ("admin", "supervisor")
    return who in ("admin", "supervisor", f"seat_{rule}")


async def test_every_role_on_every_endpoint(node: Node, client: httpx.AsyncClient) -> None:
    for method, path, rule in ENDPOINTS:
        for who in ("nobody", "bad", "seat_s1", "seat_s2", "supervisor", "admin"):
            r = await client.request(method, path, headers=node.auth(who))
            assert r.headers["content-type"].startswith("application/json"), (path, who)
            if who in ("nobody", "bad"):
                assert r.status_code == 401, (path, who, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
            elif not _allowed(rule, who):
                assert r.status_code == 403, (path, who, r.text)
            else:
                assert r.status_code in (200, 404), (path, who, r.text)
                if "nope" in path:
                    assert r.status_code == 404
            assert "detail" in r.json() or r.status_code == 200


async def test_health_and_docs_need_no_token(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/docs")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "/api/v1/seats/{seat_id}/status" in schema["paths"]


async def test_me_tells_role_and_seat(node: Node, client: httpx.AsyncClient) -> None:
    r = await client.get("/api/v1/me", headers=node.auth("seat_s1"))
    assert r.json() == {"role": "seat", "seat_id": "s1", "node_id": "test-node"}


async def test_seat_sets_its_own_status(node: Node, client: httpx.AsyncClient) -> None:
    h = node.auth("seat_s2")
    r = await client.put("/api/v1/seats/s2/status", json={"status": "available", "reason": None}, headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "available" and r.json()["id"] == "s2"
    r = await client.put("/api/v1/seats/s2/status", json={"status": "not_ready", "reason": "break"}, headers=h)
    assert r.json()["status"] == "not_ready" and r.json()["reason"] == "break"
    seats = (await client.get("/api/v1/seats", headers=node.auth("supervisor"))).json()
    assert {s["id"]: s["status"] for s in seats} == {"s1": "available", "s2": "not_ready"}
    # another seat's token may not touch it; a supervisor may
    r = await client.put("/api/v1/seats/s2/status", json={"status": "available"}, headers=node.auth("seat_s1"))
    assert r.status_code == 403
    r = await client.put("/api/v1/seats/s2/status", json={"status": "logged_out"}, headers=node.auth("supervisor"))
    assert r.status_code == 200 and r.json()["status"] == "logged_out"


@pytest.mark.parametrize("body", [
    {"status": "on_call"}, {"status": "reserved"}, {"status": "wrap_up"}, {"status": "sleeping"},
    {}, {"status": "available", "extra": 1}, {"status": "not_ready", "reason": "x" * 201}, [1, 2],
])
async def test_bad_status_bodies_are_422(node: Node, client: httpx.AsyncClient, body: object) -> None:
    r = await client.put("/api/v1/seats/s1/status", json=body, headers=node.auth("supervisor"))
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], list)


async def test_unknown_seat_is_404_and_illegal_transitions_409(node: Node, client: httpx.AsyncClient) -> None:
    h = node.auth("supervisor")
    r = await client.put("/api/v1/seats/nobody/status", json={"status": "available"}, headers=h)
    assert r.status_code == 404 and "nobody" in r.json()["detail"]
    assert (await client.post("/api/v1/seats/nobody/wrap-up/end", headers=h)).status_code == 404
    # not in wrap-up
    r = await client.post("/api/v1/seats/s1/wrap-up/end", headers=h)
    assert r.status_code == 409, r.text
    # ringing: a person cannot change a reserved seat's status
    await node.routing.enqueue("c-ring", "rescue", 2, caller="13800000000", info={"answers": []})
    seat = (await client.get("/api/v1/seats/s1", headers=h)).json()
    assert seat["status"] == "reserved" and seat["call_id"] == "c-ring"
    r = await client.put("/api/v1/seats/s1/status", json={"status": "not_ready", "reason": "x"}, headers=h)
    assert r.status_code == 409, r.text
    r = await client.put("/api/v1/seats/Bad!/status", json={"status": "available"}, headers=h)
    assert r.status_code == 422


async def test_queues_show_waiting_calls_and_seats(node: Node, client: httpx.AsyncClient) -> None:
    h = node.auth("supervisor")
    await node.routing.enqueue("c-q1", "intake_guidance", 3, caller="139", info={})
    await node.routing.enqueue("c-q2", "intake_guidance", 3, caller="138", info={})
    queues = {q["skill"]: q for q in (await client.get("/api/v1/queues", headers=h)).json()}
    assert len(queues) == 8
    intake = queues["intake_guidance"]
    assert intake["waiting"] == 2 and intake["offered"] == 2 and intake["label_zh"] == "接警引导"
    assert intake["seats_by_status"]["logged_out"] == 1
    assert queues["rescue"]["seats_by_status"]["available"] == 1
    ranged = {q["skill"]: q for q in (await client.get(f"/api/v1/queues?since={time.time() - 3600}",
                                                        headers=h)).json()}
    assert ranged["intake_guidance"]["offered"] == 2 and ranged["intake_guidance"]["waiting"] == 2
    future = {q["skill"]: q for q in (await client.get(f"/api/v1/queues?since={time.time() + 7200}",
                                                        headers=h)).json()}
    assert future["intake_guidance"]["offered"] == 0
    r = await client.get("/api/v1/queues?since=10&until=5", headers=h)
    assert r.status_code == 422
    assert (await client.get("/api/v1/queues?since=abc", headers=h)).status_code == 422


async def test_calls_newest_first_with_filters(node: Node, client: httpx.AsyncClient) -> None:
    h = node.auth("supervisor")
    base = time.time() - 100
    tag = f"{int(base * 1000) % 10**9}"
    for i, (skill, seat) in enumerate([("rescue", "s1"), ("intake_guidance", "s2"), ("rescue", None)]):
        await node.calls.upsert_call(f"call-{tag}-{i}", caller=f"1380{tag}", started_at=base + i, skill=skill,
                                     seat_id=seat, ivr={"answers": [{"node": "welcome", "key": "1"}],
                                                        "skill": skill, "priority": 2})
    r = await client.get(f"/api/v1/calls?caller=1380{tag}", headers=h)
    ids = [c["id"] for c in r.json()]
    assert ids == [f"call-{tag}-2", f"call-{tag}-1", f"call-{tag}-0"]
    r = await client.get(f"/api/v1/calls?caller=1380{tag}&skill=rescue&limit=1", headers=h)
    assert [c["id"] for c in r.json()] == [f"call-{tag}-2"]
    r = await client.get(f"/api/v1/calls?caller=1380{tag}&seat_id=s2", headers=h)
    assert [c["id"] for c in r.json()] == [f"call-{tag}-1"]
    one = (await client.get(f"/api/v1/calls/call-{tag}-0", headers=h)).json()
    assert one["ivr"]["answers"] == [{"node": "welcome", "key": "1"}] and one["events"] == []
    assert (await client.get("/api/v1/calls/does-not-exist", headers=h)).status_code == 404
    for bad in ("limit=0", "limit=100000", "since=x", "before=-1"):
        assert (await client.get(f"/api/v1/calls?{bad}", headers=h)).status_code == 422, bad


async def test_recording_download_with_ranges(node: Node, client: httpx.AsyncClient) -> None:
    rid = f"rec-{int(time.time() * 1000)}"
    path = await add_recording(node.catalog, rid, "call-rec")
    data = path.read_bytes()
    url = f"/api/v1/recordings/{rid}"
    h = node.auth("supervisor")
    r = await client.get(url, headers=h)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav" and r.content == data
    assert r.headers["accept-ranges"] == "bytes"
    r = await client.get(url, headers={**h, "Range": "bytes=0-99"})
    assert r.status_code == 206 and r.content == data[:100]
    assert r.headers["content-range"] == f"bytes 0-99/{len(data)}"
    r = await client.get(url, headers={**h, "Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = await client.get(url, headers={**h, "Range": f"bytes={len(data) - 5}-"})
    assert r.status_code == 206 and r.content == data[-5:]
    r = await client.get(url, headers={**h, "Range": f"bytes={len(data) + 10}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = await client.get(url, headers={**h, "Range": "bytes=0-1,5-9"})  # multi-range: the whole file
    assert r.status_code == 200 and r.content == data
    assert (await client.get(url, headers=node.auth("seat_s1"))).status_code == 403
    assert (await client.get(url)).status_code == 401


async def test_admin_manages_seats(node: Node, client: httpx.AsyncClient) -> None:
    h = node.auth("admin")
    new = {"id": "s9", "name": "理赔 9", "contact": "sip:s9@127.0.0.1:5099", "skills": ["insurance_claim"],
           "status": "available"}
    r = await client.post("/api/v1/admin/seats", json=new, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "available" and r.json()["skills"] == {"insurance_claim": 0}
    assert (await client.post("/api/v1/admin/seats", json=new, headers=h)).status_code == 409
    for bad in ({**new, "id": "S 9"}, {**new, "skills": ["flying"]}, {**new, "contact": "http://x"},
                {**new, "skills": []}, {**new, "status": "on_call"}):
        r = await client.post("/api/v1/admin/seats", json={**bad, "id": bad["id"] + "x" if bad["id"] == "s9" else bad["id"]},
                              headers=h)
        assert r.status_code == 422, (bad, r.text)
    r = await client.put("/api/v1/admin/seats/s9", json={"name": "理赔 9", "contact": "sip:s9@127.0.0.1:5098",
                                                         "skills": {"insurance_claim": 0, "rescue": 2}}, headers=h)
    assert r.status_code == 200 and r.json()["skills"] == {"insurance_claim": 0, "rescue": 2}
    assert r.json()["contact"] == "sip:s9@127.0.0.1:5098"
    assert (await client.put("/api/v1/admin/seats/zz", json={"contact": "sip:a@b", "skills": ["rescue"]},
                             headers=h)).status_code == 404
    assert (await client.delete("/api/v1/admin/seats/s9", headers=h)).status_code == 204
    assert (await client.delete("/api/v1/admin/seats/s9", headers=h)).status_code == 404
    assert (await client.post("/api/v1/admin/seats", json=new, headers=node.auth("supervisor"))).status_code == 403


async def test_admin_installs_a_flow_or_gets_located_problems(node: Node, client: httpx.AsyncClient) -> None:
    h = {**node.auth("admin"), "Content-Type": "application/yaml"}
    good = node.flow_path.read_text(encoding="utf-8")
    r = await client.put("/api/v1/admin/flow", content=good.encode(), headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "installed"} and len(node.installed) == 1
    broken = good.replace("start: welcome", "start: nowhere")
    assert broken != good
    r = await client.put("/api/v1/admin/flow", content=broken.encode(), headers=h)
    assert r.status_code == 422
    problems = r.json()["detail"]
    assert problems and all(set(p) == {"location", "message"} for p in problems)
    assert any("nowhere" in p["message"] or "start" in p["location"] for p in problems)
    r = await client.put("/api/v1/admin/flow", content=b"a: [unclosed", headers=h)
    assert r.status_code == 422 and "line" in r.json()["detail"][0]["location"]
    assert len(node.installed) == 1
    assert node.flow_path.read_text(encoding="utf-8") == good


async def test_admin_tokens(node: Node, client: httpx.AsyncClient) -> None:
    h = node.auth("admin")
    r = await client.post("/api/v1/admin/tokens", json={"role": "seat", "seat_id": "s1", "label": "t"}, headers=h)
    assert r.status_code == 201
    token, token_id = r.json()["token"], r.json()["id"]
    assert (await client.get("/api/v1/seats/s1", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    assert (await client.post("/api/v1/admin/tokens", json={"role": "seat"}, headers=h)).status_code == 422
    assert (await client.delete(f"/api/v1/admin/tokens/{token_id}", headers=h)).status_code == 204
    assert (await client.get("/api/v1/seats/s1", headers={"Authorization": f"Bearer {token}"})).status_code == 401
    listed = (await client.get("/api/v1/admin/tokens", headers=h)).json()
    assert all("token_sha256" not in t for t in listed)


async def test_metrics_read_the_acd_and_the_gateway(node: Node, client: httpx.AsyncClient) -> None:
    """The realtime half of /metrics; the counters real calls produce are read in
    tests/gateway/test_metrics.py, after real SIP calls."""
    await node.routing.enqueue("c-m1", "video_patrol", 3, caller="1", info={})
    text = (await client.get("/metrics")).text
    assert 'handoff122_queue_waiting{skill="video_patrol"} 1.0' in text
    assert 'handoff122_seats{status="available"} 1.0' in text
    assert 'handoff122_calls{state="waiting"} 1.0' in text
    assert "handoff122_gateway_workers_alive 2.0" in text
    assert 'handoff122_node_info{node_id="test-node"} 1.0' in text
