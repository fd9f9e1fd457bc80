"""``handoff122 bench all --out DIR``: every benchmark, then one report people can read.

Each benchmark runs in its own process (``handoff122 bench NAME --json``), so one benchmark's
node, threads or memory cannot colour the next one's figures; its progress lines pass straight
through.  The last JSON line of each is kept as ``DIR/<name>.json``, and ``DIR/report.md`` gets one
table per benchmark, every figure with what it measures (from where to where), plus PNG plots
(matplotlib: the rate ramps with failures and set-up latency, jitter under load).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.bench.runner import say

ORDER = ("sip", "full", "ivr", "routing", "handoff", "api", "faults", "cluster")
Row = tuple[str, Any, str]
KIND_LABELS = (("front_door", "Kamailio"), ("workers", "media workers"), ("control", "control + supervisor"), ("api", "API process"))


def run_one(name: str, quick: bool) -> tuple[dict[str, Any] | None, int, float, str]:
    """Run one benchmark in a child process; returns (its JSON, exit code, seconds, stdout tail)."""
    cmd = [sys.executable, "-m", "gateway.cli", "bench", name, "--json", *(["--quick"] if quick else [])]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, bufsize=1)
    assert proc.stdout is not None
    lines: list[str] = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if not line.startswith("{"):
            print(f"  [{name}] {line}", end="", file=sys.stderr, flush=True)
    rc = proc.wait()
    figures = None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                figures = json.loads(line)
                break
            except ValueError:
                continue
    return figures, rc, time.monotonic() - t0, "\n".join(ln for ln in lines[-15:] if not ln.startswith("{"))


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem_gb = round(kb / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "memory_gb": mem_gb,
            "kernel": platform.release(), "python": platform.python_version(),
            "load_at_start": [round(x, 2) for x in load] if load else None,
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def run_all(benches: dict[str, tuple[str, str]], *, out: Path, quick: bool, as_json: bool) -> int:
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in ORDER if n in benches] + sorted(n for n in benches if n not in ORDER)
    where = machine()
    results: dict[str, Any] = {}
    say(f"bench all: {', '.join(names)}{' (quick)' if quick else ''}; report in {out}/report.md")
    for i, name in enumerate(names, 1):
        say(f"[{i}/{len(names)}] bench {name}")
        figures, rc, seconds, tail = run_one(name, quick)
        results[name] = {"figures": figures, "returncode": rc, "seconds": round(seconds, 1), "tail": tail}
        if figures is not None:
            (out / f"{name}.json").write_text(json.dumps(figures, indent=1, ensure_ascii=False))
        say(f"[{i}/{len(names)}] bench {name}: {'done' if figures else 'NO FIGURES'} in {seconds:.0f} s (exit {rc})")
    plots = make_plots(results, out)
    report = out / "report.md"
    report.write_text(render(results, where, plots, quick), encoding="utf-8")
    say(f"report: {report}")
    if as_json:
        print(json.dumps({"bench": "all", "out": str(out), "machine": where,
                          "benches": {n: {"returncode": r["returncode"], "seconds": r["seconds"],
                                          "figures": r["figures"] is not None} for n, r in results.items()}}))
    return 0 if all(r["figures"] is not None for r in results.values()) else 1


# -- tables -------------------------------------------------------------------------------------

def _get(d: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _rows_sip(f: dict[str, Any]) -> list[Row]:
    c = f.get("concurrent") or {}
    p = c.get("processes") or {}
    rows: list[Row] = [
        ("answer-only max clean CPS", _get(f, "node_ramp.max_clean_cps"),
         "highest step rate with <= 0.1 % failed and set-up p99 <= 1 s; SIPp caller -> Kamailio -> media worker "
         f"answers, prompt, BYE after 1 s ({f.get('step_s')} s per step)"),
        ("ceiling max clean CPS", _get(f, "ceiling_ramp.max_clean_cps"),
         "same call shape and criteria, SIPp caller -> Kamailio (same shared memory) -> SIPp UAS, no media"),
        ("ratio_to_ceiling", f.get("ratio_to_ceiling"),
         f"node max / ceiling max, both measured in this run; {f.get('ratio_is') or ''}"),
        ("node limited by", _get(f, "node_ramp.limited_by"), "the first failing step's reasons, or the ramp's cap"),
        ("ceiling limited by", _get(f, "ceiling_ramp.limited_by"), "the same for the ceiling ramp"),
        ("held callers ok / failed", f"{c.get('ok')} / {c.get('failed')}",
         f"{c.get('callers')} SIPp callers answered and held at once (prompt + recording)"),
        ("memory per held caller, RSS-sum (MB)", c.get("memory_per_held_caller_mb"),
         "the goal's measure: peak RSS of every node process (control, API, workers, Kamailio) / held callers; "
         "counts each shared page once per process mapping it"),
        ("memory per held caller, PSS-sum (MB)", c.get("pss_per_held_caller_mb"),
         "the same with PSS (shared pages split among the processes sharing them), mid-hold"),
        ("per media worker: RSS / PSS / USS (MB)", f"{_get(c, 'per_worker.rss_mb')} / {_get(c, 'per_worker.pss_mb')} / "
         f"{_get(c, 'per_worker.uss_mb')}", "one worker process holding its callers (USS: its private pages)"),
    ]
    for kind, label in KIND_LABELS:
        k = p.get(kind) or {}
        rows.append((f"{label}: CPU (cores) / RSS (MB)", f"{k.get('cpu_core_share')} / {k.get('rss_mb_peak')}",
                     f"{k.get('processes')} process(es) while the callers were held; CPU as a share of one core"))
    return rows


def _rows_full(f: dict[str, Any]) -> list[Row]:
    top = f.get("at_max") or {}
    soak, held = f.get("soak") or {}, f.get("held") or {}
    rows: list[Row] = [
        ("full-path max clean CPS", f.get("max_clean_cps"),
         "highest step with <= 0.1 % failed or unrouted, set-up p99 <= 1 s, right skills, seat audio jitter "
         f"p99 <= 20 ms and loss <= 0.5 %; calls press an IVR path, reach a SIPp seat, talk {f.get('talk_s')} s"),
        ("limited by", f.get("limited_by"), "the first failing step's reasons, or the ramp's cap"),
        ("callers / legs at once (peak)", f"{top.get('callers_concurrent_peak')} / {top.get('legs_concurrent_peak')}",
         "at the max clean step, from the node's log (call_started..call_ended; bridged..ended adds a seat leg)"),
        ("set-up p50 / p99 (ms)", f"{_get(top, 'setup_ms.p50')} / {_get(top, 'setup_ms.p99')}",
         "SIPp caller's INVITE -> 200 OK, through Kamailio"),
        ("IVR answer -> routed p50 / p99 (s)",
         f"{_get(top, 'ivr_answer_to_routed_s.p50')} / {_get(top, 'ivr_answer_to_routed_s.p99')}",
         "node log call_started -> ivr_done: mostly the callers' own key timing (0.8 s, then 0.5 s a key)"),
        ("IVR last key -> routed p50 / p99 (ms)",
         f"{_get(top, 'ivr_last_key_to_routed_ms.p50')} / {_get(top, 'ivr_last_key_to_routed_ms.p99')}",
         "node log dtmf (last key) -> ivr_done; log timestamps have 1 ms resolution"),
        ("hand-off seat 200 -> bridged p50 / p99 (ms)",
         f"{_get(top, 'handoff_seat_200_to_bridged_ms.p50')} / {_get(top, 'handoff_seat_200_to_bridged_ms.p99')}",
         "SIPp seat takes the INVITE and sends 200 (its clock) -> node log bridged (1 ms resolution)"),
        ("hand-off offer -> bridged p50 / p99 (ms)",
         f"{_get(top, 'handoff_offer_to_bridged_ms.p50')} / {_get(top, 'handoff_offer_to_bridged_ms.p99')}",
         "the node's own figure: ACD offer -> seat leg INVITE -> 200 -> audio bridged"),
        ("seat audio jitter p50 / p99 (ms)", f"{_get(top, 'audio.jitter_ms_p50')} / {_get(top, 'audio.jitter_ms_p99')}",
         "RFC 3550 inter-arrival jitter of the RTP a sample of seats received from the node (kernel arrival time)"),
        ("seat audio loss (%)", _get(top, "audio.loss_pct"), "from the RTP sequence numbers at the sampled seats"),
        ("tone delay p50 / p99 (ms)", f"{_get(top, 'audio.tone_delay_ms.p50')} / {_get(top, 'audio.tone_delay_ms.p99')}",
         "SIPp caller starts its test tone -> first tone frame arrives at the sampled seat (through the bridge)"),
    ]
    for kind, label in KIND_LABELS:
        k = _get(top, f"processes.{kind}") or {}
        rows.append((f"{label}: CPU (cores) / RSS (MB)", f"{k.get('cpu_core_share')} / {k.get('rss_mb_peak')}",
                     f"{k.get('processes')} process(es), at the max clean step; CPU as a share of one core"))
    rows += [
        ("soak: rate, lost, RSS growth", f"{soak.get('rate_cps')} CPS, {soak.get('lost')} lost, "
         f"{_get(soak, 'rss.growth_pct')} %", "the max clean rate held for the soak; lost = failed or never reached "
         "a seat; RSS growth = node RSS, first vs last steady window"),
        ("held callers bridged (legs)", f"{held.get('callers_concurrent_peak')} ({held.get('legs_concurrent_peak')})",
         "callers talking to seats at once, from the node's log"),
        ("held: jitter p50 / p99 (ms), loss (%)", f"{_get(held, 'audio.jitter_ms_p50')} / "
         f"{_get(held, 'audio.jitter_ms_p99')}, {_get(held, 'audio.loss_pct')}", "as above, while all were held"),
        ("held: memory per caller, RSS-sum (MB)", held.get("memory_per_held_caller_mb"),
         "the goal's measure: peak RSS of every node process / callers held"),
        ("held: memory per caller, PSS-sum (MB)", held.get("pss_per_held_caller_mb"),
         "the same with PSS (shared pages counted once), mid-hold"),
        ("call records with CONNECT", f"{_get(f, 'call_records.connected')} of {_get(f, 'call_records.checked')}",
         "the node's newest call records (API) that show the seat's CONNECT"),
    ]
    return rows


def _rows_ivr(f: dict[str, Any]) -> list[Row]:
    return [
        ("events/s", f.get("events_per_s"), f"IVR interpreter events per second, interpreter time only "
         f"({f.get('sessions')} scripted and random sessions of the default flow, in process)"),
        ("per-event latency p50 / p99 / max (µs)",
         f"{f.get('latency_us_p50')} / {f.get('latency_us_p99')} / {f.get('latency_us_max')}",
         "one key, prompt end or timeout -> the interpreter's actions (goal p99 < 50 µs)"),
    ]


def _rows_routing(f: dict[str, Any]) -> list[Row]:
    rows: list[Row] = [
        ("decisions/s", f.get("decisions_per_s"), f"ACD decisions per second, time inside the ACD only "
         f"({f.get('seats')} seats, {f.get('waiting_at_start')} waiting callers, mixed stream, in process)"),
        ("decision latency p50 / p99 / max (ms)", f"{f.get('p50_ms')} / {f.get('p99_ms')} / {f.get('max_ms')}",
         "one ACD call (enqueue, answer, ring-no-answer, ...) -> its events"),
    ]
    for backend, fig in (f.get("persistence") or {}).items():
        if not isinstance(fig, dict):
            continue
        if "throughput" not in fig:
            rows.append((f"persistence {backend}", fig.get("skipped") or fig.get("error"), ""))
            continue
        rows.append((f"persistence {backend}: events/s", _get(fig, "throughput.events_per_s"),
                     "ACD events written by the batched store, as fast as it can"))
        rows.append((f"persistence {backend}: crash-loss window (ms)", fig.get("crash_loss_window_ms"),
                     f"paced at {_get(fig, 'paced.rate_events_per_s')} events/s: longest append -> commit"))
    return rows


def _rows_handoff(f: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for key, label in (("sequential", "one caller at a time"), ("concurrent", "callers at once")):
        r = f.get(key) or {}
        rows.append((f"hand-off p50 / p99 (ms), {label}", f"{r.get('p50_ms')} / {r.get('p99_ms')}",
                     f"node log: ACD offer -> seat leg INVITE -> SIPp seat's 200 -> bridged; {r.get('calls')} calls, "
                     f"concurrency {r.get('concurrency')}"))
        rows.append((f"seat 200 -> bridged p50 / p99 (ms), {label}",
                     f"{_get(r, 'seat_200_to_bridged_ms.p50')} / {_get(r, 'seat_200_to_bridged_ms.p99')}",
                     "SIPp seat takes the INVITE and sends 200 (its clock) -> node log bridged (1 ms resolution)"))
        rows.append((f"lost, {label}", r.get("lost"), "callers that never reached a seat"))
    return rows


def _rows_api(f: dict[str, Any]) -> list[Row]:
    reads, live = f.get("reads") or {}, f.get("live") or {}
    return [
        ("API reads p50 / p99 (ms), saturation", f"{reads.get('p50_ms')} / {reads.get('p99_ms')}",
         f"client request -> response, {reads.get('concurrency')} concurrent clients from another process"),
        ("API reads/s at saturation", reads.get("requests_per_s"), "queues, calls and /metrics reads"),
        ("API reads p99 (ms), paced", _get(reads, "paced.p99_ms"),
         f"at {_get(reads, 'paced.rate_per_s')} requests/s (goal <= 50 ms)"),
        ("SIP set-up p50 / p99 (ms), no API load",
         f"{_get(live, 'setup_ms_quiet.p50')} / {_get(live, 'setup_ms_quiet.p99')}",
         f"INVITE -> 200 on a node with {live.get('live_calls')} callers talking to seats"),
        ("SIP set-up p50 / p99 (ms), API loaded",
         f"{_get(live, 'setup_ms_api_loaded.p50')} / {_get(live, 'setup_ms_api_loaded.p99')}",
         "the same, while another process reads the node's API"),
        ("SIP delayed by API load", live.get("sip_delayed"), "median shift > 5 ms or p99 doubled"),
        *_rows_fanout(f.get("fanout") or {}),
    ]


def _rows_fanout(fan: dict[str, Any]) -> list[Row]:
    if not fan:
        return []
    d = fan.get("delivery") or {}
    who = f"{d.get('connected')} WebSocket clients ({fan.get('consoles')} seat consoles, {fan.get('dashboards')} dashboards)"
    return [
        ("ACD event -> WebSocket client p50 / p99 (ms)", f"{_get(d, 'delay_ms.p50')} / {_get(d, 'delay_ms.p99')}",
         f"event's `at` in the control process -> arrival at each of {who}, another process; "
         f"{d.get('deliveries')} deliveries, calls at {fan.get('rate_cps')}/s (goal p99 <= 100 ms)"),
        ("resyncs / closed clients", f"{d.get('resyncs')} / {len(d.get('closed') or [])}",
         "clients that fell behind and were sent a fresh snapshot / were disconnected"),
        ("SIP set-up p50 / p99 (ms), no WebSocket clients",
         f"{_get(fan, 'setup_ms_without_clients.p50')} / {_get(fan, 'setup_ms_without_clients.p99')}",
         "SIPp INVITE -> 200 through the front door, callers pressing IVR paths to seats"),
        ("SIP set-up p50 / p99 (ms), with the clients",
         f"{_get(fan, 'setup_ms_with_clients.p50')} / {_get(fan, 'setup_ms_with_clients.p99')}",
         "the same calls while the clients follow the live events"),
        ("SIP set-up unchanged by the fan-out", fan.get("sip_unchanged"), "p99 within 2x or +5 ms"),
    ]


DESCRIPTIONS = {
    "decisions_per_s": "ACD decisions per second, time inside the ACD only",
    "wall_decisions_per_s": "ACD decisions per second including the bench's own bookkeeping",
    "p50_ms": "median latency", "p99_ms": "99th percentile latency", "max_ms": "worst latency",
    "events_per_s": "IVR interpreter events per second (interpreter time only)",
    "latency_us_p50": "one IVR event, median (microseconds)", "latency_us_p99": "one IVR event, p99 (microseconds)",
    "sequential.p50_ms": "hand-off ACD offer -> seat 200 -> bridged, one caller at a time, median",
    "sequential.p99_ms": "hand-off ACD offer -> seat 200 -> bridged, one caller at a time, p99",
    "concurrent.p50_ms": "hand-off offer -> bridged with many callers at once, median",
    "concurrent.p99_ms": "hand-off offer -> bridged with many callers at once, p99",
    "reads.p50_ms": "API read latency at saturation, median", "reads.p99_ms": "API read latency at saturation, p99",
    "reads.requests_per_s": "API reads per second at saturation",
    "live.sip_delayed": "did API load delay SIP set-up (INVITE -> 200) on a node with live calls",
}


def _rows_generic(f: dict[str, Any], prefix: str = "", depth: int = 0) -> list[Row]:
    rows: list[Row] = []
    for k, v in f.items():
        key = f"{prefix}{k}"
        if k in ("bench", "quick", "mix", "latencies", "persistence") or k.startswith("_"):
            continue
        if isinstance(v, dict) and depth < 2:
            rows += _rows_generic(v, key + ".", depth + 1)
        elif not isinstance(v, list):
            rows.append((key, v, DESCRIPTIONS.get(key, DESCRIPTIONS.get(k, ""))))
    return rows


TABLES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "sip": _rows_sip, "full": _rows_full, "ivr": _rows_ivr, "routing": _rows_routing, "handoff": _rows_handoff,
    "api": _rows_api}


def _steps_table(title: str, steps: list[dict[str, Any]]) -> list[str]:
    out = [f"\n{title}\n", "| offered CPS | ok | failed % | set-up p50 / p99 (ms) | jitter p99 (ms) | loss % | clean | why |",
           "|---|---|---|---|---|---|---|---|"]
    for s in steps:
        out.append(f"| {_fmt(s.get('target_cps'))} | {_fmt(s.get('ok'))} | {_fmt(s.get('failed_pct'))} | "
                   f"{_fmt(s.get('setup_ms_p50'))} / {_fmt(s.get('setup_ms_p99'))} | "
                   f"{_fmt(_get(s, 'audio.jitter_ms_p99'))} | {_fmt(_get(s, 'audio.loss_pct'))} | "
                   f"{_fmt(s.get('clean'))} | {'; '.join(s.get('why_failing') or [])} |")
    return out


def render(results: dict[str, Any], where: dict[str, Any], plots: list[str], quick: bool) -> str:
    lines = ["# handoff122 benchmark report", "",
             f"{where['date_utc']} on {where['host']}: {where['cpu']}, {where['cores']} cores, "
             f"{where['memory_gb']} GB, Linux {where['kernel']}, Python {where['python']}; load average at start "
             f"{where['load_at_start']}.{' **Quick run (smoke sizes): not figures to quote.**' if quick else ''}", ""]
    for name, r in results.items():
        f = r["figures"]
        lines += [f"## bench {name}", "", f"Ran {r['seconds']} s, exit {r['returncode']}.", ""]
        if f is None:
            lines += ["No figures (the benchmark printed no JSON). Its last lines:", "", "```", r["tail"], "```", ""]
            continue
        rows = TABLES.get(name, _rows_generic)(f)
        lines += ["| figure | value | what it measures |", "|---|---|---|"]
        lines += [f"| {a} | {_fmt(b).replace('|', '/')} | {c} |" for a, b, c in rows]
        if name == "sip":
            lines += _steps_table("Node ramp (answer-only):", _get(f, "node_ramp.steps") or [])
            lines += _steps_table("Ceiling ramp (Kamailio + SIPp UAS):", _get(f, "ceiling_ramp.steps") or [])
        if name == "full":
            lines += _steps_table("Full-path ramp:", f.get("steps") or [])
        goals = f.get("goals")
        if isinstance(goals, dict):
            lines += ["", "Goals:", ""]
            lines += [f"- {g}: {_fmt(v.get('value'))} (goal {v.get('goal')}): {'met' if v.get('met') else '**not met**'}"
                      for g, v in goals.items() if isinstance(v, dict)]
        lines.append("")
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    else:
        lines += ["(No plots: matplotlib is not installed; `pip install -e .[bench]`.)", ""]
    return "\n".join(lines)


# -- plots --------------------------------------------------------------------------------------

def make_plots(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made: list[str] = []
    ramps = []
    sip = (results.get("sip") or {}).get("figures") or {}
    full = (results.get("full") or {}).get("figures") or {}
    if _get(sip, "node_ramp.steps"):
        ramps.append(("answer-only through the node", _get(sip, "node_ramp.steps")))
    if _get(sip, "ceiling_ramp.steps"):
        ramps.append(("Kamailio + SIPp UAS (ceiling)", _get(sip, "ceiling_ramp.steps")))
    if full.get("steps"):
        ramps.append(("full path (IVR, queue, seat, talk)", full["steps"]))
    if ramps:
        fig, axes = plt.subplots(len(ramps), 1, figsize=(8, 3.2 * len(ramps)), squeeze=False)
        for ax, (title, steps) in zip(axes[:, 0], ramps, strict=True):
            steps = sorted(steps, key=lambda s: s["target_cps"])
            x = [s["target_cps"] for s in steps]
            ax.plot(x, [s.get("setup_ms_p99") or 0 for s in steps], "o-", color="tab:blue", label="set-up p99 (ms)")
            ax.axhline(1000, color="tab:blue", ls=":", lw=0.8)
            ax.set_ylabel("set-up p99 (ms)", color="tab:blue")
            ax.set_xlabel("offered calls/s")
            ax2 = ax.twinx()
            ax2.bar(x, [s.get("failed_pct") or 0 for s in steps], width=max(x) * 0.03 if x else 1, alpha=0.4,
                    color="tab:red", label="failed %")
            ax2.axhline(0.1, color="tab:red", ls=":", lw=0.8)
            ax2.set_ylim(0, max(0.2, 1.2 * max((s.get("failed_pct") or 0 for s in steps), default=0)))
            ax2.set_ylabel("failed %", color="tab:red")
            for s in steps:
                if not s.get("clean"):
                    ax.annotate("x", (s["target_cps"], s.get("setup_ms_p99") or 0), color="red", ha="center")
            ax.set_title(f"{title}: ramp (x = failing step)")
        fig.tight_layout()
        fig.savefig(out / "ramp.png", dpi=100)
        plt.close(fig)
        made.append("ramp.png")
    points = [(f"{s['target_cps']:g} CPS", _get(s, "audio")) for s in sorted(full.get("steps") or [],
                                                                             key=lambda s: s["target_cps"])]
    if full.get("soak"):
        points.append(("soak", _get(full, "soak.audio")))
    if full.get("held"):
        points.append((f"{_get(full, 'held.callers_concurrent_peak')} held", _get(full, "held.audio")))
    points = [(label, a) for label, a in points if a and a.get("jitter_ms_p99") is not None]
    if points:
        fig, ax = plt.subplots(figsize=(8, 3.5))
        xs = range(len(points))
        ax.plot(xs, [a["jitter_ms_p50"] for _, a in points], "o-", label="jitter p50 (ms)")
        ax.plot(xs, [a["jitter_ms_p99"] for _, a in points], "s-", label="jitter p99 (ms)")
        ax.axhline(20, color="red", ls=":", lw=0.8, label="limit p99 20 ms")
        ax.set_xticks(list(xs), [label for label, _ in points])
        ax.set_ylabel("ms")
        ax2 = ax.twinx()
        ax2.bar(list(xs), [a.get("loss_pct") or 0 for _, a in points], alpha=0.3, color="tab:gray", label="loss %")
        ax2.set_ylabel("loss %")
        ax2.set_ylim(0, max(1.0, 1.2 * max((a.get("loss_pct") or 0 for _, a in points), default=0)))
        ax.legend(loc="upper left")
        ax.set_title("Seat audio under load (RFC 3550 jitter at sampled seats)")
        fig.tight_layout()
        fig.savefig(out / "jitter.png", dpi=100)
        plt.close(fig)
        made.append("jitter.png")
    return made
