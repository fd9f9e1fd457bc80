"""A real browser (Debian Chromium via Playwright) on the dashboard and the seat console."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright import async_api as playwright_api

from tests.api.conftest import Node
from tests.conftest import ROOT

pytestmark = pytest.mark.browser
expect = playwright_api.expect

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
            yield await ctx.new_page()
        finally:
            await browser.close()


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """The browser tests run on SQLite only (the API tests cover PostgreSQL)."""
    return sqlite_url


def cell(page: Any, skill: str, field: str) -> Any:
    return page.locator(f'td[data-skill="{skill}"][data-field="{field}"]')


async def test_dashboard_numbers_follow_the_calls(node: Node, client: httpx.AsyncClient, page: Any) -> None:
    await page.goto(node.url + "/")
    await page.fill("#token", node.tokens["supervisor"])
    await page.click("#login-btn")
    await expect(page.locator("#skills tbody tr")).to_have_count(8)
    await expect(page.locator('td[data-skill-label="online_determination"]')).to_have_text("在线认定")
    await expect(page.locator("#ws-status")).to_have_class("live")
    await expect(cell(page, "intake_guidance", "waiting")).to_have_text("0")
    await expect(cell(page, "rescue", "free")).to_have_text("1")

    await node.routing.enqueue("b-1", "intake_guidance", 3, caller="13800000001", info={})
    await node.routing.enqueue("b-2", "intake_guidance", 3, caller="13800000002", info={})
    await node.routing.enqueue("b-3", "rescue", 2, caller="13800000003", info={})
    await expect(cell(page, "intake_guidance", "waiting")).to_have_text("2", timeout=10_000)
    await expect(cell(page, "rescue", "ringing")).to_have_text("1", timeout=10_000)
    await expect(cell(page, "rescue", "free")).to_have_text("0")
    await expect(page.locator("#total-waiting")).to_have_text("2")
    await expect(page.locator('#seats .seat[data-seat="s1"]')).to_have_attribute("data-status", "reserved")

    queues = {q["skill"]: q for q in (await client.get("/api/v1/queues", headers=node.auth("supervisor"))).json()}
    assert await cell(page, "intake_guidance", "waiting").text_content() == str(queues["intake_guidance"]["waiting"])
    assert await cell(page, "rescue", "ringing").text_content() == str(queues["rescue"]["seats_by_status"]["reserved"])
    assert await cell(page, "intake_guidance", "offered").text_content() == str(queues["intake_guidance"]["offered"])

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    await page.click("#lang-toggle")
    await expect(page.locator('td[data-skill-label="online_determination"]')).to_have_text("Online liability")
    await expect(page.locator("h1")).to_contain_text("Dashboard")


async def test_seat_console_goes_ready_and_pops_the_offer(node: Node, client: httpx.AsyncClient, page: Any) -> None:
    await page.goto(node.url + "/seat")
    await page.fill("#token", node.tokens["seat_s2"])
    await page.click("#login-btn")
    status = page.locator("#seat-status")
    await expect(status).to_have_attribute("data-status", "logged_out")
    await expect(page.locator("#ws-status")).to_have_class("live")

    await page.click("#btn-ready")
    await expect(status).to_have_attribute("data-status", "available")
    seat = (await client.get("/api/v1/seats/s2", headers=node.auth("supervisor"))).json()
    assert seat["status"] == "available"

    await node.routing.enqueue("pop-1", "intake_guidance", 3, caller="13912345678",
                               info={"answers": [{"node": "welcome", "key": "0"}], "skill": "intake_guidance",
                                     "priority": 3})
    pop = page.locator("#screen-pop")
    await expect(pop).to_be_visible(timeout=10_000)
    await expect(page.locator("#pop-call-id")).to_have_text("pop-1")
    await expect(page.locator("#pop-caller")).to_have_text("13912345678")
    await expect(page.locator("#pop-answers li")).to_have_text(["welcome: 0"])
    await expect(status).to_have_attribute("data-status", "reserved")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "seat-console.png"), full_page=True)

    # a seat token logs in to its own seat only: s1's console is not reachable with it
    r = await client.get("/api/v1/seats/s1", headers=node.auth("seat_s2"))
    assert r.status_code == 403
