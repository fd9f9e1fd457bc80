"""``handoff122 cluster``: one front door, N nodes on one PostgreSQL and one Mosquitto, one API port.

In the foreground, on one machine (docs/CLUSTER.md; docs/DEPLOY.md shows the same on real ones)::

    handoff122 cluster (this module)
     +- Kamailio: the cluster front door on --sip-port       D/front/
     +- node-1: handoff122 serve (its own supervisor)        D/node-1.pid, D/node-1/, D/node-1.log
     |   +- its Kamailio, its media workers, its control process, its API
     +- node-2 ...
     +- the API door on --api-port (TCP, in this process)

**Front door: per-node dispatch.**  The front door's dispatcher set is the nodes' own Kamailios, one
destination per node, probed with OPTIONS every second (``ds_ping_interval=1``, one failure marks it
down, one answer brings it back); a node's Kamailio spreads its calls over its own workers (which
it already health-checks and which the node marks down on a crash).  Nothing on a node's workers
has to be copied into the front door, so no dispatcher table in PostgreSQL, no ``db_postgres``
package and no reload RPC are needed; a node that dies (its Kamailio dies with it: parent-death
signal) stops answering OPTIONS and leaves the set within the probe interval.  The price is one
more SIP hop inside the machine.

**Seats** register at the front door (the nodes load their HA1s into it and read its
registrations over its JSON-RPC socket) and every node dials a registered seat as
``sip:<user>@front``: the front door looks the seat up and refuses a second simultaneous call to it
(dialog profile ``seat``, ``486 Seat Busy``), whichever node sent the INVITE.

**API door.**  A TCP relay on --api-port: each connection goes to the node that leads routing
(``routing_epoch``, read every 0.5 s), else to the next node whose API accepts (round robin, a dead
node skipped at connect time).  Only the leader holds the ACD, so only its API shows live seats and
queues; every node reads the same PostgreSQL, so any node answers with the same tokens and the same
history.  HTTP and WebSocket pass through unchanged.

**Routing.**  Every node runs ``serve --cluster true``: the elected leader's ACD decides for all
of them (``routing.authority``, ``routing.cluster``), so one seat is offered one call at a time
whichever node holds the caller; the front door's dialog profile stays as the last guard.  A seat
phone registered at the front door is dialled at its AOR there (``sip:<user>@front``, gateway.node),
so the leader needs no contact update per registration.  ``--independent-routing`` opts out (each
node routes alone, ``--cluster false``): only the front door's guard test uses it.
``ROUTING_AUTHORITY_WIRED`` is the switch that turned this on; False brings back the refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.kamailio import (
    ClusterRole,
    Destination,
    Kamailio,
    exec_with_parent_death,
    find_kamailio,
    private_dir,
)
from gateway.settings import ConfigError, Settings, load_settings

log = logging.getLogger("gateway.cluster")

#: True: every node routes through ``routing.authority`` (the ACD behind the elected leader, the
#: nodes as its clients; docs/CLUSTER.md).  False would refuse to start without --independent-routing.
ROUTING_AUTHORITY_WIRED = True

NOT_WIRED = ("handoff122 cluster: not available yet: the nodes do not route through one routing authority, "
             "so two nodes could offer one seat two calls (docs/CLUSTER.md); --independent-routing runs it "
             "anyway with each node routing its own callers alone")


@dataclass(frozen=True, slots=True)
class NodePlan:
    """One node's internal ports and directory (every node has its own, nothing is shared but the stores)."""

    index: int
    sip_port: int
    worker_base_port: int
    rtp_base_port: int
    api_port: int
    data_dir: Path

    @property
    def name(self) -> str:
        return f"node-{self.index}"


