"""Callbacks hold callers' numbers and IVR answers: a seat sees only those of its skills.

The callbacks are made the way the ACD makes them: a caller who waited past ``callback_after_s``
(0 here) hangs up before a seat answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from routing.acd import SeatSpec
from routing.status import SeatStatus
from tests.api.conftest import SEATS, Node, start_node, stop_node

# s1: rescue + online_determination, s2: intake_guidance (takes callbacks), s3: insurance_claim
SEATS_3 = [*SEATS, SeatSpec(id="s3", contact="sip:s3@127.0.0.1:5093", skills={"insurance_claim": 0}, name="理赔 1",
                            status=SeatStatus.LOGGED_OUT)]


@pytest.fixture
async def cb_node(db_url: str, tmp_path: Path) -> AsyncIterator[Node]:
    n = await start_node(db_url, tmp_path, SEATS_3, callback_after_s=0.0)
    n.tokens["seat_s3"] = await n.token_store.create("seat", "s3")
    try:
        yield n
    finally:
        await stop_node(n)


async def _abandon(node: Node, call_id: str, skill: str, caller: str) -> None:
    await node.routing.enqueue(call_id, skill, 3, caller=caller, info={"answers": [{"node": "welcome", "key": "1"}]})
    await node.routing.caller_abandoned(call_id)


async def _listed(client: httpx.AsyncClient, node: Node, who: str) -> list[str]:
    r = await client.get("/api/v1/callbacks", headers=node.auth(who))
    assert r.status_code == 200, r.text
    return [e["call_id"] for e in r.json()]


async def test_a_seat_lists_only_callbacks_of_its_skills(cb_node: Node) -> None:
    node = cb_node
    await _abandon(node, "c-rescue", "rescue", "13800000001")
    await _abandon(node, "c-video", "video_patrol", "13800000002")
    await _abandon(node, "c-claim", "insurance_claim", "13800000003")
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        assert await _listed(client, node, "supervisor") == ["c-rescue", "c-video", "c-claim"]
        assert await _listed(client, node, "admin") == ["c-rescue", "c-video", "c-claim"]
        assert await _listed(client, node, "seat_s1") == ["c-rescue"]
        assert await _listed(client, node, "seat_s3") == ["c-claim"]
        assert await _listed(client, node, "seat_s2") == ["c-rescue", "c-video", "c-claim"]  # the intake seat
        # s2 takes the oldest: it stays visible to s2 (its own), and no longer to s1 (not pending)
        await client.put("/api/v1/seats/s2/status", json={"status": "available"}, headers=node.auth("seat_s2"))
        r = await client.post("/api/v1/callbacks/take", headers=node.auth("seat_s2"))
        assert r.status_code == 200 and r.json()["call_id"] == "c-rescue" and r.json()["seat_id"] == "s2"
        assert await _listed(client, node, "seat_s1") == []
        assert await _listed(client, node, "seat_s2") == ["c-rescue", "c-video", "c-claim"]
        # another seat cannot complete it
        r = await client.post(f"/api/v1/callbacks/{r.json()['callback_id']}/complete", headers=node.auth("seat_s1"))
        assert r.status_code == 403 and "detail" in r.json()


async def test_a_seat_that_no_longer_exists_sees_nothing(cb_node: Node) -> None:
    node = cb_node
    await _abandon(node, "c-claim2", "insurance_claim", "13800000009")
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        assert await _listed(client, node, "seat_s3") == ["c-claim2"]
        assert (await client.delete("/api/v1/admin/seats/s3", headers=node.auth("admin"))).status_code == 204
        assert await _listed(client, node, "seat_s3") == []
