"""The seat console's hold and transfer buttons over a real call, and seat 2's screen pop with the note."""

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
from tests.node_harness import RunningNode, seat_reports, start_caller, start_node, start_seat

pytestmark = [pytest.mark.browser, pytest.mark.sip]
NOTE = "甲方全责，已认定，请办理理赔"


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    async with chromium_page(width=1024) as p:
        yield p


def seat_token(node: RunningNode, seat_id: str) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "seat", "--seat", seat_id,
                          "--data-dir", str(node.data_dir)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


async def console(page: Any, node: RunningNode, seat_id: str) -> Any:
    await page.goto(f"http://127.0.0.1:{node.api_port}/seat")
    await page.fill("#token", seat_token(node, seat_id))
    await page.click("#login-btn")
    await expect(page.locator("#ws-status")).to_have_class("live")
    return page.locator("#seat-status")


async def test_the_seat_holds_then_transfers_from_its_console(tmp_path: Path, page: Any) -> None:
    p1, p2 = free_port(), free_port()
    seats = ("seats:\n"
             f"  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n    status: available\n"
             f"  - id: s2\n    contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n    status: available\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    caller = None
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3")
        start_seat(node, "s2", p2, "--answer-after", "3")
        st1 = await console(page, node, "s1")
        # seat 2 on its own browser profile (the console keeps its token in localStorage)
        page2 = await (await page.context.browser.new_context(viewport={"width": 1024, "height": 900})).new_page()
        st2 = await console(page2, node, "s2")
        caller = start_caller(node, "1 2 1 2 2 2 1", gap="0.6", stay="25")
        await expect(st1).to_have_attribute("data-status", "on_call", timeout=60_000)
        await expect(page.locator("#transfer")).to_be_visible()
        await page.click("#btn-hold")
        await expect(page.locator("#transfer")).to_have_attribute("data-stage", "on_hold")
        await expect(page.locator("#btn-resume")).to_be_visible()
        await page.click("#btn-resume")
        await expect(page.locator("#transfer")).to_have_attribute("data-stage", "talking")
        await page.select_option("#transfer-skill", "insurance_claim")
        await page.fill("#transfer-note", NOTE)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "seat-console-transfer.png"), full_page=True)
        await page.click("#btn-transfer")
        await expect(st1).to_have_attribute("data-status", "wrap_up")
        # seat 2 rings with the first seat's note on its screen pop, then answers
        await expect(page2.locator("#pop-transfer")).to_be_visible(timeout=20_000)
        await expect(page2.locator("#pop-transfer-from")).to_have_text("s1")
        await expect(page2.locator("#pop-transfer-note")).to_have_text(NOTE)
        await expect(st2).to_have_attribute("data-status", "on_call", timeout=20_000)
        await page2.screenshot(path=str(ARTIFACTS / "seat-console-transferred-pop.png"), full_page=True)
    finally:
        if caller is not None:
            caller.kill()
            caller.wait()
        node.stop()


