"""A node's control process in cluster mode: the campaign for the routing authority, the ACD
while it leads, and the client through which its own calls are routed, whoever leads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from sqlalchemy.ext.asyncio import AsyncEngine

from routing.acd import (
    Acd,
    AcdConfig,
    SeatSpec,
)
from routing.authority import (
    RoutingAuthority,
)
from routing.bus import EventBus
from routing.cluster.channel import RoutingClient
from routing.cluster.leader import ClusterRouting

log = logging.getLogger("routing.cluster")


class ClusterNode:
    """What a node's control process runs in cluster mode: the campaign, the ACD while it leads,
    and the client through which its own calls are routed (whoever leads)."""

    def __init__(self, url: str, engine: AsyncEngine, node_id: str, make_acd: Callable[[], Acd] | None = None,
                 seats: Iterable[SeatSpec] = (), lease_s: float = 3.0,
                 on_elected: Callable[[int], Awaitable[None] | None] | None = None,
                 on_demoted: Callable[[int], Awaitable[None] | None] | None = None,
                 node_grace_s: float = 30.0, make_bus: Callable[[], EventBus | None] | None = None) -> None:
        self.node_id = node_id
        self.routing = ClusterRouting(url, engine, node_id, make_acd or (lambda: Acd(AcdConfig())), seats, lease_s,
                                      node_grace_s=node_grace_s, make_bus=make_bus)
        self.client = RoutingClient(url, node_id, lease_s)
        self._user_elected = on_elected
        self._user_demoted = on_demoted
        self.authority = RoutingAuthority(url, node_id, on_elected=self._elected, on_demoted=self._demoted,
                                          lease_s=lease_s)
        self.routing.resign = self.authority.resign
        self._campaign: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None

    async def start(self, campaign: bool = True) -> None:
        """Connect the client; campaign at once unless ``campaign`` is False (then :meth:`campaign`)."""
        await self.client.start()
        if campaign:
            self.campaign()

    def campaign(self) -> None:
        """Stand for the routing authority.  A node campaigns once its own start is done: a leader
        elected while its process is still busy starting (imports, workers, adoption) could miss
        its lease pings on a loaded machine and cost the cluster an election."""
        if self._campaign is None:
            self._campaign = asyncio.create_task(self.authority.run(), name="routing-authority")

    async def stop(self) -> None:
        await self.authority.stop()
        if self._campaign is not None:
            self._campaign.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._campaign
        await self.client.stop()

    async def _elected(self, epoch: int) -> None:
        # in a task: the authority pings (its lease) while the ACD is restored
        self._starting = asyncio.create_task(self._start_routing(epoch), name=f"restore-{epoch}")

    async def _start_routing(self, epoch: int) -> None:
        try:
            await self.routing.elected(epoch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("routing for the cluster could not start; giving the authority up", extra={"epoch": epoch})
            self.authority.resign()
            return
        if self._user_elected is not None:
            r = self._user_elected(epoch)
            if asyncio.iscoroutine(r):
                await r

    async def _demoted(self, epoch: int) -> None:
        if self._starting is not None:
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._starting
            self._starting = None
        await self.routing.demoted(epoch)
        if self._user_demoted is not None:
            r = self._user_demoted(epoch)
            if asyncio.iscoroutine(r):
                await r
