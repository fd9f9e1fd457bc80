"""API bearer tokens: stored as SHA-256 hashes, resolved to a role (and a seat for seat tokens).

The plaintext leaves this module once, from ``create``; a stolen database gives no usable token.
Every token expires (``DEFAULT_TTL_DAYS`` per role unless asked otherwise), remembers when it was
last used, and can be revoked by id.  The tables live in ``api.tables``; ``metadata`` is
re-exported here for the node's Alembic environment.

The ``*_main`` functions are ``handoff122 token create|list|revoke``; they take ``prepare``, the
composition root's way to bring the database to the current schema before touching it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.tables import api_tokens, metadata

__all__ = ["DEFAULT_TTL_DAYS", "Principal", "Role", "TokenError", "TokenStore", "api_tokens", "metadata",
           "token_hash"]

TOKEN_PREFIX = "h122_"
SEAT_ID_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
MAX_TTL_DAYS = 3650.0
#: How often ``last_used_at`` is written for a busy token (one UPDATE per token per minute at most).
LAST_USED_EVERY_S = 60.0


class Role(StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    SEAT = "seat"


#: Seat and supervisor tokens live for a month (a shift pattern's rotation); admin tokens, which
#: can install flows and mint tokens, for a week.
DEFAULT_TTL_DAYS: dict[Role, float] = {Role.SEAT: 30.0, Role.SUPERVISOR: 30.0, Role.ADMIN: 7.0}


class TokenError(ValueError):
    """A token request that cannot be honoured (seat role without a seat, bad seat id, bad TTL)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the role and, for a seat token, the one seat it may act on."""

    role: Role
    seat_id: str | None
    token_id: int

    def is_supervisor(self) -> bool:
        """Admins can do everything a supervisor can."""
        return self.role in (Role.ADMIN, Role.SUPERVISOR)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_request(role: str, seat_id: str | None, ttl_days: float | None = None) -> tuple[Role, str | None, float]:
    try:
        r = Role(role)
    except ValueError as e:
        raise TokenError(f"unknown role {role!r} (admin, supervisor or seat)") from e
    ttl = DEFAULT_TTL_DAYS[r] if ttl_days is None else float(ttl_days)
    if not 0 < ttl <= MAX_TTL_DAYS:
        raise TokenError(f"--ttl must be more than 0 and at most {MAX_TTL_DAYS:g} days")
    if r is Role.SEAT:
        if not seat_id:
            raise TokenError("a seat token needs --seat ID")
        if not SEAT_ID_RE.match(seat_id):
            raise TokenError(f"seat id {seat_id!r} must match [a-z0-9_-]{{1,32}}")
        return r, seat_id, ttl
    if seat_id:
        raise TokenError("--seat is only for --role seat")
    return r, None, ttl


def _well_formed(token: str | None) -> bool:
    return bool(token) and token.startswith(TOKEN_PREFIX) and len(token) <= 200  # type: ignore[union-attr]


class TokenStore:
    """Tokens in the node's database.

    ``resolve`` runs on every request, so positive answers are kept for ``cache_s`` seconds (never
    past the token's expiry); a revocation through this store takes effect at once, one made by
    another process (``handoff122 token revoke``) within ``cache_s``.
    """

    def __init__(self, engine: AsyncEngine, cache_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self.cache_s = cache_s
        self.clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def create_schema(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def create(self, role: str, seat_id: str | None = None, label: str | None = None,
                     now: float | None = None, ttl_days: float | None = None) -> str:
        """Store a new token and return its plaintext (the only time it exists)."""
        r, seat, ttl = _check_request(role, seat_id, ttl_days)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        created = self.clock() if now is None else now
        async with self.engine.begin() as conn:
            await conn.execute(api_tokens.insert().values(
                token_sha256=token_hash(token), role=r.value, seat_id=seat, label=label,
                created_at=created, expires_at=created + ttl * 86400.0))
        return token

    def cached(self, token: str | None) -> Principal | None:
        """A recent positive answer of ``resolve``, without I/O: safe from the API's own thread
        (one dict read), so most requests skip the hop to the control loop that owns the engine."""
        if not _well_formed(token):
            return None
        hit = self._cache.get(token_hash(token))  # type: ignore[arg-type]
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def resolve(self, token: str | None) -> Principal | None:
        """The token's principal; None when it is unknown, revoked or expired."""
        if not _well_formed(token):
            return None
        digest = token_hash(token)  # type: ignore[arg-type]
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        now = self.clock()
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(api_tokens.c.id, api_tokens.c.token_sha256, api_tokens.c.role, api_tokens.c.seat_id,
                          api_tokens.c.expires_at, api_tokens.c.last_used_at)
                .where(api_tokens.c.token_sha256 == digest, api_tokens.c.revoked_at.is_(None))
            )).first()
        # The index lookup finds the row; the final comparison does not leak timing of a near miss.
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            return None
        if row.expires_at is not None and row.expires_at <= now:
            return None
        if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY_S:
            async with self.engine.begin() as conn:
                await conn.execute(api_tokens.update().where(api_tokens.c.id == row.id).values(last_used_at=now))
        principal = Principal(role=Role(row.role), seat_id=row.seat_id, token_id=row.id)
        keep_s = self.cache_s if row.expires_at is None else min(self.cache_s, row.expires_at - now)
        if keep_s > 0:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (time.monotonic() + keep_s, principal)
        return principal

    async def revoke(self, token_id: int, now: float | None = None) -> bool:
        """Revoke by id; True if a live token was revoked."""
        async with self.engine.begin() as conn:
            res = await conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.clock() if now is None else now))
        self._cache = {k: v for k, v in self._cache.items() if v[1].token_id != token_id}
        return bool(res.rowcount)

    async def info(self, token_id: int) -> dict[str, Any] | None:
        """One token's metadata, as ``list`` gives it."""
        rows = await self.list(token_id=token_id)
        return rows[0] if rows else None

    async def list(self, include_dead: bool = True, token_id: int | None = None) -> list[dict[str, Any]]:
        """Token metadata (never the hash nor the token), oldest first; ``include_dead=False`` leaves
        out revoked and expired ones."""
        q = sa.select(api_tokens.c.id, api_tokens.c.role, api_tokens.c.seat_id, api_tokens.c.label,
                      api_tokens.c.created_at, api_tokens.c.expires_at, api_tokens.c.last_used_at,
                      api_tokens.c.revoked_at).order_by(api_tokens.c.id)
        if token_id is not None:
            q = q.where(api_tokens.c.id == token_id)
        if not include_dead:
            q = q.where(api_tokens.c.revoked_at.is_(None),
                        sa.or_(api_tokens.c.expires_at.is_(None), api_tokens.c.expires_at > self.clock()))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        now = self.clock()
        return [{**r, "state": token_state(r, now)} for r in rows]


