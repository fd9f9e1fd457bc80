"""The benchmarks at their tiniest, against a real node: the figures are there, and they are real.

``bench full`` must drive every IVR path through real key presses to the right seat (the node's
own call records show the seat's CONNECT), and measure audio a seat really received.  ``bench sip``
must find a limit on both ramps in one run.  The report of ``bench all`` is rendered from them.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.bench import cluster, full, report, sip
from gateway.bench.processes import processes_under
from gateway.bench.rtp_pcap import path_captures

TINY_FULL = full.Plan(talk_s=1, step_s=6, soak_s=8, first_rate=1, cap=1, refine=0, resolution=1, workers=5,
                      seats=12, uas=1, held=4, held_s=3, probe_share=0.5, progress_s=60)
TINY_SIP = sip.Plan(held=4, hold_s=2, step_s=3, node_first=2, node_cap=2, ceiling_first=20, ceiling_cap=20,
                    refine=0, workers=3)


def _rtp_of(pcap: Path) -> list[bytes]:
    data = pcap.read_bytes()
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4 and struct.unpack("<I", data[20:24])[0] == 1  # Ethernet
    out, off = [], 24
    while off < len(data):
        incl = struct.unpack("<I", data[off + 8:off + 12])[0]
        out.append(data[off + 16 + 14 + 20 + 8:off + 16 + incl])
        off += 16 + incl
    return out


def test_key_press_captures_carry_one_stream_so_a_repeated_key_is_new(tmp_path: Path) -> None:
    presses, tone = path_captures(tmp_path, "review", "1 2 1 2 2 1")
    assert len(presses) == 6
    seqs, event_ts = [], []
    for pcap in presses:
        rtp = _rtp_of(pcap)
        assert {p[1] & 0x7F for p in rtp} == {101}
        assert rtp[0][1] & 0x80 and rtp[-1][13] & 0x80  # marker on the first packet, end bit on the last
        seqs += [struct.unpack("!H", p[2:4])[0] for p in rtp]
        event_ts.append({struct.unpack("!I", p[4:8])[0] for p in rtp})
    tone_rtp = _rtp_of(tone)
    seqs += [struct.unpack("!H", p[2:4])[0] for p in tone_rtp]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one stream, no gap, no repeat
    assert all(len(ts) == 1 for ts in event_ts) and len({min(ts) for ts in event_ts}) == 6  # a new event each press
    assert {p[1] & 0x7F for p in tone_rtp} == {0} and len(tone_rtp) == 50


def _json_run(bench: Callable[..., int], plan: Any) -> dict[str, Any]:
    """Run a benchmark as ``--json`` would and return the JSON object it printed last."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert bench(plan, as_json=True) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])


@pytest.fixture(scope="module")
def full_figures() -> dict[str, Any]:
    return _json_run(full.run, TINY_FULL)


@pytest.fixture(scope="module")
def sip_figures() -> dict[str, Any]:
    return _json_run(sip.run, TINY_SIP)


@pytest.mark.sip
@pytest.mark.timeout(240)
def test_bench_full_drives_every_ivr_path_to_a_seat(full_figures: dict[str, Any]) -> None:
    f = full_figures
    step = f["steps"][0]
    assert step["clean"], step["why_failing"]
    assert step["calls"] == 6 and step["reached_seat"] == 6 and step["wrong_skill"] == 0
    assert step["by_path"] == dict.fromkeys(full.PATHS, 1)  # each path pressed once, routed to its skill
    assert step["setup_ms"]["n"] == 6 and step["ivr_last_key_to_routed_ms"]["n"] == 6
    assert step["handoff_seat_200_to_bridged_ms"]["n"] == 6 and step["handoff_seat_200_to_bridged_ms"]["p99"] < 1000
    audio = step["audio"]
    assert audio["streams"] >= 1 and audio["loss_pct"] is not None and audio["jitter_ms_p99"] is not None
    assert audio["tone_delay_ms"]["n"] >= 1  # the caller's tone crossed the bridge to a sampled seat
    assert {"front_door", "workers", "control"} <= set(step["processes"])
    assert step["processes"]["front_door"]["processes"] >= 1 and step["processes"]["workers"]["processes"] == 5
    assert f["max_clean_cps"] == 1
    assert f["soak"]["lost"] == 0 and f["soak"]["rss"]["growth_pct"] is not None
    assert f["held"]["callers_concurrent_peak"] == 4 and f["held"]["legs_concurrent_peak"] == 8
    # memory per held caller both ways: PSS (shared pages counted once, mid-hold) below the RSS sum
    held_mem = f["held"]["memory_while_held"]
    assert held_mem["workers"]["processes"] == 5 and held_mem["api"]["processes"] == 1
    assert 0 < f["held"]["pss_per_held_caller_mb"] < f["held"]["memory_per_held_caller_mb"]
    records = f["call_records"]
    total = 6 + f["soak"]["calls"] + f["held"]["calls"]
    assert records["checked"] == total and records["connected"] == total, records
    assert {"police_dispatch", "rescue", "online_review", "online_determination", "accident_query",
            "insurance_claim"} <= set(records["skills"])


