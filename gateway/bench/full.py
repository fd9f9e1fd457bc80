"""``handoff122 bench full``: the whole call path at its limit, and whether it still sounds right.

SIPp callers dial 122 through the node's front door and press a real IVR path with RFC 4733 key
presses (police ``1 1``, rescue ``1 2 2``, review ``1 2 1 2 2 1``, determination ``1 2 1 2 2 2 1``,
query ``2``, claim ``3``, in turn); the IVR routes them, the ACD queues them and offers them to seats
(hundreds of seat accounts on a few SIPp UAS processes); the seat answers, the caller sends a test
tone, talks for a set time and hangs up.

1. Ramp: the call rate rises step by step (``gateway.bench.ramp``) until a step fails: more than
   0.1 % of its calls failed or never reached a seat, set-up p99 over 1 s, a call routed to the
   wrong skill, or the audio a sample of seats received had jitter p99 over 20 ms or loss over
   0.5 %.  Each step reports set-up, IVR and hand-off latencies, the concurrency it implied, and
   CPU and memory of every process kind of the node.
2. Soak: the highest clean rate held for 10 minutes (1 with --quick): no lost call, RSS growth
   under 5 %.
3. Held: 256 callers (--quick: 8) bridged to seats at once (512 legs), audio measured the same way.

Latencies come from the node's own log (call_started, dtmf, ivr_done, offer, bridged) and from the
seats' SIPp log (the 200 OK's time), both on this machine's clock.
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.bench.node_log import CallJourney, NodeLog
from gateway.bench.processes import NodeSampler, memory_now, per_held_caller
from gateway.bench.ramp import Step, find_limit, pct, rounded, what_limits
from gateway.bench.rtp_pcap import path_captures
from gateway.bench.rtp_probe import RtpProbe, Stream, audio_figures
from gateway.bench.runner import NodeProcess, SippRun, emit, say, sipp
from gateway.bench.seat_farm import SCENARIOS, Answer, SeatFarm
from gateway.logs import configure_logging

#: The IVR paths the callers press (DOMAIN.md's default flow) and where each must end.
PATHS: dict[str, tuple[str, str]] = {
    "police": ("1 1", "police_dispatch"),
    "rescue": ("1 2 2", "rescue"),
    "review": ("1 2 1 2 2 1", "online_review"),
    "determination": ("1 2 1 2 2 2 1", "online_determination"),
    "query": ("2", "accident_query"),
    "claim": ("3", "insurance_claim"),
}
MAX_JITTER_P99_MS = 20.0
MAX_LOSS_PCT = 0.5
MAX_RSS_GROWTH_PCT = 5.0
TONE = re.compile(r"TONE (\S+) ([\d.]+) ([\d.]+)")


@dataclass(frozen=True)
class Plan:
    talk_s: float
    step_s: float
    soak_s: float
    first_rate: float
    cap: float
    refine: int
    resolution: float
    workers: int
    seats: int
    uas: int
    held: int
    held_s: float
    first_ms: int = 800
    gap_ms: int = 500
    settle_ms: int = 1500
    probe_share: float = 0.1
    wrap_up_s: float = 1.0
    progress_s: float = 30.0


FULL = Plan(talk_s=20, step_s=50, soak_s=600, first_rate=2, cap=16, refine=2, resolution=1, workers=200,
            seats=480, uas=4, held=256, held_s=30)
QUICK = Plan(talk_s=3, step_s=8, soak_s=60, first_rate=1, cap=2, refine=0, resolution=1, workers=10,
             seats=40, uas=2, held=8, held_s=8, probe_share=0.25, progress_s=15)


def _paths_xml(captures: dict[str, tuple[list[Path], Path]], plan: Plan) -> str:
    """SIPp branches, one per IVR path: the injection file's field0 picks the branch."""
    names = list(PATHS)
    out = ["  <nop><action>"]
    out += [f'    <test assign_to="is{i}" variable="path" compare="equal" value="{i}"/>' for i in range(len(names))]
    out.append("  </action></nop>")
    out += [f'  <nop next="path{i}" test="is{i}"/>' for i in range(len(names))]
    out.append('  <nop next="talk"/>')
    for i, name in enumerate(names):
        presses, tone = captures[name]
        out.append(f'  <label id="path{i}"/>')
        for pcap in presses:
            out.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
            out.append(f'  <pause milliseconds="{plan.gap_ms}"/>')
        out.append(f'  <pause milliseconds="{plan.settle_ms}"/>')
        out.append('  <nop><action><gettimeofday assign_to="s,us"/><log message="TONE [field1] [$s] [$us]"/>'
                   f'<exec play_pcap_audio="{tone}"/></action></nop>')
        out.append('  <nop next="talk"/>')
    return "\n".join(out)


