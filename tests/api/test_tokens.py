"""Tokens: stored hashed, resolved to a role, revocable; ``handoff122 token create`` prints one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from api.tokens import DEFAULT_TTL_DAYS, Role, TokenError, TokenStore, api_tokens, token_hash
from gateway.schema import schema_drift, upgrade_schema
from tests.api.conftest import Node
from tests.api.scratch import scratch_engine
from tests.conftest import own_pg_database

DAY = 86400.0


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


def _cli(*args: str, action: str = "create") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "token", action, *args],
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


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """An empty PostgreSQL database of its own (the CLI migrates the whole schema into it)."""
    with own_pg_database("handoff_tok") as url:
        yield url


def test_token_cli_with_postgres(fresh_pg_url: str, tmp_path: Path) -> None:
    done = _cli("--role", "admin", "--db-url", fresh_pg_url, "--data-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("h122_")
    listed = _cli("--db-url", fresh_pg_url, "--json", action="list")
    assert listed.returncode == 0, listed.stderr
    assert [(t["role"], t["state"]) for t in json.loads(listed.stdout)] == [("admin", "live")]


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


async def test_tokens_expire(store: TokenStore) -> None:
    now = time.time()
    for role, default in DEFAULT_TTL_DAYS.items():
        token = await store.create(role.value, "s1" if role is Role.SEAT else None, now=now)
        info = await store.info((await store.resolve(token)).token_id)  # type: ignore[union-attr]
        assert info is not None and info["expires_at"] == pytest.approx(now + default * DAY)
    old = await store.create("supervisor", now=now - 31 * DAY)  # made 31 days ago, 30-day default
    assert await store.resolve(old) is None
    short = await store.create("seat", "s1", ttl_days=2, now=now - 1 * DAY)
    assert await store.resolve(short) is not None
    with pytest.raises(TokenError):
        await store.create("seat", "s1", ttl_days=0)
    with pytest.raises(TokenError):
        await store.create("admin", ttl_days=5000)
    states = {t["state"] for t in await store.list()}
    assert states == {"live", "expired"}
    assert all(t["state"] == "live" for t in await store.list(include_dead=False))


async def test_use_is_remembered_and_listing_shows_no_secret(store: TokenStore) -> None:
    token = await store.create("supervisor", label="wallboard")
    who = await store.resolve(token)
    assert who is not None
    info = await store.info(who.token_id)
    assert info is not None and info["last_used_at"] is not None and info["label"] == "wallboard"
    for row in await store.list():
        assert set(row) == {"id", "role", "seat_id", "label", "created_at", "expires_at", "last_used_at",
                            "revoked_at", "state"}
        assert token not in json.dumps(row) and token_hash(token) not in json.dumps(row)


async def test_expired_and_revoked_tokens_get_401_over_http(node: Node) -> None:
    import httpx

    expired = await node.token_store.create("supervisor", now=time.time() - 40 * DAY)
    revoked = await node.token_store.create("supervisor")
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as client:
        h = {"Authorization": f"Bearer {revoked}"}
        assert (await client.get("/api/v1/queues", headers=h)).status_code == 200
        r = await client.post("/api/v1/admin/tokens", json={"role": "seat", "seat_id": "s1", "ttl_days": 1},
                              headers=node.auth("admin"))
        assert r.status_code == 201 and r.json()["expires_at"] == pytest.approx(time.time() + DAY, abs=60)
        listed = (await client.get("/api/v1/admin/tokens", headers=node.auth("admin"))).json()
        revoked_id = next(t["id"] for t in listed if t["last_used_at"] is not None and t["role"] == "supervisor"
                          and t["id"] > 2)
        assert (await client.delete(f"/api/v1/admin/tokens/{revoked_id}", headers=node.auth("admin"))).status_code == 204
        for token in (expired, revoked):
            r = await client.get("/api/v1/queues", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401 and r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
        states = {t["id"]: t["state"] for t in
                  (await client.get("/api/v1/admin/tokens", headers=node.auth("admin"))).json()}
        assert states[revoked_id] == "revoked" and "expired" in states.values()


def test_token_cli_list_and_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "var")]
    made = _cli("--role", "supervisor", "--ttl", "2", "--label", "wallboard", *data)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert _cli("--role", "seat", "--seat", "s7", *data).returncode == 0
    listed = _cli(*data, action="list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["id", "role", "seat", "label", "created", "expires", "last", "used", "state"]
    assert "wallboard" in lines[1] and "s7" in lines[2] and token not in listed.stdout
    rows = json.loads(_cli(*data, "--json", action="list").stdout)
    sup = next(r for r in rows if r["role"] == "supervisor")
    assert sup["expires_at"] - sup["created_at"] == pytest.approx(2 * DAY)
    seat = next(r for r in rows if r["role"] == "seat")
    assert seat["expires_at"] - seat["created_at"] == pytest.approx(30 * DAY)

    done = _cli(str(sup["id"]), *data, action="revoke")
    assert done.returncode == 0, done.stderr
    again = _cli(str(sup["id"]), *data, action="revoke")
    assert again.returncode == 1 and "no live token" in again.stderr
    assert [r["id"] for r in json.loads(_cli(*data, "--json", action="list").stdout)] == [seat["id"]]
    assert len(json.loads(_cli(*data, "--json", "--all", action="list").stdout)) == 2

    async def resolves() -> bool:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'var' / 'handoff122.sqlite3'}")
        try:
            return await TokenStore(engine).resolve(token) is not None
        finally:
            await engine.dispose()

    assert asyncio.run(resolves()) is False
    assert _cli("--role", "admin", "--ttl", "0", *data).returncode == 2


async def test_migrations_match_the_api_tables_and_keep_old_tokens_for_30_days(db_url: str) -> None:
    async with scratch_engine(db_url) as engine:
        await upgrade_schema(engine, "0001")
        async with engine.begin() as conn:  # a token as the 0001 schema stored it
            await conn.execute(sa.text("INSERT INTO api_tokens (token_sha256, role, created_at) "
                                       "VALUES (:h, 'supervisor', :t)"), {"h": token_hash("h122_legacy"), "t": 1.0})
        await upgrade_schema(engine)
        drift = [d for d in await schema_drift(engine) if "api_tokens" in repr(d) or "audit_log" in repr(d)]
        assert drift == []
        store = TokenStore(engine, cache_s=0)
        assert await store.resolve("h122_legacy") is not None
        (legacy,) = await store.list()
        assert legacy["expires_at"] == pytest.approx(time.time() + 30 * DAY, abs=300)
