"""`handoff122 bench ivr`: interpreter throughput and per-event latency.

The interpreter runs inside the control process's event loop, next to RTP-driven work; one event
must cost far less than a 20 ms audio frame (goal: p99 < 50 microseconds).
"""

from __future__ import annotations

import json
import random
import time

from ivr.flow import DEFAULT_FLOW_PATH, Flow
from ivr.interpreter import Action, IvrSession, Play, StartTimer
from ivr.loader import load_flow

GOAL_P99_US = 50.0
#: Key presses of the DOMAIN.md paths (scripted sessions).
SCRIPTS = ["1212222", "1212221", "11", "122", "1211", "12121", "12122 1", "2", "3", "0", "*1*2*0", "19x12"]
_EVENT_KEYS = "0123456789*#x"


def _live_tokens(actions: list[Action], play: int, timer: int) -> tuple[int, int]:
    for a in actions:
        if isinstance(a, Play):
            play = a.token
        elif isinstance(a, StartTimer):
            timer = a.token
    return play, timer


def _run_session(flow: Flow, rng: random.Random, script: str | None, samples: list[int], call: int) -> None:
    session = IvrSession(flow, f"bench-{call}")
    clock = time.perf_counter_ns
    now = 0.0
    t0 = clock()
    actions = session.start(now)
    samples.append(clock() - t0)
    play, timer = _live_tokens(actions, 0, 0)
    presses = list(script.replace(" ", "")) if script is not None else []
    for _ in range(200):
        if session.done:
            return
        now += 0.5
        roll = rng.random()
        if script is not None:
            # scripted: the prompt plays out, then the caller presses the next key (or stays silent)
            if presses and roll < 0.5:
                event = ("digit", presses.pop(0))
            else:
                event = ("finished", play) if roll < 0.8 else ("timeout", timer)
        elif roll < 0.45:
            event = ("digit", rng.choice(_EVENT_KEYS))
        elif roll < 0.75:
            event = ("finished", play if rng.random() < 0.9 else play - 1)
        else:
            event = ("timeout", timer if rng.random() < 0.9 else timer - 1)
        kind, arg = event
        t0 = clock()
        if kind == "digit":
            actions = session.digit(str(arg), now)
        elif kind == "finished":
            actions = session.prompt_finished(int(arg), now)
        else:
            actions = session.timeout(int(arg), now)
        samples.append(clock() - t0)
        play, timer = _live_tokens(actions, play, timer)


def _percentile(sorted_ns: list[int], q: float) -> float:
    index = min(len(sorted_ns) - 1, int(q * len(sorted_ns)))
    return sorted_ns[index] / 1000.0


def main(as_json: bool = False, quick: bool = False) -> int:
    flow = load_flow(DEFAULT_FLOW_PATH)
    rng = random.Random(122)
    sessions = 2_000 if quick else 20_000
    samples: list[int] = []
    started = time.perf_counter()
    for call in range(sessions):
        script = SCRIPTS[call % len(SCRIPTS)] if call % 2 == 0 else None
        _run_session(flow, rng, script, samples, call)
    wall = time.perf_counter() - started
    samples.sort()
    result = {
        "bench": "ivr",
        "sessions": sessions,
        "events": len(samples),
        "events_per_s": round(len(samples) / (sum(samples) / 1e9)),
        "wall_s": round(wall, 3),
        "latency_us_p50": round(_percentile(samples, 0.50), 2),
        "latency_us_p99": round(_percentile(samples, 0.99), 2),
        "latency_us_max": round(samples[-1] / 1000.0, 2),
        "goal_p99_us": GOAL_P99_US,
    }
    result["ok"] = result["latency_us_p99"] < GOAL_P99_US
    print(f"ivr interpreter: {result['sessions']} sessions, {result['events']} events in {result['wall_s']} s")
    print(f"  throughput {result['events_per_s']} events/s (interpreter time only)")
    print(f"  latency per event p50 {result['latency_us_p50']} us, p99 {result['latency_us_p99']} us, "
          f"max {result['latency_us_max']} us (goal p99 < {GOAL_P99_US} us): {'ok' if result['ok'] else 'MISSED'}")
    if as_json:
        print(json.dumps(result))
    return 0 if result["ok"] else 1
