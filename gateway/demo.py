"""``handoff122 demo``: the whole product in one command, for a first look.

A node on the given settings, one simulated seat phone per skill, and a stream of simulated callers
walking every path of the default IVR.  Prints the dashboard URL and a supervisor token; Ctrl-C
stops everything cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import subprocess
import sys

from gateway.logs import configure_logging
from gateway.node import Node, start_or_explain, stop_on_signals
from gateway.settings import Settings
from routing.skills import SKILL_LABELS_ZH, SKILLS

#: (keys, what the caller reports) for every outcome of the default flow.
CALLER_PATHS: list[tuple[str, str]] = [
    ("1 2 1 2 2 2 2", "eligible, no dispute -> guided online self-settlement"),
    ("1 2 1 2 2 2 1", "eligible, parties disagree -> online liability"),
    ("1 2 1 2 2 1", "road facilities damaged -> online review"),
    ("1 1", "someone injured -> police dispatch"),
    ("1 2 2", "vehicle cannot be moved -> rescue"),
    ("1 2 1 1", "driver or vehicle disqualified -> police dispatch"),
    ("1 2 1 2 1", "other party fled -> police dispatch"),
    ("2", "progress of an earlier accident -> accident lookup"),
    ("3", "insurance claim -> insurance claims"),
    ("0", "asked for a person -> intake guidance"),
    ("", "said nothing -> intake guidance"),
]


def _free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _seats_file(settings: Settings) -> tuple[str, list[tuple[str, int]]]:
    seats = [(f"demo-{skill.replace('_', '-')}", _free_port(), skill) for skill in SKILLS]
    lines = ["seats:"]
    for sid, port, skill in seats:
        lines += [f"  - id: {sid}", f"    name: {SKILL_LABELS_ZH[skill]} 1", f"    contact: sip:{sid}@127.0.0.1:{port}",
                  f"    skills: [{skill}]", "    status: available"]
    path = settings.data_dir / "demo-seats.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path), [(sid, port) for sid, port, _ in seats]


async def _demo(settings: Settings, callers: int) -> int:
    seats_path, seats = _seats_file(settings)
    settings = settings.model_copy(update={"seats": seats_path})
    node = Node(settings)
    procs: list[subprocess.Popen[bytes]] = []
    stop = asyncio.Event()
    stop_on_signals(stop)
    if not await start_or_explain(node):
        return 2
    try:
        for sid, port in seats:
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "seat", "--id", sid, "--sip-port", str(port),
                 "--answer-after", "1.5", "--hangup-after", str(random.randint(8, 20))],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from api.tokens import TokenStore

        token = await TokenStore(node.engine).create("supervisor", label="demo")
        url = f"http://{settings.api_host}:{settings.api_port}/"
        print(f"dashboard: {url}\nsupervisor token: {token}\nseat console: {url}seat\n"
              f"SIP: sip:122@{settings.sip_host}:{settings.sip_port}   (Ctrl-C stops the demo)", flush=True)
        capacity = max(1, settings.workers * settings.worker_callers - 1)
        active: list[subprocess.Popen[bytes]] = []
        made = 0
        while not stop.is_set() and (callers == 0 or made < callers):
            active = [p for p in active if p.poll() is None]
            if len(active) < capacity:
                keys, _ = random.choice(CALLER_PATHS)
                active.append(subprocess.Popen(
                    [sys.executable, "-m", "gateway.cli", "call", "--to",
                     f"sip:122@{settings.sip_host}:{settings.sip_port}", "--digits", keys, "--gap", "0.8",
                     "--stay", str(random.randint(12, 25))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                made += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), random.uniform(2.0, 5.0))
        if callers:
            for p in active:
                await asyncio.to_thread(p.wait)
        procs += active
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(p.wait, 10)
        await node.stop()
    return 0


def run_demo(settings: Settings, callers: int = 0) -> int:
    configure_logging("WARNING" if settings.log_level == "INFO" else settings.log_level, process_name="demo")
    return asyncio.run(_demo(settings, callers))