@pytest.mark.sip
@pytest.mark.timeout(180)
def test_bench_sip_finds_both_limits_in_one_run(sip_figures: dict[str, Any]) -> None:
    f = sip_figures
    assert f["concurrent"]["ok"] == 4 and f["concurrent"]["memory_per_held_caller_mb"] > 0
    assert 0 < f["concurrent"]["pss_per_held_caller_mb"] < f["concurrent"]["memory_per_held_caller_mb"]
    worker = f["concurrent"]["per_worker"]
    assert 0 < worker["uss_mb"] <= worker["pss_mb"] < worker["rss_mb"]
    assert f["concurrent"]["processes"]["api"]["processes"] == 1  # the API process, counted apart from control
    assert f["node_ramp"]["steps"][0]["ok"] == 6 and f["node_ramp"]["max_clean_cps"] == 2
    assert f["ceiling_ramp"]["max_clean_cps"] == 20
    assert f["ratio_to_ceiling"] == pytest.approx(0.1)


@pytest.mark.sip
@pytest.mark.timeout(420)
def test_bench_all_report_has_a_table_per_benchmark_and_plots(tmp_path: Path, full_figures: dict[str, Any],
                                                              sip_figures: dict[str, Any]) -> None:
    results = {name: {"figures": f, "returncode": 0, "seconds": 1.0, "tail": ""}
               for name, f in (("sip", sip_figures), ("full", full_figures))}
    results["ivr"] = {"figures": None, "returncode": 1, "seconds": 0.5, "tail": "boom"}
    plots = report.make_plots(results, tmp_path)
    assert set(plots) == {"ramp.png", "jitter.png"}
    assert all((tmp_path / p).read_bytes()[:4] == b"\x89PNG" for p in plots)
    text = report.render(results, report.machine(), plots, quick=True)
    assert "## bench sip" in text and "## bench full" in text and "## bench ivr" in text
    assert "ratio_to_ceiling" in text and "full-path max clean CPS" in text and "No figures" in text
    assert "memory per held caller, RSS-sum" in text and "memory per held caller, PSS-sum" in text


@pytest.mark.sip
@pytest.mark.postgres
@pytest.mark.timeout(360)
def test_bench_cluster_routes_every_call_through_the_leader_and_times_its_failover(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``bench cluster --quick``: 1 node, then 3, through the front door with leader routing; every
    caller presses its IVR path and reaches a seat offered by the leader, the 3 nodes share the
    calls, the CPU is split by role, and the leader's freeze and kill -9 are timed."""
    from tests.conftest import PG_ADMIN_URL

    monkeypatch.setattr(cluster, "PG_URL", PG_ADMIN_URL)
    f = _json_run(cluster.run, cluster.QUICK)
    one, three = f["sizes"]
    assert (one["nodes"], three["nodes"]) == (1, 3)
    for size in (one, three):
        step = size["steps"][0]
        assert step["clean"], step["why_failing"]
        assert step["reached_seat"] == step["calls"] == 5 and step["wrong_skill"] == 0
        assert step["routed_to_offered_ms"]["n"] == 5  # each caller's queue wait: enqueued -> the leader's offer
        # the nodes talked to the leader through PostgreSQL: commands in, deliveries (the offers) out
        rows = size["routing_rows"]
        assert rows["calls"] == 5 and rows["commands_per_call"] >= 1 and rows["deliveries_per_call"] >= 1, rows
        cpu = step["processes"]
        # every role found; the routing ran in the leader's control process and its database, the
        # calls in the workers (the Kamailios relay 5 calls in less than the 10 ms a CPU tick counts)
        for role in ("front_door", "node_kamailio", "workers", "control_leader", "api", "api_door", "postgres", "sipp"):
            assert cpu[role]["processes"] >= 1, (role, cpu[role])
        for role in ("workers", "control_leader", "postgres", "sipp"):
            assert cpu[role]["cpu_core_share"] > 0, (role, cpu[role])
        assert cpu["machine_cpu_cores"] >= cpu["cpu_core_share_total"] * 0.9
    assert three["steps"][0]["processes"]["control_standby"]["processes"] >= 2
    assert sum(1 for n in three["steps"][0]["calls_by_node"].values() if n) >= 2  # the front door spread them
    assert f["cps_ratio"] == 1.0
    freeze, kill = f["failover"]["leader_freeze"], f["failover"]["leader_kill_9"]
    for case in (freeze, kill):
        s = case["samples"][0]
        assert s["new_leader"] and s["new_leader"] != s["node"], s
        assert 0 < s["to_leader_s"] <= s["to_first_routed_s"] < 30, s
        assert case["to_leader_s"]["n"] == 1
    assert freeze["samples"][0]["stepped_down_after_cont_s"] is not None  # woken, the old leader found itself fenced
    assert kill["samples"][0]["left_front_door_set_s"] is not None
    print(f"\nbench cluster --quick: freeze -> new leader {freeze['samples'][0]['to_leader_s']} s, "
          f"kill -9 -> new leader {kill['samples'][0]['to_leader_s']} s")
    assert not processes_under(Path(tempfile.gettempdir()) / "h122-bench-cluster-")  # nothing of the clusters left
