"""API bearer tokens: stored as SHA-256 hashes, resolved to a role (and a seat for seat tokens).

The plaintext leaves this module once, from ``create``; a stolen database gives no usable token.
The table has its own ``MetaData`` (``api.tokens.metadata``) so that the node's one Alembic
environment can migrate it next to the routing and recordings tables without importing them here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

TOKEN_PREFIX = "h122_"
SEAT_ID_RE = re.compile(r"^[a-z0-9_-]{1,32}$")

metadata = sa.MetaData()

api_tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("seat_id", sa.String(32), nullable=True),
    sa.Column("label", sa.String(200), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
)


class Role(StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    SEAT = "seat"


class TokenError(ValueError):
    """A token request that cannot be honoured (seat role without a seat, bad seat id)."""


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


def _check_request(role: str, seat_id: str | None) -> tuple[Role, str | None]:
    try:
        r = Role(role)
    except ValueError as e:
        raise TokenError(f"unknown role {role!r} (admin, supervisor or seat)") from e
    if r is Role.SEAT:
        if not seat_id:
            raise TokenError("a seat token needs --seat ID")
        if not SEAT_ID_RE.match(seat_id):
            raise TokenError(f"seat id {seat_id!r} must match [a-z0-9_-]{{1,32}}")
        return r, seat_id
    if seat_id:
        raise TokenError("--seat is only for --role seat")
    return r, None


class TokenStore:
    """Tokens in the node's database.

    ``resolve`` runs on every request, so positive answers are kept for ``cache_s`` seconds; a
    revocation through this store takes effect at once, one made by another process within
    ``cache_s``.
    """

    def __init__(self, engine: AsyncEngine, cache_s: float = 5.0) -> None:
        self.engine = engine
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def create_schema(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def create(self, role: str, seat_id: str | None = None, label: str | None = None,
                     now: float | None = None) -> str:
        """Store a new token and return its plaintext (the only time it exists)."""
        r, seat = _check_request(role, seat_id)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.engine.begin() as conn:
            await conn.execute(api_tokens.insert().values(
                token_sha256=token_hash(token), role=r.value, seat_id=seat, label=label,
                created_at=time.time() if now is None else now))
        return token

    def cached(self, token: str | None) -> Principal | None:
        """A recent positive answer of ``resolve``, without I/O: safe from the API's own thread
        (one dict read), so most requests skip the hop to the control loop that owns the engine."""
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        hit = self._cache.get(token_hash(token))
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    async def resolve(self, token: str | None) -> Principal | None:
        if not token or not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        digest = token_hash(token)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                sa.select(api_tokens.c.id, api_tokens.c.token_sha256, api_tokens.c.role, api_tokens.c.seat_id)
                .where(api_tokens.c.token_sha256 == digest, api_tokens.c.revoked_at.is_(None))
            )).first()
        # The index lookup finds the row; the final comparison does not leak timing of a near miss.
        if row is None or not hmac.compare_digest(row.token_sha256, digest):
            return None
        principal = Principal(role=Role(row.role), seat_id=row.seat_id, token_id=row.id)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (time.monotonic() + self.cache_s, principal)
        return principal

    async def revoke(self, token_id: int, now: float | None = None) -> bool:
        """Revoke by id; True if a live token was revoked."""
        async with self.engine.begin() as conn:
            res = await conn.execute(
                api_tokens.update()
                .where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=time.time() if now is None else now))
        self._cache = {k: v for k, v in self._cache.items() if v[1].token_id != token_id}
        return bool(res.rowcount)

    async def list(self) -> list[dict[str, object]]:
        """Token metadata for the admin (never the hash)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(api_tokens.c.id, api_tokens.c.role, api_tokens.c.seat_id, api_tokens.c.label,
                          api_tokens.c.created_at, api_tokens.c.revoked_at).order_by(api_tokens.c.id)
            )).mappings().all()
        return [dict(r) for r in rows]


def default_db_url(data_dir: Path) -> str:
    """The same default as ``gateway.settings.Settings.database_url``."""
    return f"sqlite+aiosqlite:///{(data_dir / 'handoff122.sqlite3').resolve()}"


async def _create_token(role: str, seat_id: str | None, url: str) -> str:
    engine = create_async_engine(url)
    try:
        store = TokenStore(engine)
        await store.create_schema()
        return await store.create(role, seat_id, label="cli")
    finally:
        await engine.dispose()


def create_token_main(role: str, seat_id: str | None, data_dir: Path, db_url: str | None) -> int:
    """``handoff122 token create``: print only the token on stdout, so scripts can capture it."""
    try:
        _check_request(role, seat_id)
    except TokenError as e:
        print(f"handoff122: {e}", file=sys.stderr)
        return 2
    if db_url is None:
        data_dir.mkdir(parents=True, exist_ok=True)
    url = db_url or default_db_url(data_dir)
    try:
        token = asyncio.run(_create_token(role, seat_id, url))
    except Exception as e:  # one line for the operator, not a traceback
        print(f"handoff122: cannot store the token in {url.split('@')[-1]}: {e.__class__.__name__}: {e}",
              file=sys.stderr)
        return 1
    print(token)
    return 0
