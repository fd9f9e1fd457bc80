"""The dashboard's listen button over a real call: the supervisor's phone rings and hears the call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser import ARTIFACTS, chromium_page
from tests.conftest import free_port
from tests.node_harness import seat_reports, start_caller, start_node, start_seat

pytestmark = [pytest.mark.browser, pytest.mark.sip]


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with chromium_page(width=1280) as p:
        yield p


async def test_a_supervisor_listens_from_the_dashboard(tmp_path: Path, page: Any) -> None:
    p1, psup = free_port(), free_port()
    seats = f"seats:\n  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n" \
            "    status: available\n"
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    caller = None
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3")
        start_seat(node, "sup", psup, "--answer-after", "0.3", "--hangup-after", "2", "--tone", "1500")
        await page.goto(f"http://127.0.0.1:{node.api_port}/")
        await page.fill("#token", node.token)
        await page.click("#login-btn")
        await page.fill("#monitor-phone", f"sip:sup@127.0.0.1:{psup}")
        caller = start_caller(node, "1 2 1 2 2 2 1", gap="0.6", stay="15")
        listen = page.locator('button[data-monitor="listen"]')
        await expect(listen).to_have_count(1, timeout=60_000)
        call_id = await listen.get_attribute("data-call")
        await listen.click()
        await expect(page.locator("#monitor-result")).to_have_attribute("data-state", "dialing")
        rep = node.wait_for(lambda: seat_reports(node, "sup"), timeout=30)[0]
        assert rep["answered"] and rep["call_id"] == call_id
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "dashboard-monitor.png"), full_page=True)
        audit = node.get("/api/v1/audit", params={"kind": "call.monitor"}).json()
        assert [a["target"] for a in audit] == [call_id] and audit[0]["detail"]["mode"] == "listen"
    finally:
        if caller is not None:
            caller.kill()
            caller.wait()
        node.stop()
