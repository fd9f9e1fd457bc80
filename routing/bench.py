"""``handoff122 bench routing``: decisions per second and decision latency of the pure ACD.

1,000 seats over the eight skills, 10,000 waiting callers, then a mixed stream like a busy centre's
(answers, ring-no-answers, seat failures, completions, wrap-up ends, abandons, status changes,
new callers, timer ticks).  Each public ACD call is one decision and is timed on its own.  If the
store's ``routing.store.bench.persistence_bench`` exists, the same events are persisted on SQLite
and PostgreSQL and its figures printed too.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from routing.acd import Acd, AcdConfig, SeatSpec, SkillPolicy
from routing.events import Event, EventKind
from routing.skills import SKILLS
from routing.status import SeatStatus

PG_DEFAULT = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


class Pool:
    """A set with O(1) random pick and removal, to draw which call or seat the next event is about."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.pos: dict[str, int] = {}

    def add(self, x: str) -> None:
        if x not in self.pos:
            self.pos[x] = len(self.items)
            self.items.append(x)

    def discard(self, x: str) -> None:
        i = self.pos.pop(x, None)
        if i is None:
            return
        last = self.items.pop()
        if i < len(self.items):
            self.items[i] = last
            self.pos[last] = i

    def pick(self, rng: random.Random) -> str | None:
        return self.items[rng.randrange(len(self.items))] if self.items else None

    def __len__(self) -> int:
        return len(self.items)


class Centre:
    """The bench's model of the world around the ACD: who rings, who talks, who wraps up."""

    def __init__(self, acd: Acd) -> None:
        self.acd = acd
        self.ringing, self.talking, self.wrapping, self.paused, self.waiting = Pool(), Pool(), Pool(), Pool(), Pool()
        self.events: list[Event] = []

    def absorb(self, events: list[Event]) -> None:
        self.events.extend(events)
        for e in events:
            k = e.kind
            if k is EventKind.OFFER:
                self.ringing.add(e.call_id)  # type: ignore[arg-type]
                self.waiting.discard(e.call_id)  # type: ignore[arg-type]
            elif k is EventKind.ENTERQUEUE:
                self.waiting.add(e.call_id)  # type: ignore[arg-type]
            elif k in (EventKind.RINGNOANSWER, EventKind.SEATFAILED):
                self.ringing.discard(e.call_id)  # type: ignore[arg-type]
                self.waiting.add(e.call_id)  # type: ignore[arg-type]
            elif k is EventKind.CONNECT:
                self.ringing.discard(e.call_id)  # type: ignore[arg-type]
                self.talking.add(e.call_id)  # type: ignore[arg-type]
            elif k is EventKind.ABANDON:
                self.ringing.discard(e.call_id)  # type: ignore[arg-type]
                self.waiting.discard(e.call_id)  # type: ignore[arg-type]
            elif k is EventKind.COMPLETE:
                self.talking.discard(e.call_id)  # type: ignore[arg-type]
            elif k is EventKind.SEATSTATUS:
                st, seat = e.data["status"], e.seat_id
                (self.wrapping.add if st == "wrap_up" else self.wrapping.discard)(seat)  # type: ignore[operator]
                (self.paused.add if st == "not_ready" else self.paused.discard)(seat)  # type: ignore[operator]


def _seats(n: int, rng: random.Random) -> list[SeatSpec]:
    specs = []
    for i in range(n):
        primary = SKILLS[i % len(SKILLS)]
        skills = {primary: 0}
        for extra in rng.sample(SKILLS, rng.randint(0, 2)):
            skills.setdefault(extra, rng.randint(1, 3))
        specs.append(SeatSpec(id=f"s{i:04d}", contact=f"sip:s{i:04d}@127.0.0.1:{7000 + i}", skills=skills,
                              status=SeatStatus.AVAILABLE))
    return specs


