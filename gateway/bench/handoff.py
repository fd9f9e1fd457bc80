"""``handoff122 bench handoff``: from the routing decision to a caller talking to a seat.

Callers (SIPp, RFC 4733 key ``0``) go through the IVR to intake seats answered at once by a SIPp
UAS; the node logs each bridge with its hand-off latency (OFFER -> seat's 200 OK -> audio bridged).
Two runs: callers one after another, then 50 at once.  Goal: p50 <= 10 ms, p99 <= 50 ms, 0 lost.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from gateway.bench.runner import NodeProcess, emit, free_port, say, sipp

SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "sipp"


def _seats_yaml(path: Path, n: int, uas_port: int) -> Path:
    lines = ["seats:"]
    for i in range(n):
        lines += [f"  - id: b{i:03d}", f"    contact: sip:b{i:03d}@127.0.0.1:{uas_port}",
                  "    skills: [intake_guidance]", "    status: available"]
    path.write_text("\n".join(lines) + "\n")
    return path


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


def _run(node: NodeProcess, calls: int, concurrency: int, rate: float) -> dict[str, Any]:
    skip = len(node.log.read_text(errors="replace").splitlines())
    r = sipp(node.sip_port, SCENARIOS / "uac_122_dtmf.xml", calls=calls, rate=rate, limit=concurrency,
             timeout=120 + calls * 6 // concurrency, subs={"service": "122", "first": "600", "stay": "2500",
                                        "digits": _digit_zero()})
    lat = _bridges(node.log, skip)
    return {"calls": calls, "concurrency": concurrency, "ok": r.ok_calls, "failed": r.failed_calls,
            "bridged": len(lat), "lost": r.ok_calls + r.failed_calls - len(lat), "p50_ms": round(_pct(lat, 0.5), 2),
            "p99_ms": round(_pct(lat, 0.99), 2), "max_ms": round(max(lat, default=float("nan")), 2),
            "mean_ms": round(statistics.fmean(lat), 2) if lat else None}


def _digit_zero() -> str:
    return ('  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_0.pcap"/></action></nop>\n'
            '  <pause milliseconds="1200"/>')


def main(as_json: bool = False, quick: bool = False) -> int:
    sequential, concurrent = (10, 10) if quick else (60, 50)
    uas_port = free_port()
    tmp = tempfile.TemporaryDirectory(prefix="h122-bench-handoff-")
    uas = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_answer.xml"), "-i", "127.0.0.1", "-p", str(uas_port),
                            "-cp", str(free_port()), "-nostdin", "-mi", "127.0.0.1", "-mp", str(free_port())],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp.name)
    seats = _seats_yaml(Path(tmp.name) / "seats.yaml", concurrent + 10, uas_port)
    workers = concurrent // 2 + 5
    say(f"bench handoff: node with {workers} workers, {concurrent + 10} intake seats on a SIPp UAS")
    node = NodeProcess(workers=workers, env={"HANDOFF_ANSWER_DELAY_S": "0", "HANDOFF_LOG_LEVEL": "INFO",
                                             "HANDOFF_WRAP_UP_S": "0"},
                       args=["--seats", str(seats)]).start()
    result: dict[str, Any] = {"bench": "handoff", "quick": quick}
    try:
        say(f"run 1: {sequential} callers, one after another")
        result["sequential"] = _run(node, sequential, 1, 2.0)
        say(f"  {result['sequential']}")
        say(f"run 2: {concurrent * 2} callers, {concurrent} at once")
        result["concurrent"] = _run(node, concurrent * 2, concurrent, 10.0)
        say(f"  {result['concurrent']}")
    finally:
        node.stop()
        uas.terminate()
        uas.wait(10)
        tmp.cleanup()
    seq, con = result["sequential"], result["concurrent"]
    goal = seq["p50_ms"] <= 10 and seq["p99_ms"] <= 50 and seq["lost"] == 0 and con["lost"] == 0
    result["goal_met"] = goal
    say(f"hand-off latency p50 {seq['p50_ms']} ms, p99 {seq['p99_ms']} ms; at {concurrent} concurrent p50 "
        f"{con['p50_ms']} ms, p99 {con['p99_ms']} ms; lost {seq['lost'] + con['lost']}; goal "
        f"{'met' if goal else 'NOT met'}")
    emit(result, as_json)
    return 0