def token_state(row: Any, now: float) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "live"


# -- handoff122 token create | list | revoke ------------------------------------------------------

Prepare = Callable[[AsyncEngine], Awaitable[None]]
T = TypeVar("T")


def default_db_url(data_dir: Path) -> str:
    """The same default as ``gateway.settings.Settings.database_url``."""
    return f"sqlite+aiosqlite:///{(data_dir / 'handoff122.sqlite3').resolve()}"


async def _create_schema_only(engine: AsyncEngine) -> None:
    await TokenStore(engine).create_schema()


def _with_store(data_dir: Path, db_url: str | None, prepare: Prepare | None,
                work: Callable[[TokenStore], Awaitable[T]]) -> T:
    """Run ``work`` on a store over the operator's database, prepared to the current schema."""
    if db_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
    url = db_url or default_db_url(data_dir)

    async def run() -> T:
        engine = create_async_engine(url)
        try:
            await (prepare or _create_schema_only)(engine)
            return await work(TokenStore(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _fail(what: str, db_url: str | None, data_dir: Path, e: Exception) -> int:
    where = (db_url or default_db_url(data_dir)).split("@")[-1]
    print(f"handoff122: cannot {what} in {where}: {e.__class__.__name__}: {str(e).splitlines()[0][:300]}",
          file=sys.stderr)
    return 1


def create_token_main(role: str, seat_id: str | None, data_dir: Path, db_url: str | None,
                      ttl_days: float | None = None, label: str | None = "cli", prepare: Prepare | None = None) -> int:
    """``handoff122 token create``: print only the token on stdout, so scripts can capture it."""
    try:
        _check_request(role, seat_id, ttl_days)
    except TokenError as e:
        print(f"handoff122: {e}", file=sys.stderr)
        return 2
    try:
        token = _with_store(data_dir, db_url, prepare,
                            lambda store: store.create(role, seat_id, label=label, ttl_days=ttl_days))
    except Exception as e:  # one line for the operator, not a traceback
        return _fail("store the token", db_url, data_dir, e)
    print(token)
    return 0


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%MZ")


def format_token_table(rows: list[dict[str, Any]]) -> str:
    head = ("id", "role", "seat", "label", "created", "expires", "last used", "state")
    lines = [head] + [(str(r["id"]), r["role"], r["seat_id"] or "-", (r["label"] or "-")[:24], _when(r["created_at"]),
                       _when(r["expires_at"]), _when(r["last_used_at"]), r["state"]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines)


def list_tokens_main(data_dir: Path, db_url: str | None, include_dead: bool = False, as_json: bool = False,
                     prepare: Prepare | None = None) -> int:
    """``handoff122 token list``: id, role, seat, created, expires, last used; never a secret."""
    try:
        rows = _with_store(data_dir, db_url, prepare, lambda store: store.list(include_dead=include_dead))
    except Exception as e:
        return _fail("list the tokens", db_url, data_dir, e)
    print(json.dumps(rows) if as_json else format_token_table(rows))
    return 0


def revoke_token_main(token_id: int, data_dir: Path, db_url: str | None, prepare: Prepare | None = None) -> int:
    """``handoff122 token revoke ID``: 0 if a live token was revoked, 1 if there was none."""
    try:
        revoked = _with_store(data_dir, db_url, prepare, lambda store: store.revoke(token_id))
    except Exception as e:
        return _fail("revoke the token", db_url, data_dir, e)
    if not revoked:
        print(f"handoff122: no live token {token_id}", file=sys.stderr)
        return 1
    print(f"revoked token {token_id}", file=sys.stderr)
    return 0