def run_decisions(seats: int, waiting: int, decisions: int, seed: int = 122) -> tuple[dict[str, Any], list[Event]]:
    rng = random.Random(seed)
    policies = {s: SkillPolicy(wrap_up_s=15) for s in SKILLS}
    policies["rescue"] = SkillPolicy(wrap_up_s=15, escalate_after_s=600, escalate_to="police_dispatch")
    acd = Acd(AcdConfig(ring_timeout_s=20, rona_not_ready_after=2, reject_delay_s=5, policies=policies))
    centre = Centre(acd)
    now = 1_700_000_000.0
    for spec in _seats(seats, rng):
        centre.absorb(acd.add_seat(spec, now))
    n_calls = 0

    def new_call() -> Callable[[], list[Event]]:
        nonlocal n_calls
        n_calls += 1
        return partial(acd.enqueue, f"c{n_calls}", rng.choice(SKILLS), rng.choice((1, 2, 3, 3, 4, 4, 4)), now,
                       caller=f"138{n_calls:08d}", info={"path": "1 2 1"})

    # ~1,000 callers ring the seats, the rest wait: the queues are 10,000 deep when the stream starts
    for _ in range(waiting + seats):
        centre.absorb(new_call()())
    latencies: list[int] = []
    kinds: dict[str, int] = {}
    perf = time.perf_counter_ns
    started = perf()
    for _ in range(decisions):
        now += 0.01
        r = rng.random()
        action: Callable[[], list[Event]] | None = None
        name = ""
        if r < 0.12 and len(centre.waiting) < waiting:
            name, action = "enqueue", new_call()   # keep the queues about `waiting` deep
        elif r < 0.30 and centre.ringing:
            cid = centre.ringing.pick(rng)
            name, action = "answer", partial(acd.seat_answered, cid, now)
        elif r < 0.34 and centre.ringing:
            cid = centre.ringing.pick(rng)
            name, action = "rona", partial(acd.ring_no_answer, cid, now)
        elif r < 0.36 and centre.ringing:
            cid = centre.ringing.pick(rng)
            name, action = "seat_failed", partial(acd.seat_failed, cid, now, rng.choice(("busy", "declined")))
        elif r < 0.60 and centre.talking:
            cid = centre.talking.pick(rng)
            name, action = "complete", partial(acd.call_completed, cid, now, "caller")
        elif r < 0.75 and centre.wrapping:
            sid = centre.wrapping.pick(rng)
            name, action = "end_wrap_up", partial(acd.end_wrap_up, sid, now)  # type: ignore[arg-type]
        elif r < 0.80 and centre.waiting:
            cid = centre.waiting.pick(rng)
            name, action = "abandon", partial(acd.caller_abandoned, cid, now)
        elif r < 0.84 and centre.paused:
            sid = centre.paused.pick(rng)
            name, action = "available", partial(acd.set_status, sid, SeatStatus.AVAILABLE, now)  # type: ignore[arg-type]
        elif r < 0.86:
            sid = f"s{rng.randrange(seats):04d}"
            if acd.seat_view(sid, now)["status"] == "available":
                name, action = "not_ready", partial(acd.set_status, sid, SeatStatus.NOT_READY, now, "break")
        elif r < 0.90:
            name, action = "tick", partial(acd.tick, now)
        if action is None:
            name, action = "enqueue", new_call()
        t0 = perf()
        out = action()
        latencies.append(perf() - t0)
        kinds[name] = kinds.get(name, 0) + 1
        centre.absorb(out)
    elapsed = (perf() - started) / 1e9
    latencies.sort()
    busy = sum(latencies) / 1e9

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1e6

    waiting_end = sum(v["waiting"] for v in acd.queues_view(now))
    result = {
        "seats": seats, "waiting_at_start": waiting, "waiting_at_end": waiting_end, "decisions": decisions,
        "decisions_per_s": round(decisions / busy), "wall_decisions_per_s": round(decisions / elapsed),
        "p50_ms": round(pct(0.50), 4), "p99_ms": round(pct(0.99), 4), "max_ms": round(latencies[-1] / 1e6, 4),
        "events": len(centre.events), "mix": kinds,
    }
    return result, centre.events


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), timeout=1.0):
            return True
    except OSError:
        return False


def run_persistence(events: list[Event]) -> dict[str, Any]:
    try:
        from routing.store.bench import persistence_bench  # type: ignore[import-not-found]
    except ImportError:
        return {"skipped": "routing.store.bench.persistence_bench is not available"}
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="handoff-bench-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.sqlite3'}"
        try:
            figures["sqlite"] = asyncio.run(persistence_bench(events, url))
        except Exception as e:  # the in-memory figures stand on their own
            figures["sqlite"] = {"error": f"{e.__class__.__name__}: {e}"}
    pg = os.environ.get("HANDOFF_TEST_PG_URL", PG_DEFAULT)
    if not _reachable(pg):
        figures["postgresql"] = {"skipped": f"PostgreSQL not reachable at {urlsplit(pg).netloc}"}
    else:
        try:
            figures["postgresql"] = asyncio.run(persistence_bench(events, pg))
        except Exception as e:
            figures["postgresql"] = {"error": f"{e.__class__.__name__}: {e}"}
    return figures


def main(as_json: bool = False, quick: bool = False) -> int:
    seats, waiting, decisions = (200, 2_000, 20_000) if quick else (1_000, 10_000, 200_000)
    result, events = run_decisions(seats, waiting, decisions)
    print(f"routing bench: {seats} seats, {waiting} waiting callers, {decisions} decisions")
    print(f"  decisions/s: {result['decisions_per_s']} (in the ACD), {result['wall_decisions_per_s']} (with the bench's own bookkeeping)")
    print(f"  decision latency: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms")
    print(f"  goal: p99 <= 1 ms and >= 20000 decisions/s: "
          f"{'met' if result['p99_ms'] <= 1.0 and result['decisions_per_s'] >= 20_000 else 'NOT met'}")
    print(f"  events emitted: {result['events']}; mix: {result['mix']}")
    persisted = run_persistence(events[:20_000] if quick else events[:200_000])
    for backend, fig in persisted.items():
        print(f"  persistence {backend}: {fig}")
    result["persistence"] = persisted
    if as_json:
        print(json.dumps(result, separators=(",", ":"), default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
