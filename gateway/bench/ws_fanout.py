"""WebSocket clients for ``bench api``'s fan-out phase, in a process of their own.

``python -m gateway.bench.ws_fanout URL TOKENS_FILE``: connects one client per token (seat
consoles and dashboards alike, authenticated with the first message as the pages do), waits for
each one's ``SNAPSHOT``, prints ``{"connected": n}``, then records for every ACD event every client
receives the delay from the event's ``at`` (the control process's clock, the same machine's) to
its arrival.  A line on stdin ends the run; the summary is printed as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import websockets

VIEW_KINDS = {"HELLO", "SNAPSHOT", "SEATS", "QUEUES", "RESYNC"}


class Tally:
    def __init__(self) -> None:
        self.delays_ms: list[float] = []
        self.by_role: dict[str, list[float]] = {"seat": [], "supervisor": []}
        self.views = 0
        self.resyncs = 0
        self.closed: list[int | None] = []
        self.connected = 0


async def client(url: str, role: str, token: str, tally: Tally, ready: asyncio.Event, stop: asyncio.Event) -> None:
    try:
        async with websockets.connect(url, max_size=None, open_timeout=60) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token}))
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                now = time.time()
                msg = json.loads(raw)
                kind = msg.get("kind")
                if kind == "SNAPSHOT" and not ready.is_set():
                    ready.set()
                    tally.connected += 1
                if kind in VIEW_KINDS:
                    tally.views += 1
                    tally.resyncs += kind == "RESYNC"
                    continue
                ms = (now - float(msg["at"])) * 1000
                tally.delays_ms.append(ms)
                tally.by_role[role].append(ms)
    except websockets.ConnectionClosed as e:
        tally.closed.append(e.rcvd.code if e.rcvd else None)


def _pct(values: list[float], q: float) -> float | None:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))], 2) if s else None


async def main(url: str, tokens_file: Path) -> dict[str, Any]:
    tokens = json.loads(tokens_file.read_text())
    tally, stop = Tally(), asyncio.Event()
    readies = [asyncio.Event() for _ in tokens]
    tasks = [asyncio.create_task(client(url, t["role"], t["token"], tally, r, stop)) for t, r in zip(tokens, readies, strict=True)]
    async with asyncio.timeout(120):
        for r in readies:
            await r.wait()
    print(json.dumps({"connected": tally.connected}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    d = tally.delays_ms
    return {"clients": len(tokens), "connected": tally.connected, "deliveries": len(d),
            "delay_ms": {"p50": _pct(d, 0.5), "p99": _pct(d, 0.99), "max": round(max(d), 2) if d else None},
            "delay_ms_seats_p99": _pct(tally.by_role["seat"], 0.99),
            "delay_ms_dashboards_p99": _pct(tally.by_role["supervisor"], 0.99),
            "view_messages": tally.views, "resyncs": tally.resyncs, "closed": tally.closed}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], Path(sys.argv[2])))), flush=True)