def plan_nodes(count: int, *, node_base_port: int, rtp_base_port: int, workers: int, rtp_ports_per_worker: int,
               data_dir: Path) -> list[NodePlan]:
    """Node i gets ``workers + 2`` consecutive ports from ``node_base_port`` (its Kamailio, its
    workers, its API) and ``workers * rtp_ports_per_worker`` RTP ports from ``rtp_base_port``."""
    stride, rtp_stride = workers + 2, workers * rtp_ports_per_worker
    plans = []
    for i in range(count):
        sip = node_base_port + i * stride
        plans.append(NodePlan(i + 1, sip, sip + 1, rtp_base_port + i * rtp_stride, sip + workers + 1,
                              data_dir / f"node-{i + 1}"))
    last = plans[-1]
    if last.api_port > 65535 or last.rtp_base_port + rtp_stride - 1 > 65535:
        raise ConfigError(f"{count} nodes of {workers} workers run past port 65535: lower --node-base-port "
                          "or --rtp-base-port")
    return plans


def database_refusal(db_url: str | None) -> str | None:
    """Why this database cannot hold a cluster, in one line (None: it can)."""
    if not db_url:
        return "handoff122 cluster: --db-url is required (a PostgreSQL URL, e.g. postgresql+asyncpg://u:p@host/db)"
    if not db_url.startswith("postgresql"):
        return ("handoff122 cluster: the nodes must share one PostgreSQL database; "
                f"{db_url.split(':', 1)[0]} cannot be shared by several nodes (--db-url postgresql+asyncpg://...)")
    return None


def front_door_set(dispatcher_list: object) -> dict[str, bool]:
    """``dispatcher.list``'s answer as duid (node-<i>) -> in the set (flags A: active, not I/D)."""
    out: dict[str, bool] = {}

    def walk(node: object) -> None:
        if isinstance(node, dict):
            dest = node.get("DEST")
            if isinstance(dest, dict):
                attrs = dest.get("ATTRS") or {}
                name = str(attrs.get("DUID") or dest.get("URI")) if isinstance(attrs, dict) else str(dest.get("URI"))
                out[name] = str(dest.get("FLAGS", "")).startswith("A")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(dispatcher_list)
    return out


class ApiDoor:
    """The cluster's API port: a TCP relay to the nodes' APIs, skipping nodes that refuse.

    With ``names`` and :meth:`follow_leader`, each connection goes to the node that leads routing
    first: only the leader holds the ACD, so only its API shows live seats and queues (a node that
    does not lead answers with empty views, docs/CLUSTER.md).  Otherwise, and when the leader does
    not accept, round robin."""

    def __init__(self, host: str, port: int, backends: list[tuple[str, int]], names: list[str] | None = None) -> None:
        self.host, self.port, self.backends = host, port, backends
        self.names = list(names or [])
        self.leader: str | None = None
        self._next = itertools.cycle(range(len(backends)))
        self.server: asyncio.Server | None = None
        self._follow: asyncio.Task[None] | None = None

    async def start(self, db_url: str | None = None) -> None:
        """Listen (a port in use is one line for the operator, ``RuntimeError``), then follow the leader."""
        try:
            self.server = await asyncio.start_server(self._relay, self.host, self.port)
        except OSError as e:
            raise RuntimeError(f"API port {self.host}:{self.port}: {os.strerror(e.errno) if e.errno else e}") from None
        if db_url is not None and self.names:
            self._follow = asyncio.create_task(self.follow_leader(db_url), name="api-door-leader")

    async def follow_leader(self, db_url: str, every_s: float = 0.5) -> None:
        """Read who was elected last, every ``every_s`` (a dead leader costs at most that much plus
        its refused connect, after which the round robin finds a node that answers)."""
        import asyncpg

        from routing.authority import last_elected, plain_dsn

        conn: asyncpg.Connection | None = None
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(plain_dsn(db_url), timeout=5)
                leader = await last_elected(conn)
                if leader != self.leader:
                    log.info("api_door_prefers", extra={"node": leader})
                self.leader = leader
            except asyncio.CancelledError:
                if conn is not None:
                    conn.terminate()
                raise
            except Exception as e:  # the database away: round robin meanwhile
                log.warning("api_door_leader_unknown", extra={"error": f"{type(e).__name__}: {e}"[:200]})
                self.leader = None
                if conn is not None:
                    conn.terminate()
                conn = None
            await asyncio.sleep(every_s)

    def order(self) -> list[int]:
        """The backends to try for one connection: the leader's first, then round robin."""
        first = next(self._next)
        out = [(first + k) % len(self.backends) for k in range(len(self.backends))]
        if self.leader in self.names:
            lead = self.names.index(self.leader)
            out.remove(lead)
            out.insert(0, lead)
        return out

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for k in self.order():
            host, port = self.backends[k]
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
            except (OSError, TimeoutError):
                continue
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
            return
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.close()

    async def stop(self) -> None:
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """Where the front door finds one node: its own Kamailio (SIP) and its API."""

    name: str
    host: str
    sip_port: int
    api_port: int

    @classmethod
    def parse(cls, text: str) -> NodeAddress:
        """``name=host:sip_port:api_port``, e.g. ``node-1=10.0.0.11:5070:8001``."""
        try:
            name, rest = text.split("=", 1)
            host, sip, api = rest.rsplit(":", 2)
            return cls(name.strip(), host.strip("[]"), int(sip), int(api))
        except ValueError:
            raise ConfigError(f"--node {text!r}: expected name=host:sip_port:api_port "
                              "(e.g. node-1=10.0.0.11:5070:8001)") from None