def caller_scenario(workdir: Path, plan: Plan, talk_s: float) -> Path:
    captures = {name: path_captures(workdir / "pcap", name, keys, gap_ms=plan.gap_ms)
                for name, (keys, _) in PATHS.items()}
    text = (SCENARIOS / "uac_122_path.xml").read_text()
    text = (text.replace("@PATHS@", _paths_xml(captures, plan)).replace("@FIRST@", str(plan.first_ms))
            .replace("@TALK@", str(int(talk_s * 1000))))
    path = workdir / f"caller-{int(talk_s * 1000)}.xml"
    path.write_text(text)
    return path


def call_seconds(plan: Plan, talk_s: float) -> float:
    """How long one call lives, on average over the paths (for sizing and implied concurrency)."""
    presses = statistics.fmean(len(k.split()) for k, _ in PATHS.values())
    return (plan.first_ms + presses * plan.gap_ms + plan.settle_ms) / 1000 + talk_s + 0.2


class Bench:
    """One node, its seats, the RTP probe, and the runs against them."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.probe = RtpProbe()
        self.farm = SeatFarm(seats=plan.seats, uas_processes=plan.uas, probe_share=plan.probe_share,
                             probe_port=self.probe.port)
        seats_file = self.farm.start(workdir)
        self.caller_xml = caller_scenario(workdir, plan, plan.talk_s)
        say(f"bench full: starting a node with {plan.workers} media workers ({plan.workers * 2} callers), "
            f"{plan.seats} seats on {plan.uas} SIPp UAS + 1 probe UAS")
        t0 = time.monotonic()
        self.node = NodeProcess(workers=plan.workers, env={
            "HANDOFF_ANSWER_DELAY_S": "0", "HANDOFF_LOG_LEVEL": "INFO", "HANDOFF_WRAP_UP_S": str(plan.wrap_up_s)},
            args=["--seats", str(seats_file)]).start(timeout=900)
        say(f"  node up in {time.monotonic() - t0:.0f} s (SIP 127.0.0.1:{self.node.sip_port})")
        assert self.node.proc is not None
        self.root = self.node.proc.pid
        self.log = NodeLog(self.node.log)
        self.runs = 0

    def stop(self) -> None:
        self.node.stop()
        self.farm.stop()
        self.probe.stop()

    # -- one run of callers -------------------------------------------------------------------
    def run(self, rate: float, seconds: float, scenario: Path, label: str, talk_s: float,
            snapshot_at: float | None = None) -> dict[str, Any]:
        """Offer ``rate`` calls/s for ``seconds``, wait for every call to end, and collect what
        SIPp, the node's log, the seats and the probe saw; ``snapshot_at`` seconds in, the node's
        memory with PSS (``memory_while_held``)."""
        self.runs += 1
        calls = max(1, round(rate * seconds))
        inf = self.workdir / f"callers-{self.runs}.csv"
        names = list(PATHS)
        inf.write_text("SEQUENTIAL\n" + "".join(f"{i % len(names)};139{self.runs:02d}{i:06d};\n"
                                                for i in range(calls)))
        lifetime = call_seconds(self.plan, talk_s)
        self.log.mark()
        self.probe.reset()
        sampler = NodeSampler(self.root)
        box: dict[str, SippRun] = {}

        def callers() -> None:
            try:
                box["run"] = sipp(self.node.sip_port, scenario, calls=calls, rate=rate,
                                  limit=int(rate * lifetime * 2) + 50, timeout=seconds + lifetime + 90,
                                  extra=["-inf", str(inf), "-trace_rtt", "-rtt_freq", "1", "-trace_logs",
                                         "-trace_err"])
            except (OSError, subprocess.SubprocessError) as e:  # SIPp hung or could not start: every call failed
                box["run"] = SippRun(0, calls, 0.0, -1, f"sipp: {e}", workdir=tempfile.mkdtemp(prefix="h122-sipp-"))

        t = threading.Thread(target=callers)
        t.start()
        started = time.monotonic()
        snapshot: dict[str, Any] | None = None
        while t.is_alive():
            wait = self.plan.progress_s
            if snapshot_at is not None and snapshot is None:
                wait = min(wait, max(0.0, started + snapshot_at - time.monotonic()))
            t.join(wait)
            if t.is_alive() and snapshot_at is not None and snapshot is None \
                    and time.monotonic() >= started + snapshot_at:
                snapshot = memory_now(self.root)
                continue
            if t.is_alive():
                journeys = self.log.read()
                live = sum(1 for j in journeys.values() if j.ended is None)
                talking = sum(1 for j in journeys.values() if j.ended is None and j.bridged)
                mem = memory_now(self.root, with_pss=False)
                say(f"  {label}: {time.monotonic() - started:.0f}/{seconds + lifetime:.0f} s, "
                    f"{len(journeys)} calls so far, {live} live ({talking} talking to seats), "
                    f"node RSS {mem['rss_mb_total']} MB")
        run = box["run"]
        # SIPp is done once every BYE was answered; give the node's log a moment to show the ends.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            journeys = self.log.read()
            if all(j.ended is not None for j in journeys.values()):
                break
            time.sleep(0.5)
        processes = sampler.stop()
        figures = self._figures(run, rate, seconds, calls, lifetime, processes, sampler)
        if snapshot is not None:
            figures["memory_while_held"] = snapshot
        return figures

    def _figures(self, run: SippRun, rate: float, seconds: float, calls: int, lifetime: float,
                 processes: dict[str, Any], sampler: NodeSampler) -> dict[str, Any]:
        journeys = self.log.read()
        answers = self.farm.answers()
        tones = _tones(Path(run.workdir))
        expected = {f"139{self.runs:02d}{i:06d}": PATHS[list(PATHS)[i % len(PATHS)]][1] for i in range(calls)}
        mine = [j for j in journeys.values() if j.caller in expected]
        bridged = [j for j in mine if j.bridged is not None]
        wrong = [j for j in mine if j.skill and j.skill != expected[j.caller]]
        never_bridged = len(mine) - len(bridged)
        setup = run.response_times_ms()
        ivr_s = [j.routed - j.started for j in mine if j.routed and j.started]
        reaction = [(j.routed - j.digits[-1][0]) * 1000 for j in mine if j.routed and j.digits]
        handoff = [j.handoff_ms for j in bridged if j.handoff_ms is not None]
        seat_ok_to_bridged = [(j.bridged - answers[j.call_id].at) * 1000 for j in bridged
                              if j.call_id in answers and j.bridged is not None]
        peak_callers, peak_legs = _peaks(mine)
        life = [j.ended - j.started for j in mine if j.ended and j.started]
        talk = [j.ended - j.bridged for j in bridged if j.ended and j.bridged]  # the seat leg's life
        mean_life = statistics.fmean(life) if life else lifetime
        shutil.rmtree(run.workdir, ignore_errors=True)
        streams = self.probe.snapshot()
        audio = audio_figures(streams)
        audio["tone_delay_ms"] = _tone_delays(streams, answers, mine, tones)
        figures = {
            "calls": calls, "sipp_ok": run.ok_calls, "sipp_failed": run.failed_calls,
            "node_calls": len(mine), "reached_seat": len(bridged), "never_reached_seat": never_bridged,
            "wrong_skill": len(wrong),
            "by_path": {name: sum(1 for j in bridged if j.skill == skill) for name, (_, skill) in PATHS.items()},
            "call_seconds_mean": round(mean_life, 2),
            "callers_concurrent_implied": round(rate * mean_life, 1),
            "legs_concurrent_implied": round(rate * (mean_life + (statistics.fmean(talk) if talk else 0.0)), 1),
            "callers_concurrent_peak": peak_callers, "legs_concurrent_peak": peak_legs,
            "setup_ms": _dist(setup),
            "ivr_answer_to_routed_s": _dist(ivr_s, 2),
            "ivr_last_key_to_routed_ms": _dist(reaction),
            "handoff_offer_to_bridged_ms": _dist(handoff),
            "handoff_seat_200_to_bridged_ms": _dist(seat_ok_to_bridged),
            "audio": audio,
            "processes": processes,
            "node_warnings": dict(self.log.problems),
            "node_warning_examples": dict(self.log.problem_examples),
            "sipp_errors": run.first_errors() if run.failed_calls else [],
            "_rss_series": sampler.rss_series,
        }
        figures["_step"] = Step(target_cps=rate, seconds=seconds, ok=max(0, run.ok_calls - never_bridged),
                                failed=run.failed_calls + never_bridged, achieved_cps=run.answered_rate(), setup_ms=setup,
                                problems=_problems(figures, len(wrong)))
        return figures

    def step(self, rate: float) -> Step:
        figures = self.run(rate, self.plan.step_s, self.caller_xml, f"{rate:g} calls/s", self.plan.talk_s)
        step: Step = figures.pop("_step")
        figures.pop("_rss_series")
        step.extra = figures
        _say_step(figures)
        return step

    def call_records(self, newest: int = 500) -> dict[str, Any]:
        """What the node stored: its newest call records (each fetched whole, with its event
        timeline), and how many show the seat's CONNECT."""
        assert self.node.data_dir is not None
        try:
            out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "supervisor",
                                  "--data-dir", str(self.node.data_dir)], capture_output=True, text=True, check=True,
                                 timeout=60)
            token = out.stdout.strip().splitlines()[-1]
            with httpx.Client(base_url=f"http://127.0.0.1:{self.node.api_port}", timeout=30,
                              headers={"Authorization": f"Bearer {token}"}) as api:
                listed = api.get("/api/v1/calls", params={"limit": newest})
                listed.raise_for_status()
                records = []
                for c in listed.json():
                    one = api.get(f"/api/v1/calls/{c['id']}")
                    one.raise_for_status()
                    records.append(one.json())
        except (subprocess.SubprocessError, httpx.HTTPError, ValueError, IndexError, KeyError) as e:
            return {"error": f"{e.__class__.__name__}: {e}"[:300]}
        connected = [c for c in records if any(_kind(e) == "CONNECT" for e in c.get("events") or [])]
        return {"checked": len(records), "connected": len(connected),
                "with_seat": sum(1 for c in records if c.get("seat_id")),
                "skills": sorted({str((c.get("ivr") or {}).get("skill")) for c in connected})}


