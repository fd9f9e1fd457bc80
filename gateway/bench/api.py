"""``handoff122 bench api``: API reads under load, and whether that load delays SIP.

1. ``api.bench``: the read endpoints of an app over a real routing service, load from another process.
2. A real node with 100 callers live (each bridged to a seat answered by a SIPp UAS): SIP call set-up
   times (INVITE -> 200 OK through the front door) are probed without API load, then while another
   process fires the same reads at the node's own API.  The API runs in its own process, reading
   pushed state, so the two distributions should match.
3. Fan-out: 300 seat consoles and 30 dashboards (real WebSocket clients in another process,
   authenticated with the first message like the pages) follow the live events while SIPp callers
   press IVR paths, queue and reach seats (``gateway.bench.full``'s callers and seat farm) at a
   modest rate.  Reported: the delay from each ACD event's ``at`` to its arrival at every client,
   and SIP set-up times of the same call load with and without the clients.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx

from gateway.bench.runner import NodeProcess, emit, free_port, say, sipp, sipp_media_port

SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "sipp"
PRESS_ZERO = ('  <nop><action><exec play_pcap_audio="/usr/share/sip-tester/dtmf_2833_0.pcap"/></action></nop>\n'
              '  <pause milliseconds="1000"/>')


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2) if s else float("nan")


def _probe(port: int, n: int) -> list[float]:
    run = sipp(port, SCENARIOS / "uac_122_dtmf.xml", calls=n, rate=4, limit=2, timeout=60 + n,
               subs={"service": "122", "first": "100", "stay": "200", "digits": ""},
               extra=["-trace_rtt", "-rtt_freq", "1"])
    return run.response_times_ms()


def _token(data_dir: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", "--role", "supervisor",
                          "--data-dir", str(data_dir)], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def _live(quick: bool) -> dict[str, Any]:
    from api.bench import _load_elsewhere

    live, probes = (20, 20) if quick else (100, 60)
    concurrency, requests = (10, 300) if quick else (32, 3000)
    tmp = tempfile.TemporaryDirectory(prefix="h122-bench-api-")
    uas_port = free_port()
    uas = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_answer.xml"), "-i", "127.0.0.1", "-p", str(uas_port),
                            "-cp", str(free_port()), "-mi", "127.0.0.1", "-mp", str(sipp_media_port()), "-nostdin"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp.name)
    seats = Path(tmp.name) / "seats.yaml"
    seats.write_text("seats:\n" + "".join(
        f"  - id: a{i:03d}\n    contact: sip:a{i:03d}@127.0.0.1:{uas_port}\n    skills: [intake_guidance]\n"
        "    status: available\n" for i in range(live + 10)))
    node = NodeProcess(workers=live // 2 + 4, env={"HANDOFF_ANSWER_DELAY_S": "0"}, args=["--seats", str(seats)]).start()
    held: dict[str, Any] = {}
    try:
        say(f"live phase: {live} callers through the IVR to seats, held while the API is loaded")
        hold_s = 60 if quick else 120
        t = threading.Thread(target=lambda: held.update(run=sipp(
            node.sip_port, SCENARIOS / "uac_122_dtmf.xml", calls=live, rate=10, limit=live, timeout=hold_s + 120,
            subs={"service": "122", "first": "300", "stay": str(hold_s * 1000), "digits": PRESS_ZERO})))
        t.start()
        token = _token(node.data_dir)  # type: ignore[arg-type]
        url = f"http://127.0.0.1:{node.api_port}"

        def bridged() -> int:
            seats_now = httpx.get(f"{url}/api/v1/seats", headers={"Authorization": f"Bearer {token}"}).json()
            return sum(1 for x in seats_now if x["status"] == "on_call")

        for _ in range(120):
            if bridged() >= live:
                break
            threading.Event().wait(1.0)
        on_call = bridged()
        say(f"  {on_call} callers talking to seats; probing SIP set-up without API load")
        quiet = _probe(node.sip_port, probes)
        say(f"  probing SIP set-up while {concurrency} clients read the API ({requests} requests)")
        box: dict[str, Any] = {}
        loader = threading.Thread(target=lambda: box.update(load=asyncio.run(
            _load_elsewhere(url, token, concurrency, requests))))
        loader.start()
        loaded = _probe(node.sip_port, probes)
        loader.join()
        lat = [x for v in box["load"]["latencies"].values() for x in v]
        result = {
            "live_calls": on_call,
            "setup_ms_quiet": {"p50": _pct(quiet, 0.5), "p99": _pct(quiet, 0.99), "n": len(quiet)},
            "setup_ms_api_loaded": {"p50": _pct(loaded, 0.5), "p99": _pct(loaded, 0.99), "n": len(loaded)},
            "node_api": {"p50_ms": _pct([x * 1000 for x in lat], 0.5), "p99_ms": _pct([x * 1000 for x in lat], 0.99),
                         "requests_per_s": round(len(lat) / box["load"]["elapsed"], 1), "errors": box["load"]["errors"]},
        }
        delay = (statistics.median(loaded) - statistics.median(quiet)) if quiet and loaded else float("nan")
        result["sip_delayed"] = bool(delay > 5.0 or _pct(loaded, 0.99) > 2 * max(_pct(quiet, 0.99), 5.0))
        result["sip_setup_median_shift_ms"] = round(delay, 2)
    finally:
        node.stop()
        t.join(30)
        uas.terminate()
        uas.wait(10)
        tmp.cleanup()
    return result


async def _tokens(data_dir: Path, seats: list[str], dashboards: int) -> list[dict[str, str]]:
    """One seat token per console and a supervisor token per dashboard, minted in the node's store."""
    from api.tokens import TokenStore
    from gateway.settings import Settings
    from routing.store.database import make_engine

    engine = make_engine(Settings(data_dir=data_dir).database_url)
    try:
        store = TokenStore(engine)
        out = [{"role": "seat", "token": await store.create("seat", sid, "bench fan-out")} for sid in seats]
        out += [{"role": "supervisor", "token": await store.create("supervisor", None, "bench fan-out")}
                for _ in range(dashboards)]
    finally:
        await engine.dispose()
    return out


