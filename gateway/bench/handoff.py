"""``handoff122 bench handoff``: from the routing decision to a caller talking to a seat.

Callers (SIPp, RFC 4733 key ``0``) go through the IVR to intake seats answered at once by SIPp
seats (``gateway.bench.seat_farm``); the node logs each bridge with its hand-off latency (OFFER ->
seat's 200 OK -> audio bridged), and the seats log when they answered, so the seat's 200 OK ->
bridged part is reported too.  Two runs: callers one after another, then 100 at once.
Goals: p50 <= 10 ms, p99 <= 50 ms, 0 lost; seat's 200 OK -> bridged p99 <= 5 ms at 100 at once.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from gateway.bench.node_log import NodeLog
from gateway.bench.ramp import pct, rounded
from gateway.bench.runner import NodeProcess, emit, say, sipp
from gateway.bench.seat_farm import SeatFarm

SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "sipp"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _bridges(log: Path, skip: int) -> list[float]:
    out = []
    for line in log.read_text(errors="replace").splitlines()[skip:]:
        if '"bridged"' in line:
            try:
                ms = json.loads(line).get("handoff_ms")
            except ValueError:
                continue
            if ms is not None:
                out.append(float(ms))
    return out


def _run(node: NodeProcess, farm: SeatFarm, calls: int, concurrency: int, rate: float) -> dict[str, Any]:
    skip = len(node.log.read_text(errors="replace").splitlines())
    journeys = NodeLog(node.log)
    journeys.mark()
    r = sipp(node.sip_port, SCENARIOS / "uac_122_dtmf.xml", calls=calls, rate=rate, limit=concurrency,
             timeout=120 + calls * 6 // concurrency, subs={"service": "122", "first": "600", "stay": "2500",
                                        "digits": _digit_zero()})
    lat = _bridges(node.log, skip)
    answers = farm.answers()
    seat_ok = [(j.bridged - answers[j.call_id].at) * 1000 for j in journeys.read().values()
               if j.bridged is not None and j.call_id in answers]
    return {"seat_200_to_bridged_ms": {"n": len(seat_ok), "p50": rounded(pct(seat_ok, 0.5)),
                                       "p99": rounded(pct(seat_ok, 0.99))},"calls": calls, "concurrency": concurrency, "ok": r.ok_calls, "failed": r.failed_calls,
            "bridged": len(lat), "lost": r.ok_calls + r.failed_calls - len(lat), "p50_ms": round(_pct(lat, 0.5), 2),
            "p99_ms": round(_pct(lat, 0.99), 2), "max_ms": round(max(lat, default=float("nan")), 2),
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None}


def _digit_zero() -> str:
    return ('  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_0.pcap"/></action></nop>\n'
            '  <pause milliseconds="1200"/>')


def main(as_json: bool = False, quick: bool = False) -> int:
    sequential, concurrent = (10, 10) if quick else (60, 100)
    tmp = tempfile.TemporaryDirectory(prefix="h122-bench-handoff-")
    farm = SeatFarm(seats=concurrent + 10, uas_processes=2 if quick else 4)
    seats = farm.start(Path(tmp.name))
    workers = concurrent // 2 + 5
    say(f"bench handoff: node with {workers} workers, {concurrent + 10} seats on SIPp UAS processes")
    node = NodeProcess(workers=workers, env={"HANDOFF_ANSWER_DELAY_S": "0", "HANDOFF_LOG_LEVEL": "INFO",
                                             "HANDOFF_WRAP_UP_S": "0"},
                       args=["--seats", str(seats)]).start()
    result: dict[str, Any] = {"bench": "handoff", "quick": quick}
    try:
        say(f"run 1: {sequential} callers, one after another")
        result["sequential"] = _run(node, farm, sequential, 1, 2.0)
        say(f"  {result['sequential']}")
        say(f"run 2: {concurrent * 2} callers, {concurrent} at once")
        result["concurrent"] = _run(node, farm, concurrent * 2, concurrent, 10.0)
        say(f"  {result['concurrent']}")
    finally:
        node.stop()
        farm.stop()
        tmp.cleanup()
    seq, con = result["sequential"], result["concurrent"]
    goal = seq["p50_ms"] <= 10 and seq["p99_ms"] <= 50 and seq["lost"] == 0 and con["lost"] == 0
    result["goal_met"] = goal
    seat_p99 = con["seat_200_to_bridged_ms"]["p99"]
    result["goal_seat_200_to_bridged_met"] = seat_p99 is not None and seat_p99 <= 5.0
    say(f"hand-off latency p50 {seq['p50_ms']} ms, p99 {seq['p99_ms']} ms; at {concurrent} concurrent p50 "
        f"{con['p50_ms']} ms, p99 {con['p99_ms']} ms; lost {seq['lost'] + con['lost']}; goal "
        f"{'met' if goal else 'NOT met'}")
    say(f"seat's 200 OK -> bridged at {concurrent} at once: p50 {con['seat_200_to_bridged_ms']['p50']} ms, p99 "
        f"{seat_p99} ms (goal p99 <= 5 ms: {'met' if result['goal_seat_200_to_bridged_met'] else 'NOT met'})")
    emit(result, as_json)
    return 0
