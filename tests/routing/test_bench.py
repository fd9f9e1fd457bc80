from __future__ import annotations

import json

import pytest

from routing import bench
from routing.events import EventKind


def test_bench_stream_exercises_every_decision_and_reports_json(capsys: pytest.CaptureFixture[str]) -> None:
    result, events = bench.run_decisions(seats=40, waiting=300, decisions=3_000)
    assert set(result["mix"]) >= {"answer", "rona", "seat_failed", "complete", "end_wrap_up", "abandon",
                                  "available", "not_ready", "tick", "enqueue"}
    assert result["decisions"] == 3_000 and result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    kinds = {e.kind for e in events}
    assert {EventKind.OFFER, EventKind.CONNECT, EventKind.RINGNOANSWER, EventKind.ABANDON} <= kinds

    assert bench.main(as_json=True, quick=True) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    figures = json.loads(last)
    assert figures["seats"] == 200 and figures["decisions_per_s"] > 0 and "persistence" in figures
