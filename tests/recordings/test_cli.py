"""``handoff122 recordings verify|purge`` as an operator runs it: a subprocess and its exit code."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from sqlalchemy.ext.asyncio import create_async_engine

from recordings.catalog import Catalog, RecordingStatus
from recordings.retention import DAY_S
from tests.recordings.conftest import closed_recording


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["handoff122", "recordings", *args], capture_output=True, text=True, timeout=60)


async def _node_catalog(data_dir: Path) -> Catalog:
    """The catalog a node with this data dir would have (default SQLite inside it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite+aiosqlite:///{(data_dir / 'handoff122.sqlite3').resolve()}"
    catalog = Catalog(create_async_engine(url), data_dir / "recordings")
    await catalog.create_schema()
    catalog.layout.prepare()
    return catalog


async def test_verify_exit_codes(tmp_path: Path):
    data = tmp_path / "var"
    missing = run("verify", "--data-dir", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr

    data.mkdir()
    no_catalog = run("verify", "--data-dir", str(data))
    assert no_catalog.returncode == 2 and "no recordings catalog" in no_catalog.stderr

    catalog = await _node_catalog(data)
    now = time.time()
    ids = [await closed_recording(catalog, f"call-{i}", now - 60 + i) for i in range(3)]

    clean = run("verify", "--data-dir", str(data))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.strip().splitlines() == [
        "verified 3 recordings: 3 ok, 0 sha256 mismatches, 0 size changes, 0 missing, 0 unreadable, "
        "0 files without rows, 0 unsealed"]

    path = catalog.file_of(await catalog.get(ids[1]))
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    await catalog.engine.dispose()

    tampered = run("verify", "--data-dir", str(data))
    assert tampered.returncode == 1
    lines = tampered.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"sha256_mismatch {ids[1]} ")
    assert lines[1].startswith("verified 3 recordings: 2 ok, 1 sha256 mismatches")


async def test_purge_keeps_open_calls_and_recent_recordings(tmp_path: Path):
    data = tmp_path / "var"
    catalog = await _node_catalog(data)
    now = time.time()
    old = await closed_recording(catalog, "old-call", now - 200 * DAY_S)
    recent = await closed_recording(catalog, "recent-call", now - 20 * DAY_S)
    # a second recording of a call still being recorded (e.g. a worker restarted mid-call)
    open_old = await closed_recording(catalog, "open-call", now - 300 * DAY_S)
    live = catalog.layout.new_recording_id("open-call")
    await catalog.opened(live, "open-call", now)

    result = run("purge", "--data-dir", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "purged 1 recordings older than 180 days" in result.stdout
    assert (await catalog.get(old)).status is RecordingStatus.PURGED
    assert (await catalog.get(recent)).status is RecordingStatus.CLOSED
    assert (await catalog.get(open_old)).status is RecordingStatus.CLOSED

    shorter = run("purge", "--data-dir", str(data), "--days", "10")
    assert shorter.returncode == 0
    assert (await catalog.get(recent)).status is RecordingStatus.PURGED
    assert (await catalog.get(open_old)).status is RecordingStatus.CLOSED

    # purged files are gone, their seals stay, and verify no longer counts them
    verified = run("verify", "--data-dir", str(data))
    assert verified.returncode == 0
    assert "verified 1 recordings" in verified.stdout
    await catalog.engine.dispose()
