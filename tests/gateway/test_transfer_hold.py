"""Seat hold and resume, end to end: while on hold neither side hears the other, the caller hears
hold audio, and after resume they hear each other again (tone detection on both recordings)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from recordings.wav import read_pcm16
from tests.conftest import free_port
from tests.gateway.test_transfer import post, share, status, token
from tests.node_harness import caller_result, start_caller, start_node, start_seat

pytestmark = pytest.mark.sip
DISPUTE = "1 2 1 2 2 2 1"


def heard(path: Path, hz: float) -> list[bool]:
    """Per half second: whether the tone is what is heard."""
    rate, samples = read_pcm16(path)
    step = rate // 2
    return [share(samples[i:i + step], rate, hz) > 0.3 for i in range(0, len(samples) - step + 1, step)]


def heard_then_gap_then_heard(windows: list[bool], gap: int) -> bool:
    """The tone, then at least ``gap`` half-seconds without it, then the tone again."""
    first = windows.index(True) if True in windows else None
    if first is None:
        return False
    run = best = 0
    for i in range(first, len(windows)):
        if windows[i]:
            if best >= gap:
                return True
            run = 0
        else:
            run += 1
            best = max(best, run)
    return False


def test_hold_gives_the_caller_hold_audio_and_resume_brings_them_back(tmp_path: Path) -> None:
    p1 = free_port()
    seats = f"seats:\n  - id: s1\n    contact: sip:s1@127.0.0.1:{p1}\n    skills: [online_determination]\n" \
            "    status: available\n"
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        start_seat(node, "s1", p1, "--answer-after", "0.3", "--tone", "1000", record=tmp_path / "s1.wav")
        s1_tok = token(node, "seat", "s1")
        caller = start_caller(node, DISPUTE, gap="0.6", stay="14", record=tmp_path / "caller.wav")
        s1: dict[str, Any] = node.wait_for(lambda: (s := status(node, "s1"))["status"] == "on_call" and s, timeout=60)
        call_id = s1["call_id"]
        node.wait_for(lambda: time.time() - float(s1["since"]) >= 2.0)

        assert post(node, f"/api/v1/calls/{call_id}/resume", s1_tok, {}).status_code == 409   # not on hold
        r = post(node, f"/api/v1/calls/{call_id}/hold", s1_tok, {})
        assert r.status_code == 200 and r.json()["stage"] == "on_hold", r.text
        assert post(node, f"/api/v1/calls/{call_id}/hold", s1_tok, {}).status_code == 409      # already
        held_at = time.time()
        assert status(node, "s1")["status"] == "on_call"   # the seat is still in the conversation
        node.wait_for(lambda: time.time() - held_at >= 3.5)
        r = post(node, f"/api/v1/calls/{call_id}/resume", s1_tok, {})
        assert r.status_code == 200 and r.json()["stage"] == "talking", r.text

        res = caller_result(caller)
        assert res["answered"] and res["hung_up_by"] == "caller", res
        node.wait_for(lambda: node.call(call_id).get("end_reason") == "caller_hung_up"
                      or node.call(call_id).get("recording_id"))
        # the caller heard the seat, then (on hold) not, then the seat again; the seat likewise the caller
        assert heard_then_gap_then_heard(heard(tmp_path / "caller.wav", 1000), gap=5)
        node.wait_for(lambda: (tmp_path / "s1.wav").stat().st_size > 0)
        assert heard_then_gap_then_heard(heard(tmp_path / "s1.wav", 440), gap=5)
        causes = [e["data"]["cause"] for e in node.call(call_id)["events"] if e["kind"] == "JOURNEY"]
        assert causes.count("held") == 1 and causes.count("resumed") == 1, causes
        assert node.journey_errors() == []
    finally:
        node.stop()