async def test_the_console_lists_available_seats_and_transfers_to_the_one_chosen(tmp_path: Path, page: Any) -> None:
    p1, p2, p3 = free_port(), free_port(), free_port()
    seats = ("seats:\n"
             f"  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n    status: available\n"
             f"  - id: s2\n    name: 李四\n    contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n"
             "    status: available\n"
             # s3 takes the same skill and answers sooner: the caller must still reach s2, the seat chosen
             f"  - id: s3\n    contact: sip:s3@127.0.0.1:{p3}\n    skills: [insurance_claim]\n    status: available\n"
             "  - id: s4\n    contact: sip:s4@127.0.0.1:9\n    skills: [rescue]\n    status: logged_out\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    caller = None
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3")
        start_seat(node, "s2", p2, "--answer-after", "2")
        start_seat(node, "s3", p3, "--answer-after", "0.3")
        st1 = await console(page, node, "s1")
        page2 = await (await page.context.browser.new_context(viewport={"width": 1024, "height": 900})).new_page()
        st2 = await console(page2, node, "s2")
        caller = start_caller(node, "1 2 1 2 2 2 1", gap="0.6", stay="25")
        await expect(st1).to_have_attribute("data-status", "on_call", timeout=60_000)
        await expect(page.locator("#transfer")).to_be_visible()
        seat_options = page.locator("#transfer-seats option")
        # the available seats, pushed: s2 (with its name and skill) and s3; not s1 itself, not s4 (logged out)
        await expect(seat_options).to_have_count(2)
        await expect(page.locator("#transfer-skill option[value='seat:s2']")).to_contain_text("李四")
        await expect(page.locator("#transfer-skill option[value='seat:s2']")).to_contain_text("保险理赔")
        await expect(page.locator("#transfer-skill option[value='seat:s3']")).to_have_count(1)
        await page.select_option("#transfer-skill", "seat:s2")
        await page.fill("#transfer-note", NOTE)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "seat-console-transfer-to-seat.png"), full_page=True)
        # the same control opened out (a closed <select> shows only its choice; headless Chromium
        # draws no drop-down), to show every target the console built
        size = await page.eval_on_selector("#transfer-skill", "s => { s.size = s.options.length + 2; return s.size; }")
        assert size > 10
        await page.locator("#transfer").screenshot(path=str(ARTIFACTS / "seat-console-transfer-targets.png"))
        await page.eval_on_selector("#transfer-skill", "s => { s.size = 0; }")
        await page.click("#btn-transfer")
        await expect(st1).to_have_attribute("data-status", "wrap_up")
        await expect(page2.locator("#pop-transfer-from")).to_have_text("s1", timeout=20_000)
        await expect(st2).to_have_attribute("data-status", "on_call", timeout=20_000)
        # seat 2 is busy now: the list follows the pushed state
        await expect(page.locator("#transfer-skill option[value='seat:s2']")).to_have_count(0)
        await page2.screenshot(path=str(ARTIFACTS / "seat-console-transferred-to-seat.png"), full_page=True)
        assert seat_reports(node, "s3") == []                 # offered to the seat chosen only
        call = node.calls(1)[0]
        details = [e["data"]["detail"] for e in node.call(call["id"])["events"] if e["kind"] == "JOURNEY"
                   and e["data"]["cause"] == "transferred"]
        assert len(details) == 1 and "s2" in details[0], details
    finally:
        if caller is not None:
            caller.kill()
            caller.wait()
        node.stop()


async def test_the_seat_consults_then_completes_a_warm_transfer_from_its_console(tmp_path: Path, page: Any) -> None:
    p1, p2 = free_port(), free_port()
    seats = ("seats:\n"
             f"  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n    status: available\n"
             f"  - id: s2\n    contact: sip:s2@127.0.0.1:{p2}\n    skills: [insurance_claim]\n    status: available\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    caller = None
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3")
        start_seat(node, "s2", p2, "--answer-after", "1.5")
        st1 = await console(page, node, "s1")
        page2 = await (await page.context.browser.new_context(viewport={"width": 1024, "height": 900})).new_page()
        st2 = await console(page2, node, "s2")
        caller = start_caller(node, "1 2 1 2 2 2 1", gap="0.6", stay="25")
        await expect(st1).to_have_attribute("data-status", "on_call", timeout=60_000)
        await expect(page.locator("#consult")).to_be_visible()
        await page.fill("#consult-seat", "s2")
        await page.fill("#transfer-note", NOTE)
        await page.click("#btn-consult")
        await expect(page.locator("#consult")).to_have_attribute("data-stage", "consulting", timeout=10_000)
        await expect(page.locator("#btn-consult-complete")).to_be_visible()
        # seat 2 is reserved for the consult, with the first seat's note on its screen pop
        await expect(st2).to_have_attribute("data-status", "reserved")
        await expect(page2.locator("#pop-transfer-note")).to_have_text(NOTE, timeout=20_000)
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "seat-console-consulting.png"), full_page=True)
        await page2.screenshot(path=str(ARTIFACTS / "seat-console-consulted-pop.png"), full_page=True)
        node.wait_for(lambda: any(x.get("event") == "consult_answered" and x.get("seat_id") == "s2"
                                  for x in node.logs()), timeout=20)
        await page.click("#btn-consult-complete")
        await expect(st1).to_have_attribute("data-status", "wrap_up", timeout=10_000)
        await expect(st2).to_have_attribute("data-status", "on_call", timeout=10_000)
        await page2.screenshot(path=str(ARTIFACTS / "seat-console-consult-completed.png"), full_page=True)
    finally:
        if caller is not None:
            caller.kill()
            caller.wait()
        node.stop()
