"""Fixtures for the recordings tests: synthetic WAV files and an isolated catalog per test.

On PostgreSQL every test gets its own schema (``search_path``) inside the session database, so a
purge or verify in one test never sees another test's rows.
"""

from __future__ import annotations

import math
import struct
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from recordings.catalog import Catalog

RATE = 8000


def tone(hz: float, seconds: float, amplitude: float = 8000.0, rate: int = RATE) -> list[int]:
    n = int(seconds * rate)
    return [int(amplitude * math.sin(2 * math.pi * hz * i / rate)) for i in range(n)]


def silence(seconds: float, rate: int = RATE) -> list[int]:
    return [0] * int(seconds * rate)


def wav_bytes(samples: Sequence[int], rate: int = RATE, channels: int = 1,
              extra_chunks: bytes = b"") -> bytes:
    """A canonical 44-byte-header PCM WAV, like pjmedia's writer produces on close."""
    data = struct.pack(f"<{len(samples)}h", *samples)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    body += extra_chunks
    return b"RIFF" + struct.pack("<I", len(body)) + body


def write_wav(path: Path, samples: Sequence[int], rate: int = RATE, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_bytes(samples, rate, channels))
    return path


@pytest.fixture
def make_wav(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, samples: Sequence[int], rate: int = RATE, channels: int = 1) -> Path:
        return write_wav(tmp_path / name, samples, rate, channels)

    return make


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    if db_url.startswith("sqlite"):
        eng = create_async_engine(db_url)
        yield eng
        await eng.dispose()
        return
    schema = f"rec_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(db_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = create_async_engine(db_url, connect_args={"server_settings": {"search_path": schema}})
    yield eng
    await eng.dispose()
    async with admin.begin() as conn:
        await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


@pytest.fixture
async def catalog(engine: AsyncEngine, tmp_path: Path) -> Catalog:
    cat = Catalog(engine, tmp_path / "recordings")
    await cat.create_schema()
    cat.layout.prepare()
    return cat


async def closed_recording(catalog: Catalog, call_id: str, started_at: float, seconds: float = 0.2,
                           hz: float = 440.0, closed_at: float | None = None) -> str:
    """One call's recording the way the node makes it: opened, written, finalised, catalogued."""
    from recordings.finalize import finalize

    rid = catalog.layout.new_recording_id(call_id)
    await catalog.opened(rid, call_id, started_at)
    partial = write_wav(catalog.layout.partial_path(rid), tone(hz, seconds))
    final = catalog.layout.final_path(rid, started_at)
    info = finalize(partial, final)
    await catalog.closed(rid, info, final, at=started_at + seconds if closed_at is None else closed_at)
    return rid
