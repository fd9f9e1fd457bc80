"""Several nodes, one routing truth (issue 14): the ACD behind the elected authority, and the
nodes as its clients.

Three parts, all on the one PostgreSQL the nodes already share (no SIP, no HTTP here):

- **The channel** (``channel.py``: ``routing_commands`` / ``routing_deliveries``).  A node writes each command
  (enqueue, seat answered, ring-no-answer, seat failed, abandoned, completed, ...) as a row and
  ``NOTIFY``s the leader; the leader reads rows by sequence number after its cursor.  The
  notification is only a wake-up: a leader that missed it (reconnect, election) still reads every
  row, in order, on its next poll.  A command carries a ``command_id`` so a node that is unsure
  whether its insert committed simply sends it again.  The leader answers a node the same way
  (``routing_deliveries``, one node's rows read by that node after its own cursor).  Both tables
  are in the database that fences the offers, so an OFFER delivery is written in the very
  transaction of its ``claim_offer``: there is no offer a node can see that the fence did not
  accept.  Why not MQTT QoS 1: its redelivery is per session and not ordered with the database
  writes, and a broker has no notion of "the current leader", so a deposed leader's publish
  would reach the nodes all the same.
- **The leader** (``leader.py``, :class:`ClusterRouting`).  On election it restores the ACD from the event log's
  projections (every node's callers, in their places), adopts what the fence says is being dialed,
  replays the commands after the cursor, then routes for the whole cluster: every ``OFFER`` of the
  ACD goes through ``claim_offer`` (epoch check, seat available -> offered, event) before any node
  hears of it.  On demotion it stops at once: command reading and the ACD's timers are cancelled and
  its unwritten events dropped.
- **The client** (``channel.py``, :class:`RoutingClient`), run by each node's
  :class:`ClusterNode` (``node.py``: the campaign, the leader while it leads, the client) and used by
  its calls through :class:`ClusterRoutingPort` (``port.py``).  Each node (the leader's own node too: one path) sends
  its commands and receives the deliveries for its calls.  Before it dials a seat it calls
  ``start_dialing``; only True lets the INVITE go.  A deposed leader's late offer fails there.

Ordering: inserts into both tables take a transaction-level advisory lock, so sequence numbers are
committed in the order they are allocated and a reader that has seen ``seq = n`` will never later
find a committed row below ``n``.
"""

from __future__ import annotations

from routing.cluster.channel import COMMANDS, ControlRefused, ControlRequest, Delivery, RoutingClient
from routing.cluster.leader import ClusterRouting
from routing.cluster.node import ClusterNode
from routing.cluster.port import ClusterRoutingPort, RemoteAcdView

__all__ = ["COMMANDS", "ClusterNode", "ClusterRouting", "ClusterRoutingPort", "ControlRefused", "ControlRequest",
           "Delivery", "RemoteAcdView", "RoutingClient"]
