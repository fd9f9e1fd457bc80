"""One elected routing authority per cluster, and the fencing of its seat offers (issue 14).

Why PostgreSQL and not a home-made consensus, MQTT or Redlock: every node already depends on the
database for the event log, and a lock service that is not the store being written cannot fence a
stale leader (a paused Redlock holder writes after its lease ran out; a broker has no notion of
"the current leader" at all).  Here the lock and the fence live in the same database as the rows
they protect, so the check "is this epoch still the current one" is part of the very transaction
that writes the offer.

- **Campaign.**  Each node's control process keeps one dedicated asyncpg connection and polls
  ``pg_try_advisory_lock``.  The session that holds it is the leader.  The connection is opened with
  short server-side TCP keepalives and ``tcp_user_timeout`` (a dead or partitioned host is dropped by
  the server within seconds, which releases the lock) and with ``idle_session_timeout`` while the
  leader pings every ``ping_interval``: a frozen leader (``SIGSTOP``, a long GC pause, a stuck
  event loop) stops pinging, the server ends its session and the lock passes on.  The kernel would
  keep answering keepalives for a frozen process, so keepalives alone do not cover that case.
- **Epoch.**  Right after taking the lock, the winner increments the one ``routing_epoch`` row and
  revokes offers of older epochs that no node has started dialing; the new epoch is its fencing
  token.
- **Demotion.**  A ping that fails or times out means the lock may be gone: the leader calls
  ``on_demoted`` at once and campaigns again from scratch (with a new epoch if it wins).
- **Fencing at the seat.**  :func:`claim_offer` writes an offer only while the caller's epoch is
  the current one (the epoch row is read ``FOR SHARE``, so an election cannot slip in between) and
  only if the seat is still available; :func:`start_dialing` moves it on only while that offer's
  epoch is still current.  A deposed leader's late offer therefore never reaches a seat.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

log = logging.getLogger("routing.authority")

#: The advisory lock key of the routing authority (one cluster per database).  "h122" in ASCII.
AUTHORITY_LOCK_KEY = 0x68313232

#: Event kinds this module appends to the ACD event log.  Not ``routing.events.EventKind`` members:
#: the ACD's restore skips kinds it does not know, and these are the authority's, not the ACD's.
KIND_ELECTED = "ELECTED"
KIND_OFFER = "SEATOFFER"
KIND_DIALING = "SEATDIALING"
KIND_RELEASE = "SEATRELEASE"
KIND_REVOKED = "OFFERREVOKED"

#: Server-side settings of the authority's dedicated connection (milliseconds / seconds as
#: PostgreSQL reads them).  Keepalives and the user timeout catch a dead host or a partition; the
#: idle-session timeout catches a frozen process that no longer pings.
def authority_server_settings(lease_s: float) -> dict[str, str]:
    return {
        "tcp_keepalives_idle": "1",
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": "3",
        "tcp_user_timeout": str(int(lease_s * 1000)),
        "idle_session_timeout": str(int(lease_s * 1000)),
        "application_name": "handoff122-authority",
    }


#: The campaign session of each node is named after it: the leader sees which nodes are alive.
SESSION_PREFIX = "handoff122-authority:"


def session_name(node_id: str) -> str:
    return (SESSION_PREFIX + node_id)[:63]


async def live_nodes(conn: asyncpg.Connection) -> set[str]:
    """The nodes whose campaign session is open now (the leader's own included)."""
    rows = await conn.fetch("SELECT application_name FROM pg_stat_activity WHERE datname = current_database() "
                            "AND application_name LIKE $1", SESSION_PREFIX + "%")
    return {r["application_name"][len(SESSION_PREFIX):] for r in rows}


def plain_dsn(url: str) -> str:
    """asyncpg takes ``postgresql://``; the settings carry SQLAlchemy's ``postgresql+asyncpg://``."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def connect_worker(url: str, lease_s: float = 3.0) -> asyncpg.Connection:
    """A connection for writing offers: a transaction left open by a frozen process is ended by the
    server after ``lease_s``, so it cannot hold the epoch row and stall the next election."""
    return await asyncpg.connect(plain_dsn(url), server_settings={
        "tcp_keepalives_idle": "1",
        "tcp_keepalives_interval": "1",
        "tcp_keepalives_count": "3",
        "idle_in_transaction_session_timeout": str(int(lease_s * 1000)),
    })


class RoutingAuthority:
    """Campaigns for the routing authority of the cluster and holds it while its session lives.

    ``epoch`` is the fencing token while this node leads, ``None`` otherwise.  ``on_elected`` and
    ``on_demoted`` are called in the campaign's task; ``on_demoted`` is called as soon as the
    leader cannot prove it still holds its session (before any reconnect), so it must stop acting.
    """

    def __init__(self, url: str, node_id: str, *,
                 on_elected: Callable[[int], Awaitable[None] | None] | None = None,
                 on_demoted: Callable[[int], Awaitable[None] | None] | None = None,
                 lease_s: float = 3.0, ping_interval_s: float = 0.5, retry_interval_s: float = 0.1,
                 lock_key: int = AUTHORITY_LOCK_KEY) -> None:
        if ping_interval_s * 2 >= lease_s:
            raise ValueError(f"ping_interval_s ({ping_interval_s}) must be well under lease_s ({lease_s})")
        self.url = plain_dsn(url)
        self.node_id = node_id
        self.on_elected = on_elected
        self.on_demoted = on_demoted
        self.lease_s = lease_s
        self.ping_interval_s = ping_interval_s
        self.retry_interval_s = retry_interval_s
        self.lock_key = lock_key
        self.epoch: int | None = None
        self._conn: asyncpg.Connection | None = None
        self._stopping = False

    @property
    def is_leader(self) -> bool:
        return self.epoch is not None

    async def run(self) -> None:
        """Campaign, lead, and campaign again after a demotion, until :meth:`stop`."""
        last_failure = ""
        while not self._stopping:
            try:
                self._conn = await asyncio.wait_for(asyncpg.connect(self.url, server_settings={
                    **authority_server_settings(self.lease_s), "application_name": session_name(self.node_id)}),
                    self.lease_s)
                if self._conn.get_server_version().major < 14:
                    raise RuntimeError("the routing authority needs PostgreSQL 14 or newer "
                                       "(idle_session_timeout is its lease)")
                await self._campaign(self._conn)
                await self._lead(self._conn)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any failure of the session (network, server, timeout) means the
                failure = f"{type(e).__name__}: {e}"  # lock may be gone: demote, then campaign again
                if failure != last_failure:  # one line per new cause, not one per retry
                    log.warning("routing authority session of %s ended or failed: %s (epoch %s)",
                                self.node_id, failure, self.epoch)
                last_failure = failure
            finally:
                await self._demote()
            if not self._stopping:
                await asyncio.sleep(self.retry_interval_s)

    async def stop(self) -> None:
        """Step down cleanly: closing the session releases the lock for the next node at once."""
        self._stopping = True
        await self._demote()

    def resign(self) -> None:
        """Give the authority up now (the leader found it cannot go on routing): the session is
        closed, which releases the lock; ``on_demoted`` follows and the campaign goes on."""
        if self._conn is not None:
            self._conn.terminate()

    async def _campaign(self, conn: asyncpg.Connection) -> None:
        while not self._stopping:
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.lock_key, timeout=self.lease_s):
                self.epoch = await asyncio.wait_for(self._take_office(conn), self.lease_s)
                log.info("%s is the routing authority, epoch %d", self.node_id, self.epoch)
                await _call(self.on_elected, self.epoch)
                return
            # Not idle for longer than the idle-session timeout: stay in the running.
            await asyncio.sleep(self.retry_interval_s)

    async def _take_office(self, conn: asyncpg.Connection) -> int:
        """Increment the epoch and revoke the previous epochs' offers that no node dials yet."""
        now = time.time()
        async with conn.transaction():
            epoch = int(await conn.fetchval(
                "UPDATE routing_epoch SET epoch = epoch + 1, leader_node = $1, elected_at = $2 "
                "WHERE id = 1 RETURNING epoch", self.node_id, now))
            revoked = await conn.fetch(
                "UPDATE seat_offers SET state = 'available', call_id = NULL, updated_at = $2 "
                "FROM (SELECT seat_id, call_id FROM seat_offers WHERE state = 'offered' AND epoch < $1 "
                "      FOR UPDATE) AS old "
                "WHERE seat_offers.seat_id = old.seat_id RETURNING old.seat_id, old.call_id", epoch, now)
            await _append(conn, KIND_ELECTED, None, None, {"epoch": epoch, "node_id": self.node_id}, now)
            for row in revoked:
                await _append(conn, KIND_REVOKED, row["call_id"], row["seat_id"], {"epoch": epoch}, now)
        return epoch

    async def _lead(self, conn: asyncpg.Connection) -> None:
        """Ping until the session fails; any failure ends the leadership (the caller demotes)."""
        while not self._stopping:
            await asyncio.sleep(self.ping_interval_s)
            await conn.fetchval("SELECT 1", timeout=self.ping_interval_s * 2)

    async def _demote(self) -> None:
        epoch, self.epoch = self.epoch, None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # never wait on a session that may be dead
        if epoch is not None:
            log.warning("%s is no longer the routing authority (epoch %d)", self.node_id, epoch)
            await _call(self.on_demoted, epoch)


async def _call(cb: Callable[[int], Awaitable[None] | None] | None, epoch: int) -> None:
    if cb is not None:
        result = cb(epoch)
        if inspect.isawaitable(result):
            await result


async def _append(conn: asyncpg.Connection, kind: str, call_id: str | None, seat_id: str | None,
                  data: dict[str, Any], at: float | None = None) -> None:
    await conn.execute("INSERT INTO events (at, kind, call_id, seat_id, data) VALUES ($1, $2, $3, $4, $5)",
                       at if at is not None else time.time(), kind, call_id, seat_id, json.dumps(data))


async def _current_epoch_locked(conn: asyncpg.Connection) -> int:
    """The current epoch, read ``FOR SHARE``: an election (which updates the row) waits for us."""
    return int(await conn.fetchval("SELECT epoch FROM routing_epoch WHERE id = 1 FOR SHARE"))


async def add_seat(conn: asyncpg.Connection, seat_id: str) -> None:
    """Make ``seat_id`` known to the fence (available), if it is not already."""
    await conn.execute("INSERT INTO seat_offers (seat_id, state, updated_at) VALUES ($1, 'available', $2) "
                       "ON CONFLICT (seat_id) DO NOTHING", seat_id, time.time())


async def claim_offer(conn: asyncpg.Connection, epoch: int, seat_id: str, call_id: str,
                      attempt: int | None = None) -> bool:
    """The leader offers ``call_id`` to ``seat_id``: True only if ``epoch`` is the current epoch and
    the seat was available.  One transaction: fence check, compare-and-set, event.  ``attempt``:
    the ACD's attempt number, which ``start_dialing`` can then require."""
    now = time.time()
    async with conn.transaction():
        if await _current_epoch_locked(conn) != epoch:
            return False
        status = await conn.execute(
            "UPDATE seat_offers SET state = 'offered', call_id = $2, epoch = $3, node_id = NULL, updated_at = $4, "
            "attempt = $5 WHERE seat_id = $1 AND state = 'available'", seat_id, call_id, epoch, now, attempt)
        if status != "UPDATE 1":
            return False
        await _append(conn, KIND_OFFER, call_id, seat_id, {"epoch": epoch}, now)
    return True


async def start_dialing(conn: asyncpg.Connection, seat_id: str, call_id: str, node_id: str | None = None,
                        epoch: int | None = None, attempt: int | None = None) -> bool:
    """The dialing node takes the offer: True only if it is still offered for ``call_id`` and was
    made in the current epoch.  Dial the seat only after True.  ``epoch`` / ``attempt``: those of
    the offer the node received; they must match the one at the fence (a deposed leader's offer,
    or an earlier attempt, for the same call and seat is never taken for the current one)."""
    now = time.time()
    async with conn.transaction():
        current = await _current_epoch_locked(conn)
        if epoch is not None and epoch != current:
            return False
        epoch = current
        status = await conn.execute(
            "UPDATE seat_offers SET state = 'dialing', node_id = $4, updated_at = $5 "
            "WHERE seat_id = $1 AND call_id = $2 AND state = 'offered' AND epoch = $3 "
            "AND ($6::integer IS NULL OR attempt = $6::integer)",
            seat_id, call_id, epoch, node_id, now, attempt)
        if status != "UPDATE 1":
            return False
        await _append(conn, KIND_DIALING, call_id, seat_id, {"epoch": epoch, "node_id": node_id}, now)
    return True


async def withdraw_offer(conn: asyncpg.Connection, epoch: int, seat_id: str, call_id: str) -> bool:
    """The leader takes back an offer no node has started dialing (its ring timer ran out, the
    caller left, the call was lost): the seat is available again.  Fenced like ``claim_offer``; a
    no-op (False) once the offer is being dialed, which only the dialing node releases."""
    now = time.time()
    async with conn.transaction():
        if await _current_epoch_locked(conn) != epoch:
            return False
        status = await conn.execute(
            "UPDATE seat_offers SET state = 'available', call_id = NULL, epoch = NULL, node_id = NULL, "
            "updated_at = $3 WHERE seat_id = $1 AND call_id = $2 AND state = 'offered'", seat_id, call_id, now)
        if status != "UPDATE 1":
            return False
        await _append(conn, KIND_RELEASE, call_id, seat_id, {"epoch": epoch, "withdrawn": True}, now)
    return True


async def release(conn: asyncpg.Connection, seat_id: str, call_id: str) -> bool:
    """The call is over (or the dial failed): the seat is available again.  Not fenced by epoch, a
    release only ever frees what ``call_id`` held.  False when the seat did not hold that call."""
    now = time.time()
    async with conn.transaction():
        status = await conn.execute(
            "UPDATE seat_offers SET state = 'available', call_id = NULL, epoch = NULL, node_id = NULL, "
            "updated_at = $3 WHERE seat_id = $1 AND call_id = $2 AND state IN ('offered', 'dialing')",
            seat_id, call_id, now)
        if status != "UPDATE 1":
            return False
        await _append(conn, KIND_RELEASE, call_id, seat_id, {}, now)
    return True


async def seat_state(conn: asyncpg.Connection, seat_id: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("SELECT * FROM seat_offers WHERE seat_id = $1", seat_id)
    return dict(row) if row is not None else None

async def last_elected(conn: asyncpg.Connection) -> str | None:
    """The node id of the last node elected (``routing_epoch``): the leader, unless it died and no
    other has won yet.  Readers that only prefer the leader (the cluster's API door) need no more."""
    value = await conn.fetchval("SELECT leader_node FROM routing_epoch WHERE id = 1")
    return None if value is None else str(value)


__all__ = [
    "AUTHORITY_LOCK_KEY", "RoutingAuthority", "add_seat", "authority_server_settings", "claim_offer",
    "connect_worker", "last_elected", "plain_dsn", "release", "seat_state", "start_dialing", "withdraw_offer",
]
