"""``handoff122 demo``: the whole product in one command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, serve_port_args

pytestmark = pytest.mark.sip


def test_demo_runs_callers_through_seats_and_stops_cleanly(tmp_path: Path) -> None:
    api = free_port()
    cmd = [sys.executable, "-m", "gateway.cli", "demo", "--callers", "3", *serve_port_args(workers=3),
           "--api-port", str(api), "--data-dir", str(tmp_path / "var")]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in p.stdout.splitlines() if ": " in line)
    assert lines["dashboard"] == f"http://127.0.0.1:{api}/"
    assert lines["supervisor token"].startswith("h122_")
    # The demo's calls are in the node's database: every one reached a seat or was counted.
    out = subprocess.run([sys.executable, "-c", (
        "import asyncio, sys\n"
        "from routing.store.database import make_engine\n"
        "from routing.store.calls import CallRecords\n"
        "async def main():\n"
        f"    e = make_engine('sqlite+aiosqlite:///{tmp_path}/var/handoff122.sqlite3')\n"
        "    calls = await CallRecords(e).list(limit=10)\n"
        "    print(len(calls), sum(1 for c in calls if c['end_reason']))\n"
        "    await e.dispose()\n"
        "asyncio.run(main())\n")], capture_output=True, text=True, timeout=60)
    total, ended = map(int, out.stdout.split())
    assert total == 3 and ended == 3, out.stdout + out.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{api}/healthz", timeout=2)
