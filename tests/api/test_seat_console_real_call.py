"""The seat console during a real hand-off: a pjsua2 caller presses keys, a pjsua2 seat rings.

Nothing here is built by hand: the node (Kamailio, workers, control), the caller and the seat phone
are real processes, and the screen pop is what the node sent for that call.
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
ELIGIBLE_DISPUTE = "1 2 1 2 2 2 1"


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with chromium_page(width=1024) as p:
        yield p


@pytest.fixture
def node(tmp_path: Path) -> Any:
    port = free_port()
    seats = ("seats:\n  - id: s101\n    name: 在线认定 1\n"
             f"    contact: sip:s101@127.0.0.1:{port}\n    skills: [online_determination]\n    status: logged_out\n")
    n = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        start_seat(n, "s101", port, "--answer-after", "4")
        yield n
    finally:
        n.stop()


def seat_token(node: RunningNode, seat_id: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "seat", "--seat", seat_id,
                          "--data-dir", str(node.data_dir)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


async def test_the_screen_pop_of_a_real_call_lists_every_question_and_answer(node: RunningNode, page: Any) -> None:
    await page.goto(f"http://127.0.0.1:{node.api_port}/seat")
    await page.fill("#token", seat_token(node, "s101"))
    await page.click("#login-btn")
    status = page.locator("#seat-status")
    await expect(status).to_have_attribute("data-status", "logged_out")
    await page.click("#btn-ready")
    await expect(status).to_have_attribute("data-status", "available")

    caller = start_caller(node, ELIGIBLE_DISPUTE, gap="0.6", stay="25", number="13912345678")
    try:
        pop = page.locator("#screen-pop")
        await expect(pop).to_be_visible(timeout=60_000)
        await expect(status).to_have_attribute("data-status", "reserved")
        await expect(page.locator("#pop-caller")).to_have_text("13912345678")
        await expect(page.locator("#pop-skill")).to_have_text("在线认定")
        await expect(page.locator("#pop-why")).to_have_text("符合快处条件，但对责任有争议")
        answers = page.locator("#pop-answers li")
        await expect(answers).to_have_count(7)
        await expect(answers.nth(0)).to_contain_text("来电事由")
        await expect(answers.nth(0)).to_contain_text("报告新的交通事故")
        await expect(answers.nth(1)).to_contain_text("是否有人受伤或死亡？")
        await expect(answers.nth(1)).to_contain_text("无人受伤")
        await expect(answers.nth(6)).to_contain_text("有争议")
        text = await pop.inner_text()
        assert "{" not in text and '"' not in text, f"raw data on the seat's screen: {text!r}"
        # nothing on the page is wider than the window (the old pop printed JSON lines)
        assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "seat-console-real-call.png"), full_page=True)

        # the seat's language: the same pop in English
        await page.click("#lang-toggle")
        await expect(answers.nth(1)).to_contain_text("Is anyone injured or killed?")
        await expect(answers.nth(1)).to_contain_text("no one is injured")
        await expect(page.locator("#pop-why")).to_have_text("eligible, but the parties dispute liability")

        # the seat answers; a console opened (or reconnected) now still shows its current call
        await expect(status).to_have_attribute("data-status", "on_call", timeout=30_000)
        await page.reload()
        await expect(pop).to_be_visible(timeout=20_000)
        await expect(page.locator("#pop-caller")).to_have_text("13912345678")
        await expect(answers).to_have_count(7)
        await page.screenshot(path=str(ARTIFACTS / "seat-console-real-call-en.png"), full_page=True)
    finally:
        caller.kill()
        caller.wait()
