"""``handoff122 bench sip``: what one node holds and how fast it answers, through its front door.

1. Concurrency: N callers held at once (each answered, hearing the welcome prompt, recorded).
2. Sustained rate: answer + prompt + hang-up at R calls/s for D seconds.
3. Ceiling: the same rate against Kamailio in front of a SIPp UAS alone (signalling only), so the
   ratio shows what the media workers cost.
CPU (share of one core) and memory per worker are sampled during phase 1.
"""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gateway.bench.runner import NodeProcess, ProcSampler, emit, free_port, say, sipp
from gateway.kamailio import Destination, Kamailio, find_kamailio
from gateway.logs import configure_logging

SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "sipp"


def _held(port: int, n: int, hold_s: float, rate: float) -> Any:
    return sipp(port, SCENARIOS / "uac_122_dtmf.xml", calls=n, rate=rate, limit=n, timeout=hold_s + 120,
                subs={"service": "122", "first": "500", "stay": str(int(hold_s * 1000)), "digits": ""})


def _rate(port: int, cps: float, seconds: float, stay_s: float = 1.0) -> Any:
    calls = int(cps * seconds)
    return sipp(port, SCENARIOS / "uac_122_dtmf.xml", calls=calls, rate=cps, limit=int(cps * 10), timeout=seconds + 120,
                subs={"service": "122", "first": "200", "stay": str(int(stay_s * 1000)), "digits": ""})


def _ceiling(cps: float, seconds: float) -> dict[str, Any] | None:
    binary = find_kamailio("auto")
    if binary is None:
        return None
    uas_port, front = free_port(), free_port()
    uas = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_answer.xml"), "-i", "127.0.0.1", "-p", str(uas_port),
                            "-cp", str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port()), "-nostdin"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    with tempfile.TemporaryDirectory(prefix="h122-ceiling-") as d:
        k = Kamailio(binary, Path(d), host="127.0.0.1", port=front, service_numbers=["122"],
                     destinations=[Destination(0, "127.0.0.1", uas_port)], maxload=100000, retry_after_s=5,
                     shm_mb=256, probing=False)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(k.start())
            run = sipp(front, SCENARIOS / "uac_122_dtmf.xml", calls=int(cps * seconds), rate=cps,
                       limit=int(cps * 10), timeout=seconds + 60,
                       subs={"service": "122", "first": "200", "stay": "1000", "digits": ""})
        finally:
            loop.run_until_complete(k.stop())
            loop.close()
            uas.terminate()
            uas.wait(10)
    return {"ok": run.ok_calls, "failed": run.failed_calls, "cps": round(run.cps, 1)}


def main(as_json: bool = False, quick: bool = False) -> int:
    configure_logging("ERROR", process_name="bench")
    concurrent = 16 if quick else 128
    cps, seconds, hold_s = (10.0, 10.0, 10.0) if quick else (50.0, 60.0, 30.0)
    workers = max(2, concurrent // 2)
    say(f"bench sip: starting a node with {workers} media workers (capacity {workers * 2} callers)")
    node = NodeProcess(workers=workers, env={"HANDOFF_ANSWER_DELAY_S": "0"}).start()
    result: dict[str, Any] = {"bench": "sip", "workers": workers, "quick": quick}
    try:
        say(f"phase 1: {concurrent} callers held {hold_s:.0f} s each (prompt + recording)")
        sampler = ProcSampler(node.worker_pids())
        done = threading.Event()

        def sample() -> None:
            while not done.wait(1.0):
                sampler.sample()

        threading.Thread(target=sample, daemon=True).start()
        held = _held(node.sip_port, concurrent, hold_s, rate=min(20.0, concurrent))
        done.set()
        per_worker = sampler.result()
        fail_pct = 100.0 * held.failed_calls / max(1, held.ok_calls + held.failed_calls)
        result["concurrent"] = {"callers": concurrent, "ok": held.ok_calls, "failed": held.failed_calls,
                                "failed_pct": round(fail_pct, 3), "per_worker": per_worker}
        say(f"  held {held.ok_calls}/{concurrent} ok, {held.failed_calls} failed ({fail_pct:.2f} %); per worker: "
            f"{per_worker['cpu_core_share_avg'] * 100:.2f} % of a core, {per_worker['rss_mb_avg']} MB RSS "
            f"(max {per_worker['rss_mb_max']} MB)")

        say(f"phase 2: {cps:.0f} calls/s for {seconds:.0f} s (answer, prompt, hang up after 1 s)")
        t0 = time.monotonic()
        rate = _rate(node.sip_port, cps, seconds)
        result["sustained"] = {"target_cps": cps, "seconds": seconds, "ok": rate.ok_calls,
                               "failed": rate.failed_calls, "achieved_cps": round(rate.cps, 1),
                               "wall_s": round(time.monotonic() - t0, 1)}
        say(f"  {rate.ok_calls} ok, {rate.failed_calls} failed, {rate.cps:.1f} calls/s achieved")
    finally:
        node.stop()
    say("phase 3: ceiling = Kamailio + SIPp UAS at the same rate (no media)")
    ceiling = _ceiling(cps, seconds)
    result["ceiling"] = ceiling
    if ceiling:
        ratio = result["sustained"]["achieved_cps"] / ceiling["cps"] if ceiling["cps"] else 0.0
        result["ratio_to_ceiling"] = round(ratio, 3)
        say(f"  ceiling {ceiling['cps']} calls/s ({ceiling['failed']} failed); node/ceiling = {ratio:.2f}")
    goal = (result["concurrent"]["failed"] == 0 and result["concurrent"]["ok"] >= concurrent
            and result["sustained"]["failed"] == 0)
    result["goal_met"] = goal
    say(f"goal ({concurrent} concurrent, {cps:.0f} CPS, 0 failures): {'met' if goal else 'NOT met'}")
    emit(result, as_json)
    return 0