def _kind(event: Any) -> str:
    if isinstance(event, dict):
        return str(event.get("kind") or event.get("type") or event.get("event") or "")
    return str(event)


def _problems(f: dict[str, Any], wrong: int) -> list[str]:
    out = []
    if wrong:
        out.append(f"{wrong} calls routed to the wrong skill")
    a = f["audio"]
    if not a["streams"]:
        out.append("no audio sampled (no probe seat took a call)")
    if a["jitter_ms_p99"] is not None and a["jitter_ms_p99"] > MAX_JITTER_P99_MS:
        out.append(f"jitter p99 {a['jitter_ms_p99']} ms > {MAX_JITTER_P99_MS:g} ms")
    if a["loss_pct"] is not None and a["loss_pct"] > MAX_LOSS_PCT:
        out.append(f"audio loss {a['loss_pct']} % > {MAX_LOSS_PCT:g} %")
    return out


def _say_step(f: dict[str, Any]) -> None:
    a, p = f["audio"], f["processes"]
    say(f"    reached a seat {f['reached_seat']}/{f['calls']} (wrong skill {f['wrong_skill']}), peak "
        f"{f['callers_concurrent_peak']} callers / {f['legs_concurrent_peak']} legs; set-up p99 "
        f"{f['setup_ms']['p99']} ms; IVR last key->routed p99 {f['ivr_last_key_to_routed_ms']['p99']} ms; "
        f"seat 200->bridged p99 {f['handoff_seat_200_to_bridged_ms']['p99']} ms")
    say(f"    audio at {a['streams']} sampled seats: jitter p50/p99 {a['jitter_ms_p50']}/{a['jitter_ms_p99']} ms, "
        f"loss {a['loss_pct']} %, tone delay p50 {a['tone_delay_ms']['p50']} ms; CPU (cores) front door "
        f"{p['front_door']['cpu_core_share']}, workers {p['workers']['cpu_core_share']}, control "
        f"{p['control']['cpu_core_share']}; RSS peak {p['rss_mb_peak_total']} MB")


