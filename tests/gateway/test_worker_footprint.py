"""A media worker stays small: it loads pjsua2 and the channel, not the control process's libraries.

Memory per held caller is mostly media workers (one process per two callers), so a heavy import
in the worker is multiplied by every worker of the node: pydantic alone (its import, its Rust core
and the message schemas) was ~18 MB of a 48 MB worker, ``secrets`` ~3 MB more (it maps OpenSSL's
libcrypto).  No RSS threshold here (it moves with the machine and the Python build): the tests look
at what a real worker imported and what a real worker holding a bridged call has mapped.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.node_harness import caller_result, start_caller, start_node, start_seat

#: top-level modules a worker has no use for (the control process's, the API's, the stores')
HEAVY_MODULES = {"pydantic", "pydantic_core", "sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "httpx",
                 "anyio", "asyncpg", "aiosqlite", "aiomqtt", "paho", "yaml", "asyncio", "ssl", "_ssl", "hashlib",
                 "_hashlib", "secrets", "decimal", "zoneinfo", "email", "api", "ivr", "routing", "journey",
                 "recordings"}
#: shared objects whose presence in a worker's address space means one of those got imported
HEAVY_OBJECTS = re.compile(r"pydantic_core|sqlalchemy|/_ssl\.|/_hashlib\.|/_asyncio\.|/_decimal\.|/_sqlite3\.|"
                           r"asyncpg|uvloop|/libssl\.so\.3|/libcrypto\.so\.3")


def _imported_by_worker_entry_point() -> set[str]:
    """Every module ``python -m gateway.worker`` imports (``-X importtime`` lists each one once);
    ``--help`` ends it after the imports, before it looks for a control socket."""
    p = subprocess.run([sys.executable, "-X", "importtime", "-m", "gateway.worker", "--help"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr[-2000:]
    names = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
    return names - {"package"}


def test_the_worker_entry_point_imports_pjsua2_and_the_channel_and_nothing_heavy() -> None:
    modules = _imported_by_worker_entry_point()
    assert {"pjsua2", "gateway.channel", "gateway.worker.service", "gateway.worker.session"} <= modules
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY_MODULES)
    assert heavy == [], f"the media worker imports {heavy}: every worker of the node pays for it"


def _mapped_objects(pid: int) -> set[str]:
    return {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
            if len(line.split()) >= 6 and ".so" in line.split()[-1]}


@pytest.mark.sip
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_holding_a_bridged_call_has_loaded_nothing_heavy(tmp_path: Path) -> None:
    port = free_port()
    seats = (f"seats:\n  - id: s1\n    name: s1\n    contact: sip:s1@127.0.0.1:{port}\n"
             "    skills: [intake_guidance]\n    status: available\n")
    node = start_node(tmp_path, workers=2, seats_yaml=seats)
    try:
        start_seat(node, "s1", port, "--answer-after", "0.3")
        caller = start_caller(node, "0", gap=0.6, stay=6)  # "0": a person, straight to the seat
        # the caller is bridged to the seat: both legs, prompts, recording and bridge in the worker
        bridged = node.wait_for(lambda: next((c for c in node.calls(5) if c.get("seat_answered_at")
                                              and not c.get("ended_at")), None), timeout=60)
        control = _mapped_objects(node.proc.pid)
        workers = {wid: _mapped_objects(pid) for wid, pid in node.worker_pids().items()}
        res = caller_result(caller)
        assert res["answered"] and res["bridged"], res
        assert bridged["seat_id"] == "s1"
        # the check can see a heavy library: the control process has pydantic's core mapped
        assert any(HEAVY_OBJECTS.search(o) for o in control), sorted(control)
        assert len(workers) == 2 and all(any("pjsua2" in o for o in objs) for objs in workers.values())
        heavy = {wid: sorted(o for o in objs if HEAVY_OBJECTS.search(o)) for wid, objs in workers.items()}
        assert heavy == {wid: [] for wid in workers}, heavy
    finally:
        node.stop()
