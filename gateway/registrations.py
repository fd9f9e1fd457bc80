"""Seat phones that REGISTER at the front door: credentials in, registrations out.

Kamailio authenticates (digest, ``auth``'s ``pv_auth_check`` against an HA1 the node loads into
the ``seatha1`` hash table over RPC: no password and no credentials file ever exist) and keeps the
registrations in memory (``registrar`` + ``usrloc``).  The node polls ``ul.dump`` once a second and
turns what changed into routing commands:

* a seat whose phone registered gets that contact (the worker dials it there);
* a seat whose registration expired or was removed loses its contact and goes ``logged_out`` with
  the reason, so the ACD never offers it a call it cannot ring.

The ACD refuses ``available`` for a seat without a contact (``routing.acd``), so a registered seat is
offered calls only while it is registered and its agent is ready.

Credentials set or removed through the admin API (``gateway.seat_credentials``) take effect here at
once: ``set_credentials`` loads the HA1 into the hash table, ``remove_credentials`` deletes it,
removes the phone's current registration (``ul.rm``) and logs the seat out with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from routing.acd import SeatSpec
from routing.errors import DuplicateId, RoutingError
from routing.status import SeatStatus

log = logging.getLogger("gateway.registrations")

HA1_TABLE = "seatha1"
LOCATION_TABLE = "location"
CREDENTIALS_REMOVED = "registration credentials removed"


@dataclass(frozen=True, slots=True)
class Registered:
    username: str
    contact: str
    expires_s: float


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "AoR" in node and "Contacts" in node:
            yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def parse_ul_dump(dump: Any) -> dict[str, Registered]:
    """``ul.dump``'s answer as username -> the newest live contact (Kamailio 5.x shape)."""
    out: dict[str, Registered] = {}
    for aor in _walk(dump):
        for c in aor.get("Contacts") or []:
            contact = c.get("Contact", c) if isinstance(c, dict) else {}
            address, expires = contact.get("Address"), contact.get("Expires")
            if not isinstance(address, str) or not address.startswith("sip"):
                continue
            try:
                left = float(expires)
            except (TypeError, ValueError):
                left = 1.0 if expires == "permanent" else 0.0  # "expired", "deleted": gone
            if left <= 0:
                continue
            out[str(aor["AoR"]).split("@")[0]] = Registered(str(aor["AoR"]), address, left)
    return out


