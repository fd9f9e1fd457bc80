"""Tokens: stored hashed, resolved to a role, revocable; ``handoff122 token create`` prints one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from api.tokens import Role, TokenError, TokenStore, api_tokens, token_hash
from tests.api.scratch import scratch_engine


@pytest.fixture
async def store(db_url: str):
    async with scratch_engine(db_url) as engine:
        s = TokenStore(engine, cache_s=0.0)
        await s.create_schema()
        yield s


async def test_token_resolves_to_its_role_and_seat(store: TokenStore) -> None:
    sup = await store.create("supervisor")
    seat = await store.create("seat", "s101")
    who = await store.resolve(sup)
    assert who is not None and who.role is Role.SUPERVISOR and who.seat_id is None and who.is_supervisor()
    who = await store.resolve(seat)
    assert who is not None and who.role is Role.SEAT and who.seat_id == "s101" and not who.is_supervisor()
    assert await store.resolve(seat + "x") is None
    assert await store.resolve("h122_" + "A" * 43) is None
    assert await store.resolve("") is None


async def test_only_the_hash_is_stored(store: TokenStore) -> None:
    token = await store.create("admin")
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(api_tokens))).mappings().all()
    stored = [r for r in rows if r["role"] == "admin"]
    assert stored[-1]["token_sha256"] == token_hash(token)
    assert all(token not in str(dict(r)) for r in rows)


async def test_revoked_token_no_longer_resolves(store: TokenStore) -> None:
    token = await store.create("supervisor")
    who = await store.resolve(token)
    assert who is not None
    assert await store.revoke(who.token_id) is True
    assert await store.resolve(token) is None
    assert await store.revoke(who.token_id) is False


async def test_seat_role_needs_a_valid_seat(store: TokenStore) -> None:
    with pytest.raises(TokenError):
        await store.create("seat")
    with pytest.raises(TokenError):
        await store.create("seat", "Bad Seat!")
    with pytest.raises(TokenError):
        await store.create("supervisor", "s1")
    with pytest.raises(TokenError):
        await store.create("root")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "token", "create", *args],
                          capture_output=True, text=True, timeout=60)


def test_token_cli_prints_only_a_token_that_resolves(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    done = _cli("--role", "seat", "--seat", "s101", "--data-dir", str(data_dir))
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert token.startswith("h122_") and "\n" not in token

    async def resolve() -> tuple[str, str | None] | None:
        engine = create_async_engine(f"sqlite+aiosqlite:///{data_dir / 'handoff122.sqlite3'}")
        try:
            who = await TokenStore(engine).resolve(token)
            return (who.role.value, who.seat_id) if who else None
        finally:
            await engine.dispose()

    assert asyncio.run(resolve()) == ("seat", "s101")


def test_token_cli_refuses_a_seat_token_without_a_seat(tmp_path: Path) -> None:
    done = _cli("--role", "seat", "--data-dir", str(tmp_path))
    assert done.returncode != 0
    assert done.stdout == ""
    assert "--seat" in done.stderr


def test_token_cli_with_postgres(pg_url: str, tmp_path: Path) -> None:
    done = _cli("--role", "admin", "--db-url", pg_url, "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("h122_")


async def test_cached_answer_is_dropped_when_the_token_is_revoked(db_url: str) -> None:
    async with scratch_engine(db_url) as engine:
        store = TokenStore(engine, cache_s=60.0)
        await store.create_schema()
        token = await store.create("supervisor")
        assert store.cached(token) is None  # nothing resolved yet: the API must ask the database
        who = await store.resolve(token)
        assert who is not None and store.cached(token) == who
        assert store.cached(token + "x") is None and store.cached(None) is None
        await store.revoke(who.token_id)
        assert store.cached(token) is None and await store.resolve(token) is None
