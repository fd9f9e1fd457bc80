"""The seat console's outcome buttons and the dashboard's fast-handled share, over a real call.

A pjsua2 caller goes through Kamailio and the IVR to a pjsua2 seat that answers and hangs up; the
seat's console (headless Chromium) shows the outcome buttons in wrap-up, the seat clicks one, the
wrap-up ends, and the supervisor's dashboard shows today's fast-handled share from the report.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser import ARTIFACTS, chromium_page
from tests.conftest import free_port
from tests.node_harness import RunningNode, start_caller, start_node, start_seat

pytestmark = [pytest.mark.browser, pytest.mark.sip]
DISPUTE = "1 2 1 2 2 2 1"


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with chromium_page(width=1280) as p:
        yield p


@pytest.fixture
def node(tmp_path: Path) -> Any:
    port = free_port()
    seats = (f"seats:\n  - id: s101\n    contact: sip:s101@127.0.0.1:{port}\n"
             "    skills: [online_determination]\n    status: logged_out\n")
    n = start_node(tmp_path, workers=2, seats_yaml=seats, env={"HANDOFF_WRAP_UP_S": "600"})
    try:
        start_seat(n, "s101", port, "--answer-after", "0.5", "--hangup-after", "2")
        yield n
    finally:
        n.stop()


def seat_token(node: RunningNode) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "seat", "--seat", "s101",
                          "--data-dir", str(node.data_dir)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


async def test_the_seat_picks_an_outcome_and_the_dashboard_shows_the_fast_handled_share(
        node: RunningNode, page: Any) -> None:
    base = f"http://127.0.0.1:{node.api_port}"
    await page.goto(base + "/seat")
    await page.fill("#token", seat_token(node))
    await page.click("#login-btn")
    status = page.locator("#seat-status")
    await page.click("#btn-ready")
    await expect(status).to_have_attribute("data-status", "available")

    dash = await page.context.new_page()
    await dash.goto(base + "/")
    await dash.fill("#token", node.token)
    await dash.click("#login-btn")
    await expect(dash.locator("#total-fast")).to_have_text("—")

    caller = start_caller(node, DISPUTE, gap="0.6", stay="12")
    try:
        await expect(status).to_have_attribute("data-status", "wrap_up", timeout=60_000)
        box = page.locator("#disposition")
        await expect(box).to_be_visible()
        await expect(page.locator("#disp-codes button")).to_have_count(6)
        call_id = await box.get_attribute("data-call")
        assert call_id and call_id.startswith("c-")
        await page.fill("#disp-note", "双方已在线签署协议")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "seat-console-disposition.png"), full_page=True)
        await page.click('#disp-codes button[data-code="fast_handled_online"]')
        await expect(status).to_have_attribute("data-status", "available")   # saving ended the wrap-up
        await expect(page.locator("#disp-saved")).to_have_attribute("data-code", "fast_handled_online")

        record = node.wait_for(lambda: next((e for e in node.call(call_id)["events"] if e["kind"] == "DISPOSITION"),
                                            None))
        assert record["data"] == {"code": "fast_handled_online", "note": "双方已在线签署协议", "by_role": "seat",
                                  "by_seat": "s101"}
        await expect(dash.locator("#total-fast")).to_have_text("100% (1/1)", timeout=20_000)
        cell = dash.locator('#skills td[data-skill="online_determination"][data-field="fast_share"]')
        await expect(cell).to_have_attribute("data-value", "1")
        await dash.screenshot(path=str(ARTIFACTS / "dashboard-fast-handled.png"), full_page=True)
    finally:
        caller.kill()
        caller.wait()