class SeatRegistrations:
    """Keeps the routing service's seats in step with Kamailio's registrations."""

    def __init__(self, rpc: Callable[..., Awaitable[Any]], routing: Any, seats: list[SeatSpec],
                 poll_s: float = 1.0, via: str | None = None, fixed_aor: bool = False) -> None:
        self.rpc = rpc
        # cluster mode: the routing authority already dials each seat at its AOR on the front door
        # (gateway.node); a registration changes no contact, and a lost one only logs the seat out
        self.fixed_aor = fixed_aor
        # a cluster front door (host:port): a registered seat is dialled as sip:<user>@front, so the
        # INVITE passes the front door's one-call-per-seat dialog profile whichever node sends it
        self.via = via
        self.routing = routing
        self.by_user = {s.register_user: s for s in seats if s.register_user}
        self.poll_s = poll_s
        self.current: dict[str, str] = {}     # seat id -> registered contact
        self._task: asyncio.Task[None] | None = None

    async def load_credentials(self) -> None:
        """Put each seat phone's HA1 into Kamailio's hash table (RPC; never a file)."""
        for user, spec in self.by_user.items():
            await self.rpc("htable.sets", HA1_TABLE, user, spec.ha1 or "")

    def start(self) -> None:
        """Poll the registrations (idle while no seat has credentials: the admin API may add some)."""
        self._task = asyncio.ensure_future(self._run())

    def user_of(self, seat_id: str) -> str | None:
        return next((u for u, spec in self.by_user.items() if spec.id == seat_id), None)

    async def set_credentials(self, spec: SeatSpec) -> None:
        """Let ``spec.id``'s phone register as ``spec.register_user`` with ``spec.ha1`` from now on.

        ``spec.contact`` is the seat's fixed contact, given back if the credentials are removed.
        A phone registered under the seat's previous username loses its registration.
        """
        user = spec.register_user
        assert user and spec.ha1
        other = self.by_user.get(user)
        if other is not None and other.id != spec.id:
            raise DuplicateId(f"username {user!r} is seat {other.id}'s")
        previous = self.user_of(spec.id)
        if previous is not None and previous != user:
            await self._forget(previous)
            self._lost(self.by_user.pop(previous), "registration credentials changed",
                       logout=spec.id in self.current)
        await self.rpc("htable.sets", HA1_TABLE, user, spec.ha1)
        self.by_user[user] = spec
        self._update(spec, self.current.get(spec.id, self._contact_now(spec)))
        log.info("seat_credentials_set", extra={"seat_id": spec.id, "username": user})

    async def remove_credentials(self, seat_id: str) -> SeatSpec | None:
        """The seat's phone may no longer register: HA1 deleted, its registration removed, the seat
        given back its fixed contact (if any) and logged out with the reason.  Its spec, or None."""
        user = self.user_of(seat_id)
        if user is None:
            return None
        spec = self.by_user.pop(user)
        await self._forget(user)
        self._lost(spec, CREDENTIALS_REMOVED)
        log.info("seat_credentials_removed", extra={"seat_id": seat_id, "username": user})
        return spec

    async def _forget(self, user: str) -> None:
        await self.rpc("htable.delete", HA1_TABLE, user)
        try:
            await self.rpc("ul.rm", LOCATION_TABLE, user)
        except Exception as e:  # not registered now: nothing to remove
            log.debug("seat_registration_not_removed", extra={"username": user, "error": str(e)[:200]})

    def _lost(self, spec: SeatSpec, reason: str, logout: bool = True) -> None:
        """A seat that no longer has a registered phone: its fixed contact (if any), logged out."""
        was = self.current.pop(spec.id, None)
        fixed = replace(spec, register_user=None, ha1=None) if self.user_of(spec.id) is None else spec
        self._update(fixed, spec.contact)
        if was is not None:
            log.info("seat_registration_lost", extra={"seat_id": spec.id, "contact": was})
        if logout:
            self._logged_out(spec.id, reason)

    def _contact_now(self, spec: SeatSpec) -> str:
        try:
            return str(self.routing.acd.seat_view(spec.id, time.time()).get("contact") or "")
        except RoutingError:
            return spec.contact

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                if self.by_user:
                    self.apply(parse_ul_dump(await self.rpc("ul.dump")))
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Kamailio busy or restarting: keep what we know, try again
                log.warning("registrations_poll_failed", extra={"error": str(e)[:200]})
            await asyncio.sleep(self.poll_s)

    def apply(self, registered: dict[str, Registered]) -> None:
        for user, spec in self.by_user.items():
            reg = registered.get(user)
            was = self.current.get(spec.id)
            if reg is not None and reg.contact != was:
                self.current[spec.id] = reg.contact
                log.info("seat_registered", extra={"seat_id": spec.id, "contact": reg.contact,
                                                   "expires_s": reg.expires_s})
                if not self.fixed_aor:
                    self._update(spec, f"sip:{user}@{self.via}" if self.via else reg.contact)
            elif reg is None and was is not None:
                del self.current[spec.id]
                log.info("seat_registration_lost", extra={"seat_id": spec.id, "contact": was})
                if not self.fixed_aor:
                    self._update(spec, "")
                self._logged_out(spec.id, "registration expired or removed")

    def _update(self, spec: SeatSpec, contact: str) -> None:
        try:
            view = self.routing.acd.seat_view(spec.id, time.time())
            skills = view.get("skills") or spec.skills
            self.routing.update_seat(replace(spec, contact=contact, skills=dict(skills),
                                             name=str(view.get("name") or spec.name),
                                             status=SeatStatus(str(view.get("status", spec.status)))))
        except (RoutingError, KeyError, ValueError) as e:
            log.warning("seat_registration_update_failed", extra={"seat_id": spec.id, "error": str(e)})

    def _logged_out(self, seat_id: str, reason: str) -> None:
        try:
            self.routing.set_status(seat_id, SeatStatus.LOGGED_OUT, reason)
        except RoutingError as e:  # on a call: the call goes on, the next status change will do it
            log.warning("seat_logout_refused", extra={"seat_id": seat_id, "error": str(e)})