def _fanout(quick: bool) -> dict[str, Any]:
    """Calls through the full path at a modest rate, without and then with 330 live clients."""
    import dataclasses

    from gateway.bench import full

    consoles, dashboards = 300, 30
    rate, seconds = (1.0, 15.0) if quick else (2.0, 60.0)
    plan = dataclasses.replace(full.QUICK if quick else full.FULL, seats=consoles, workers=6 if quick else 20,
                               uas=2, talk_s=3 if quick else 10, probe_share=0.0)
    result: dict[str, Any] = {"consoles": consoles, "dashboards": dashboards, "rate_cps": rate, "seconds": seconds,
                              "talk_s": plan.talk_s}
    with tempfile.TemporaryDirectory(prefix="h122-bench-fanout-") as d:
        bench = full.Bench(plan, Path(d))
        clients: subprocess.Popen[str] | None = None
        try:
            say(f"fan-out phase: calls at {rate:g}/s for {seconds:g} s through IVR, queue and {consoles} seats, "
                "first without live clients")
            quiet = bench.run(rate, seconds, bench.caller_xml, "no clients", plan.talk_s)
            quiet.pop("_step"), quiet.pop("_rss_series")
            assert bench.node.data_dir is not None
            seat_ids = [f"f{i:04d}" for i in range(consoles)]
            tokens = asyncio.run(_tokens(bench.node.data_dir, seat_ids, dashboards))
            tokens_file = Path(d) / "tokens.json"
            tokens_file.write_text(json.dumps(tokens))
            clients = subprocess.Popen([sys.executable, "-m", "gateway.bench.ws_fanout",
                                        f"ws://127.0.0.1:{bench.node.api_port}/api/v1/events", str(tokens_file)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert clients.stdout is not None and clients.stdin is not None
            first = json.loads(clients.stdout.readline() or "{}")
            say(f"  {first.get('connected')} WebSocket clients connected; the same calls again")
            loaded = bench.run(rate, seconds, bench.caller_xml, "330 clients", plan.talk_s)
            loaded.pop("_step"), loaded.pop("_rss_series")
            clients.stdin.write("stop\n")
            clients.stdin.flush()
            fan = json.loads(clients.stdout.readline() or "{}")
            clients.wait(60)
        finally:
            if clients is not None and clients.poll() is None:
                clients.kill()
            bench.stop()
    result["delivery"] = fan
    result["setup_ms_without_clients"] = quiet["setup_ms"]
    result["setup_ms_with_clients"] = loaded["setup_ms"]
    result["reached_seat"] = {"without_clients": quiet["reached_seat"], "with_clients": loaded["reached_seat"],
                              "calls": loaded["calls"]}
    p99 = (fan.get("delay_ms") or {}).get("p99")
    q99, l99 = quiet["setup_ms"].get("p99"), loaded["setup_ms"].get("p99")
    result["goal_delay_met"] = p99 is not None and p99 <= 100.0
    result["sip_unchanged"] = bool(q99 is not None and l99 is not None and l99 <= max(2 * q99, q99 + 5.0))
    return result


def main(as_json: bool = False, quick: bool = False) -> int:
    from api import bench as api_bench

    reads = asyncio.run(api_bench.run(quick))
    print(f"api reads (in-process app, load from another process): {reads['requests']} requests, "
          f"concurrency {reads['concurrency']} (saturation): p50 {reads['p50_ms']} ms  p99 {reads['p99_ms']} ms  "
          f"{reads['requests_per_s']} req/s  errors {reads['errors']}")
    pc = reads["paced"]
    print(f"  paced at {pc['rate_per_s']:.0f} req/s: p50 {pc['p50_ms']} ms  p99 {pc['p99_ms']} ms  "
          f"goal p99 <= 50 ms: {'met' if reads['goal_met'] else 'NOT met'}")
    live = _live(quick)
    q, loaded, api = live["setup_ms_quiet"], live["setup_ms_api_loaded"], live["node_api"]
    print(f"node with {live['live_calls']} live calls: SIP set-up p50/p99 {q['p50']}/{q['p99']} ms without API load, "
          f"{loaded['p50']}/{loaded['p99']} ms with it; node API p50 {api['p50_ms']} ms p99 {api['p99_ms']} ms "
          f"{api['requests_per_s']} req/s; SIP delayed: {'yes' if live['sip_delayed'] else 'no'}")
    fan = _fanout(quick)
    dl, qs, ls = fan["delivery"].get("delay_ms") or {}, fan["setup_ms_without_clients"], fan["setup_ms_with_clients"]
    print(f"fan-out: {fan['delivery'].get('connected')} WebSocket clients ({fan['consoles']} consoles, "
          f"{fan['dashboards']} dashboards), calls at {fan['rate_cps']:g}/s: ACD event -> client p50 {dl.get('p50')} ms "
          f"p99 {dl.get('p99')} ms ({fan['delivery'].get('deliveries')} deliveries, {fan['delivery'].get('resyncs')} "
          f"resyncs; goal p99 <= 100 ms: {'met' if fan['goal_delay_met'] else 'NOT met'}); SIP set-up p50/p99 "
          f"{qs.get('p50')}/{qs.get('p99')} ms without clients, {ls.get('p50')}/{ls.get('p99')} ms with them "
          f"({'unchanged' if fan['sip_unchanged'] else 'CHANGED'})")
    emit({"bench": "api", "reads": reads, "live": live, "fanout": fan}, as_json)
    return 0