def _dist(values: list[float], digits: int = 2) -> dict[str, Any]:
    return {"n": len(values), "p50": rounded(pct(values, 0.5), digits), "p90": rounded(pct(values, 0.9), digits),
            "p99": rounded(pct(values, 0.99), digits), "max": rounded(max(values), digits) if values else None}


def _peaks(journeys: list[CallJourney]) -> tuple[int, int]:
    """Most callers on the node at once, and most legs (callers + seat legs) at once."""
    events: list[tuple[float, int, int]] = []
    for j in journeys:
        if j.started is None:
            continue
        end = j.ended if j.ended is not None else math.inf
        events += [(j.started, 1, 0), (end, -1, 0)]
        if j.bridged is not None:
            events += [(j.bridged, 0, 1), (end, 0, -1)]
    callers = seats = peak_c = peak_l = 0
    for _, dc, ds in sorted(events, key=lambda e: (e[0], e[1] + e[2])):
        callers += dc
        seats += ds
        peak_c, peak_l = max(peak_c, callers), max(peak_l, callers + seats)
    return peak_c, peak_l


def _tones(workdir: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for log in workdir.glob("*_logs.log"):
        for m in TONE.finditer(log.read_text(errors="replace")):
            out[m.group(1)] = float(m.group(2)) + float(m.group(3)) / 1e6
    return out


def _tone_delays(streams: list[Stream], answers: dict[str, Answer], journeys: list[CallJourney],
                 tones: dict[str, float]) -> dict[str, Any]:
    """Caller's tone sent (SIPp's clock) -> first loud frame at the probe seat (kernel arrival time):
    the caller's audio through the node's bridge."""
    by_call = {j.call_id: j for j in journeys}
    delays = []
    for cid, ans in answers.items():
        j = by_call.get(cid)
        if not ans.probe or j is None or j.caller not in tones:
            continue
        candidates = [s for s in streams if s.src_port == ans.node_rtp_port and s.first_arrival >= ans.at - 1.0]
        if not candidates:
            continue
        stream = min(candidates, key=lambda s: s.first_arrival)
        sent = tones[j.caller]
        if stream.tone_at is not None and stream.tone_at >= sent:
            delays.append((stream.tone_at - sent) * 1000)
    return _dist(delays)


def _rss_growth(sampler_series: list[tuple[float, int]], steady_from: float, until: float) -> dict[str, Any]:
    """Mean node RSS in the first and in the last window of the steady part of a soak."""
    window = max(5.0, min(60.0, (until - steady_from) / 3))
    first = [r for t, r in sampler_series if steady_from <= t <= steady_from + window]
    last = [r for t, r in sampler_series if until - window <= t <= until]
    if not first or not last:
        return {"growth_pct": None}
    a, b = statistics.fmean(first), statistics.fmean(last)
    return {"first_window_mb": round(a / 2**20, 1), "last_window_mb": round(b / 2**20, 1),
            "window_s": round(window), "growth_pct": round(100 * (b - a) / a, 2)}


def main(as_json: bool = False, quick: bool = False) -> int:
    return run(QUICK if quick else FULL, as_json=as_json, quick=quick)


def run(plan: Plan, *, as_json: bool = False, quick: bool = False) -> int:
    """The whole benchmark with one plan (sizes and durations); the tests use a tiny one."""
    configure_logging("ERROR", process_name="bench")
    lifetime = call_seconds(plan, plan.talk_s)
    cap = min(plan.cap, math.floor(plan.workers * 2 * 0.9 / lifetime * 10) / 10)
    result: dict[str, Any] = {"bench": "full", "quick": quick, "talk_s": plan.talk_s, "step_s": plan.step_s,
                              "workers": plan.workers, "seats": plan.seats,
                              "paths": {k: v[0] for k, v in PATHS.items()}}
    with tempfile.TemporaryDirectory(prefix="h122-bench-full-") as d:
        bench = Bench(plan, Path(d))
        try:
            say(f"ramp: calls press an IVR path, reach a seat, talk {plan.talk_s:g} s; each step offers calls for "
                f"{plan.step_s:g} s (up to {cap:g} calls/s: the node's {plan.workers * 2} caller slots)")
            steps, best = find_limit(bench.step, first=plan.first_rate, cap=cap, refine=plan.refine,
                                     resolution=plan.resolution, label="  ")
            result["steps"] = [s.to_dict() for s in steps]
            result["max_clean_cps"] = best
            result["limited_by"] = what_limits(steps, best, cap, f"the node's {plan.workers * 2} caller slots")
            top = next((s for s in steps if s.target_cps == best and s.clean), None)
            if top is not None:
                result["at_max"] = top.to_dict()
            say(f"highest clean rate: {best:g} calls/s; limit {result['limited_by']}")
            rate = best or plan.first_rate
            say(f"soak: {rate:g} calls/s for {plan.soak_s:g} s")
            soak = bench.run(rate, plan.soak_s, bench.caller_xml, "soak", plan.talk_s)
            soak_step: Step = soak.pop("_step")
            soak["rss"] = _rss_growth(soak.pop("_rss_series"), lifetime + 5, plan.soak_s)
            soak["lost"] = soak_step.failed
            soak["rate_cps"] = rate
            soak["ok"] = soak["lost"] == 0 and (soak["rss"]["growth_pct"] or 0) < MAX_RSS_GROWTH_PCT
            soak.update({k: v for k, v in soak_step.to_dict().items() if k in ("failed_pct", "setup_ms_p99")})
            result["soak"] = soak
            say(f"  soak: {soak['lost']} lost of {soak['calls']}, RSS growth {soak['rss']['growth_pct']} % -> "
                f"{'ok' if soak['ok'] else 'NOT ok'}")
            result["held"] = _held(bench, plan)
            result["call_records"] = bench.call_records()
        finally:
            bench.stop()
    result["goals"] = _goals(result)
    for name, g in result["goals"].items():
        say(f"goal {name}: {g['value']} (goal {g['goal']}) {'met' if g['met'] else 'NOT met'}")
    emit(result, as_json)
    return 0


def _held(bench: Bench, plan: Plan) -> dict[str, Any]:
    """``plan.held`` callers at once, every one bridged to a seat, held ``plan.held_s`` seconds."""
    rate = min(20.0, max(2.0, plan.held / 10))
    arrive_s = plan.held / rate
    talk = plan.held_s + arrive_s
    say(f"held: {plan.held} callers ({plan.held * 2} legs) bridged to seats at once, {plan.held_s:g} s together")
    scenario = caller_scenario(bench.workdir, plan, talk)
    # PSS once, mid-hold: every caller arrived (+ the IVR and the hand-off), half the hold to go
    f = bench.run(rate, arrive_s, scenario, "held", talk, snapshot_at=arrive_s + call_seconds(plan, 0) + plan.held_s / 2)
    step: Step = f.pop("_step")
    f.pop("_rss_series", None)
    mem = f["processes"]
    f["callers"] = plan.held
    f["failed"] = step.failed
    f.update(per_held_caller(mem["rss_mb_peak_total"], f.get("memory_while_held") or {}, f["callers_concurrent_peak"]))
    _say_step(f)
    pss = (f.get("memory_while_held") or {}).get("pss_mb_total")
    say(f"  memory per held caller: {f['memory_per_held_caller_mb']} MB RSS-sum (node RSS {mem['rss_mb_peak_total']} MB"
        f" / {f['callers_concurrent_peak']} callers), {f['pss_per_held_caller_mb']} MB PSS-sum (node PSS {pss} MB)")
    return f


def _goals(r: dict[str, Any]) -> dict[str, Any]:
    g: dict[str, Any] = {}
    g["full_path_max_clean_cps"] = {"value": r.get("max_clean_cps"), "goal": ">= 10", "met": (r.get("max_clean_cps") or 0) >= 10}
    held = r.get("held") or {}
    a = held.get("audio") or {}
    ok_audio = (a.get("jitter_ms_p99") is not None and a["jitter_ms_p99"] <= MAX_JITTER_P99_MS
                and (a.get("loss_pct") or 0) <= MAX_LOSS_PCT)
    g["held_256_audio"] = {"value": f"{held.get('callers_concurrent_peak')} callers, jitter p99 {a.get('jitter_ms_p99')} ms, "
                                    f"loss {a.get('loss_pct')} %",
                           "goal": "256 callers, <= 20 ms, <= 0.5 %",
                           "met": bool(ok_audio and (held.get("callers_concurrent_peak") or 0) >= 256)}
    top = r.get("at_max") or {}
    p99 = (top.get("handoff_seat_200_to_bridged_ms") or {}).get("p99")
    g["handoff_seat_200_to_bridged_p99_ms"] = {
        "value": f"{p99} ms with {top.get('legs_concurrent_peak')} legs at once", "goal": "<= 5 ms",
        "met": p99 is not None and p99 <= 5.0}
    soak = r.get("soak") or {}
    g["soak"] = {"value": f"{soak.get('lost')} lost, RSS growth {(soak.get('rss') or {}).get('growth_pct')} %",
                 "goal": "0 lost, < 5 %", "met": bool(soak.get("ok"))}
    return g
