"""``handoff122 bench sip``: what one node holds, and the highest call rate it answers cleanly.

1. Concurrency: nearly every caller slot of the node filled (2 per worker: 256 callers on 130 workers, a little room for a late BYE), each
   answered, hearing the welcome prompt, recorded.
   CPU and RSS of every process kind of the node, and memory per held caller: the RSS of every
   process of the node (control, API, media workers, Kamailio) divided by the callers held (the
   goal's measure), and the same with PSS, which counts shared pages once (``processes``).
2. Node ramp: answer-only calls (INVITE, 200, ACK, the welcome prompt for 1 s, BYE) through the
   node's front door, the rate raised step by step (``gateway.bench.ramp``) until a step fails
   (more than 0.1 % failed, or set-up p99 over 1 s).
3. Ceiling ramp: the same call shape, in the same run, against Kamailio (the node's front door,
   with the node's shared memory) in front of a SIPp UAS that answers at once: signalling only,
   no media.  ``ratio_to_ceiling`` is the node's highest clean rate over the ceiling's.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.bench.processes import NodeSampler, memory_now, per_held_caller
from gateway.bench.ramp import Step, find_limit, what_limits
from gateway.bench.runner import NodeProcess, SippRun, emit, free_port, say, sipp, sipp_media_port
from gateway.kamailio import Destination, Kamailio, find_kamailio
from gateway.logs import configure_logging
from gateway.settings import Settings

SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "sipp"
STAY_MS = 1000  # the call shape of both ramps: answered, 1 s on the line, BYE


@dataclass(frozen=True)
class Plan:
    held: int
    hold_s: float
    step_s: float
    node_first: float
    node_cap: float
    ceiling_first: float
    ceiling_cap: float
    refine: int
    workers: int


#: ``held`` fills nearly every caller slot (2 per worker), so memory per held caller is not inflated by idle workers.
FULL = Plan(held=256, hold_s=30, step_s=30, node_first=10, node_cap=320, ceiling_first=50, ceiling_cap=3200,
            refine=2, workers=130)
QUICK = Plan(held=24, hold_s=8, step_s=6, node_first=5, node_cap=10, ceiling_first=50, ceiling_cap=100,
             refine=0, workers=12)


def _calls(port: int, rate: float, seconds: float, stay_ms: int, limit: int) -> SippRun:
    return sipp(port, SCENARIOS / "uac_122_dtmf.xml", calls=max(1, round(rate * seconds)), rate=rate, limit=limit,
                timeout=seconds + stay_ms / 1000 + 90, subs={"service": "122", "first": str(stay_ms), "stay": "0",
                                                             "digits": ""},
                extra=["-trace_rtt", "-rtt_freq", "1", "-trace_err"])


def _step(port: int, seconds: float, limit: Callable[[float], int]) -> Callable[[float], Step]:
    def run(rate: float) -> Step:
        r = _calls(port, rate, seconds, STAY_MS, limit(rate))
        step = Step(target_cps=rate, seconds=seconds, ok=r.ok_calls, failed=r.failed_calls,
                    achieved_cps=r.answered_rate(), setup_ms=r.response_times_ms())
        if r.failed_calls:
            step.extra["sipp_errors"] = r.first_errors()
        shutil.rmtree(r.workdir, ignore_errors=True)
        return step
    return run


def _held(node: NodeProcess, plan: Plan) -> dict[str, Any]:
    assert node.proc is not None
    sampler = NodeSampler(node.proc.pid)
    rate = min(20.0, plan.held)
    box: dict[str, SippRun] = {}
    t = threading.Thread(target=lambda: box.update(run=sipp(
        node.sip_port, SCENARIOS / "uac_122_dtmf.xml", calls=plan.held, rate=rate, limit=plan.held,
        timeout=plan.hold_s + 120, subs={"service": "122", "first": "500", "stay": str(int(plan.hold_s * 1000)),
                                         "digits": ""})))
    t.start()
    # RSS is sampled by the sampler's thread all along; PSS once, when every caller is on the line
    t.join(plan.held / rate + plan.hold_s / 2)
    while_held = memory_now(node.proc.pid)
    t.join()
    held = box["run"]
    processes = sampler.stop()
    fail_pct = 100.0 * held.failed_calls / max(1, held.ok_calls + held.failed_calls)
    return {"callers": plan.held, "ok": held.ok_calls, "failed": held.failed_calls, "failed_pct": round(fail_pct, 3),
            "processes": processes, **per_held_caller(processes["rss_mb_peak_total"], while_held, plan.held),
            "memory_while_held": while_held,
            "per_worker": {"cpu_core_share": processes["workers"]["cpu_core_share_per_process"],
                           "rss_mb": processes["workers"]["rss_mb_per_process"],
                           "pss_mb": while_held["workers"].get("pss_mb_per_process"),
                           "uss_mb": while_held["workers"].get("uss_mb_per_process")}}


def _ceiling(plan: Plan, shm_mb: int) -> tuple[list[Step], float] | None:
    binary = find_kamailio("auto")
    if binary is None:
        return None
    uas_port, front = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="h122-ceiling-") as d:
        uas = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_answer_at_once.xml"), "-i", "127.0.0.1", "-p",
                                str(uas_port), "-cp", str(free_port()), "-mi", "127.0.0.1", "-mp", str(sipp_media_port()),
                                "-nostdin", "-max_socket", "4096"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d)
        k = Kamailio(binary, Path(d), host="127.0.0.1", port=front, service_numbers=["122"],
                     destinations=[Destination(0, "127.0.0.1", uas_port)], maxload=1_000_000, retry_after_s=5,
                     shm_mb=shm_mb, probing=False)
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(k.start())
            return find_limit(_step(front, plan.step_s, lambda r: int(r * 10) + 100), first=plan.ceiling_first,
                              cap=plan.ceiling_cap, refine=plan.refine, resolution=max(10.0, plan.ceiling_first / 5),
                              label="  ceiling ")
        finally:
            loop.run_until_complete(k.stop())
            loop.close()
            uas.terminate()
            uas.wait(10)


def main(as_json: bool = False, quick: bool = False) -> int:
    return run(QUICK if quick else FULL, as_json=as_json, quick=quick)


def run(plan: Plan, *, as_json: bool = False, quick: bool = False) -> int:
    """The whole benchmark with one plan (sizes and durations); the tests use a tiny one."""
    configure_logging("ERROR", process_name="bench")
    shm_mb = Settings.model_fields["kamailio_shm_mb"].default
    result: dict[str, Any] = {"bench": "sip", "quick": quick, "workers": plan.workers, "call_shape":
                              f"INVITE -> 200 -> ACK, {STAY_MS / 1000:g} s on the line, BYE",
                              "step_s": plan.step_s}
    say(f"bench sip: starting a node with {plan.workers} media workers (capacity {plan.workers * 2} callers)")
    t0 = time.monotonic()
    node = NodeProcess(workers=plan.workers, env={"HANDOFF_ANSWER_DELAY_S": "0"}).start(timeout=600)
    say(f"  node up in {time.monotonic() - t0:.0f} s")
    try:
        say(f"phase 1: {plan.held} callers held {plan.hold_s:g} s each (prompt + recording)")
        held = _held(node, plan)
        result["concurrent"] = held
        p = held["processes"]
        say(f"  held {held['ok']}/{plan.held} ok, {held['failed']} failed; CPU (cores) front door "
            f"{p['front_door']['cpu_core_share']}, workers {p['workers']['cpu_core_share']}, control "
            f"{p['control']['cpu_core_share']}; per worker {held['per_worker']['rss_mb']} MB RSS, "
            f"{held['per_worker']['pss_mb']} MB PSS; memory per held caller: {held['memory_per_held_caller_mb']} MB "
            f"RSS-sum (node RSS {p['rss_mb_peak_total']} MB / {plan.held}), {held['pss_per_held_caller_mb']} MB "
            f"PSS-sum (node PSS {held['memory_while_held']['pss_mb_total']} MB)")
        # slots: 2 callers per worker; a call holds its slot ~STAY_MS + set-up
        slots_cap = math.floor(plan.workers * 2 * 0.9 / (STAY_MS / 1000 + 0.3))
        cap = min(plan.node_cap, slots_cap)
        say(f"phase 2: node ramp, answer-only calls, {plan.step_s:g} s per step, up to {cap:g} calls/s "
            f"({plan.workers * 2} caller slots)")
        steps, best = find_limit(_step(node.sip_port, plan.step_s, lambda r: plan.workers * 4),
                                 first=plan.node_first, cap=cap, refine=plan.refine,
                                 resolution=max(1.0, plan.node_first / 2), label="  node ")
        result["node_ramp"] = {"steps": [s.to_dict() for s in steps], "max_clean_cps": best,
                               "limited_by": what_limits(steps, best, cap, f"the node's {plan.workers * 2} caller slots")}
        say(f"  node: highest clean rate {best:g} calls/s; limit {result['node_ramp']['limited_by']}")
    finally:
        node.stop()
    say(f"phase 3: ceiling ramp, Kamailio (-m {shm_mb}) in front of a SIPp UAS, same call shape")
    ceiling = _ceiling(plan, shm_mb)
    if ceiling is not None:
        c_steps, c_best = ceiling
        result["ceiling_ramp"] = {"steps": [s.to_dict() for s in c_steps], "max_clean_cps": c_best,
                                  "kamailio_shm_mb": shm_mb,
                                  "limited_by": what_limits(c_steps, c_best, plan.ceiling_cap, "the bench's cap")}
        say(f"  ceiling: limit {result['ceiling_ramp']['limited_by']}")
        ratio = best / c_best if c_best else 0.0
        result["ratio_to_ceiling"] = round(ratio, 3)
        # a ramp that ran into its cap found no limit: the ratio is then a bound, not a measurement
        node_capped = not any(not s.clean for s in steps)
        ceiling_capped = not any(not s.clean for s in c_steps)
        result["ratio_is"] = ("a measurement" if not node_capped and not ceiling_capped else
                              "a lower bound (the node ramp hit its cap)" if not ceiling_capped else
                              "an upper bound (the ceiling ramp hit its cap)" if not node_capped else
                              "no measurement (both ramps hit their caps)")
        say(f"highest clean rate: node {best:g} calls/s, ceiling {c_best:g} calls/s; ratio {ratio:.2f} (goal >= 0.5), "
            f"{result['ratio_is']}")
    else:
        result["ceiling_ramp"] = None
        say("kamailio not found: no ceiling ramp")
    conc = result["concurrent"]
    result["goals"] = {
        "ratio_to_ceiling": {"value": result.get("ratio_to_ceiling"), "goal": ">= 0.5",
                             "met": (result.get("ratio_to_ceiling") or 0) >= 0.5},
        # judged on the RSS sum (the definition); the PSS sum is given beside it, not judged
        "memory_per_held_caller_mb": {"value": conc["memory_per_held_caller_mb"], "goal": "<= 12 (RSS-sum)",
                                      "pss_sum": conc["pss_per_held_caller_mb"],
                                      "met": conc["memory_per_held_caller_mb"] <= 12},
        "held_callers": {"value": conc["ok"], "goal": f"{plan.held}, 0 failed",
                         "met": conc["failed"] == 0 and conc["ok"] >= plan.held},
    }
    for name, g in result["goals"].items():
        say(f"goal {name}: {g['value']} (goal {g['goal']}) {'met' if g['met'] else 'NOT met'}")
    result["goal_met"] = all(g["met"] for g in result["goals"].values())
    emit(result, as_json)
    return 0