def front_door_kamailio(s: Settings, run_dir: Path, nodes: list[NodeAddress], *, maxload: int,
                        node_sources: list[str], rpc_listen: str | None = None) -> Kamailio:
    """The cluster front door on ``s.sip_host:s.sip_port`` (edge trust, numbers and limits from ``s``)."""
    binary = find_kamailio(s.kamailio)
    if binary is None:
        raise ConfigError("the cluster front door needs kamailio (not found)")
    from gateway.supervisor import edge_policy

    return Kamailio(binary, run_dir, host=s.sip_host, port=s.sip_port, service_numbers=s.service_numbers,
                    destinations=[Destination(i, n.host, n.sip_port, label=n.name) for i, n in enumerate(nodes, 1)],
                    maxload=maxload, retry_after_s=s.retry_after_s, shm_mb=s.kamailio_shm_mb, edge=edge_policy(s),
                    cluster=ClusterRole(node_sources=node_sources), rpc_listen=rpc_listen)


@dataclass
class ClusterOptions:
    nodes: int
    sip_port: int
    api_port: int
    data_dir: Path
    db_url: str
    mqtt_url: str | None
    workers: int
    node_base_port: int
    rtp_base_port: int
    independent_routing: bool
    config: Path | None = None


class Cluster:
    """The front door, the nodes and the API door of one machine, run until told to stop."""

    def __init__(self, opts: ClusterOptions) -> None:
        self.opts = opts
        self.data_dir = opts.data_dir.expanduser().resolve()
        # the front door's own settings: the operator's file and HANDOFF_* (edge trust, numbers...)
        self.settings: Settings = load_settings({
            "config": opts.config, "sip_port": opts.sip_port, "api_port": 0, "data_dir": self.data_dir,
            "db_url": opts.db_url, "mqtt_url": opts.mqtt_url, "workers": opts.workers,
            "worker_base_port": opts.node_base_port, "rtp_base_port": opts.rtp_base_port})
        s = self.settings
        self.plans = plan_nodes(opts.nodes, node_base_port=opts.node_base_port, rtp_base_port=opts.rtp_base_port,
                                workers=opts.workers, rtp_ports_per_worker=s.rtp_ports_per_worker,
                                data_dir=self.data_dir)
        self.front = front_door_kamailio(
            s, self.data_dir / "front", [NodeAddress(p.name, s.sip_host, p.sip_port, p.api_port) for p in self.plans],
            maxload=opts.workers * s.worker_callers, node_sources=[s.sip_host])
        self.api = ApiDoor(s.api_host, opts.api_port, [(s.api_host, p.api_port) for p in self.plans],
                           names=[p.name for p in self.plans])
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._watch: list[asyncio.Task[None]] = []
        self._stopping = False

    def node_argv(self, p: NodePlan) -> list[str]:
        s, o = self.settings, self.opts
        argv = ["-m", "gateway.cli", "serve", "--sip-port", str(p.sip_port), "--worker-base-port",
                str(p.worker_base_port), "--rtp-base-port", str(p.rtp_base_port), "--api-port", str(p.api_port),
                "--workers", str(o.workers), "--data-dir", str(p.data_dir),
                "--cluster-node-id", p.name, "--cluster",
                "true" if ROUTING_AUTHORITY_WIRED and not o.independent_routing else "false",
                "--front-door-sip", f"{s.sip_host}:{o.sip_port}", "--front-door-rpc", str(self.front.rpc.rpc_socket),
                "--log-format", "json"]
        if o.mqtt_url:
            argv += ["--mqtt-url", o.mqtt_url]
        if o.config:
            argv += ["--config", str(o.config)]
        return argv

    async def _migrate(self) -> None:
        """Bring the shared database to the current schema once, before N nodes race to do it."""
        from sqlalchemy.ext.asyncio import create_async_engine

        from gateway.schema import upgrade_schema

        engine = create_async_engine(self.opts.db_url)
        try:
            await upgrade_schema(engine)
        finally:
            await engine.dispose()

    async def _start_node(self, p: NodePlan) -> None:
        p.data_dir.mkdir(parents=True, exist_ok=True)
        out = (self.data_dir / f"{p.name}.log").open("ab")
        # its own session: Ctrl-C on the terminal reaches this process only, which stops the nodes in
        # order; a parent-death signal: a cluster killed by -9 leaves no node behind
        proc = await asyncio.create_subprocess_exec(
            *exec_with_parent_death(sys.executable, *self.node_argv(p)), stdin=asyncio.subprocess.DEVNULL,
            stdout=out, stderr=out, start_new_session=True,
            env={**os.environ, "HANDOFF_DB_URL": self.opts.db_url})  # not in argv: `ps` shows argv to everyone
        out.close()
        self.procs[p.index] = proc
        (self.data_dir / f"{p.name}.pid").write_text(f"{proc.pid}\n")
        self._watch.append(asyncio.create_task(self._watch_node(p, proc)))

    async def _watch_node(self, p: NodePlan, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if self._stopping:
            return
        # not restarted here: the others keep running, the front door stops sending it calls
        # (probing); on real machines systemd restarts it (docs/DEPLOY.md)
        log.warning("cluster_node_exited", extra={"node": p.name, "pid": proc.pid, "code": code})
        print(f"handoff122 cluster: {p.name} (pid {proc.pid}) exited with {code}; the other nodes keep running",
              file=sys.stderr, flush=True)

    async def _ready(self, p: NodePlan, timeout: float = 90.0) -> bool:
        """The node's API answers (its last start step): the node is up."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.procs[p.index].returncode is not None:
                return False
            with contextlib.suppress(OSError):
                _, w = await asyncio.open_connection(self.settings.api_host, p.api_port)
                w.close()
                return True
            await asyncio.sleep(0.2)
        return False

    async def run(self, stop: asyncio.Event) -> int:
        private_dir(self.data_dir)
        await self._migrate()
        await self.front.start()
        try:
            # the doors' ports first: one taken is said in one line before any node starts
            await self.api.start(self.opts.db_url if not self.opts.independent_routing else None)
            for p in self.plans:
                await self._start_node(p)
            up = await asyncio.gather(*(self._ready(p) for p in self.plans))
            if not any(up):
                print("handoff122 cluster: no node came up; see " + ", ".join(
                    str(self.data_dir / f"{p.name}.log") for p in self.plans), file=sys.stderr)
                return 1
            print(f"handoff122 cluster: front door sip:{self.settings.sip_host}:{self.opts.sip_port}, "
                  f"API http://{self.settings.api_host}:{self.opts.api_port}, nodes "
                  + ", ".join(f"{p.name} (pid {self.procs[p.index].pid}, {'up' if ok else 'NOT UP'})"
                              for p, ok in zip(self.plans, up, strict=True)), file=sys.stderr, flush=True)
            log.info("cluster_ready", extra={"nodes": [p.name for p in self.plans], "sip_port": self.opts.sip_port,
                                             "api_port": self.opts.api_port})
            await stop.wait()
            return 0
        finally:
            await self.stop()

    async def stop(self) -> None:
        """Nodes first (each ends its calls, with BYEs that still pass the front door), then the doors."""
        self._stopping = True
        for proc in self.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 45)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        for t in self._watch:
            t.cancel()
        await self.api.stop()
        await self.front.stop()
        for p in self.plans:
            (self.data_dir / f"{p.name}.pid").unlink(missing_ok=True)


def run_cluster(opts: ClusterOptions) -> int:
    refusal = database_refusal(opts.db_url)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    if opts.nodes < 1:
        print("handoff122 cluster: --nodes must be at least 1", file=sys.stderr)
        return 2
    if not ROUTING_AUTHORITY_WIRED and not opts.independent_routing:
        print(NOT_WIRED, file=sys.stderr)
        return 2
    if opts.independent_routing:
        print("handoff122 cluster: WARNING: --independent-routing: each node routes its own callers alone; "
              "do not give two nodes the same seats", file=sys.stderr)
    from gateway.logs import configure_logging

    configure_logging(os.environ.get("HANDOFF_LOG_LEVEL", "INFO"), process_name="cluster", fmt="json")
    cluster = Cluster(opts)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await cluster.run(stop)

    try:
        return asyncio.run(main())
    except RuntimeError as e:  # the front door would not start (port taken, config refused)
        print(f"handoff122 cluster: {e}", file=sys.stderr)
        return 1


def run_front_door(*, nodes: list[str], data_dir: Path, api_port: int, node_sources: list[str] | None,
                   rpc_listen: str | None, maxload: int, config: Path | None, sip_port: int | None) -> int:
    """``handoff122 front-door``: only the front door and the API door, for nodes on other machines
    (docs/DEPLOY.md).  Node list, edge trust and limits come from the flags, ``--config`` and HANDOFF_*."""
    from gateway.logs import configure_logging

    try:
        addresses = [NodeAddress.parse(n) for n in nodes]
        if not addresses:
            raise ConfigError("--node name=host:sip_port:api_port is needed at least once")
        # the front door runs no worker: park the node-only port ranges out of the way so that a
        # high SIP port (whose default worker/RTP ranges would pass 65535) is not refused for them
        s = load_settings({"config": config, "sip_port": sip_port, "api_port": 0, "data_dir": data_dir,
                           "workers": 1, "worker_base_port": 1, "rtp_base_port": 2, "rtp_ports_per_worker": 8})
        sources = node_sources or sorted({n.host for n in addresses})
        front = front_door_kamailio(s, s.data_dir / "front", addresses, maxload=maxload, node_sources=sources,
                                    rpc_listen=rpc_listen)
    except ConfigError as e:
        print(f"handoff122 front-door: {e}", file=sys.stderr)
        return 2
    configure_logging(s.log_level, process_name="front-door", fmt="json")
    # the --node names are the nodes' cluster_node_id: with the cluster's database (db_url, e.g.
    # HANDOFF_DB_URL) the API door sends each connection to the routing leader's API first
    api = ApiDoor(s.api_host, api_port, [(n.host, n.api_port) for n in addresses],
                  names=[n.name for n in addresses]) if api_port else None
    leader_db = s.db_url if s.db_url and database_refusal(s.db_url) is None else None

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        private_dir(s.data_dir)
        await front.start()
        try:
            if api is not None:
                await api.start(leader_db)
            log.info("front_door_ready", extra={"sip": f"{s.sip_host}:{s.sip_port}", "nodes": [n.name for n in addresses],
                                                "rpc": front.rpc.address})
            await stop.wait()
            return 0
        finally:
            if api is not None:
                await api.stop()
            await front.stop()

    try:
        return asyncio.run(main())
    except RuntimeError as e:
        print(f"handoff122 front-door: {e}", file=sys.stderr)
        return 1
