"""``handoff122 serve``: one node, the composition root.

This is the control process; ``handoff122 serve`` runs it under the node's supervisor
(``gateway.supervisor``), which owns Kamailio and the media workers and starts this process again if
it dies.  Start order matters for the promise "never drop a caller": storage, then the media
workers (spawned by the supervisor, or found running after a restart of this process: their events
wait), then routing, which closes as lost only what no worker carries, then the calls the workers
carry are taken over (``CallDirector.adopt``) and their events flow, then the front door (so SIP
reaches workers that are ready), then the API.  Stop order is the reverse.  Any bad configuration
(port taken, unreadable flow, invalid seats file) ends the start with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import replace
from typing import Any

from gateway.banner import NodeFacts, no_seats_hint, render_banner
from gateway.call_recordings import CallRecordings
from gateway.callflow import CallDirector
from gateway.kamailio import EdgePolicy, Kamailio, find_kamailio
from gateway.logs import configure_logging, resolve_format
from gateway.pool import WorkerPool, WorkerSpec
from gateway.port_holder import who_holds
from gateway.settings import ConfigError, Settings

log = logging.getLogger("gateway.node")


def _check_port_free(host: str, port: int, udp: bool, what: str) -> None:
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        s = socket.socket(socket.AF_INET, kind)
        try:
            if kind == socket.SOCK_STREAM:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
                holder = who_holds(port, udp=kind == socket.SOCK_DGRAM)
                by = f" by {holder}" if holder else ""
                raise ConfigError(f"{what} port {host}:{port}/{proto} is already in use{by}") from None
            raise ConfigError(f"{what} address {host}:{port}: {e.strerror}") from None
        finally:
            s.close()


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = settings.cluster_node_id or f"{socket.gethostname()}:{settings.sip_port}"
        self.run_dir = settings.data_dir / "run"
        self.kamailio: Kamailio | None = None
        self.registrations: Any = None      # gateway.registrations.SeatRegistrations (seat phones that REGISTER)
        self.seat_specs: list[Any] = []     # the seats file's seats
        self.pool: WorkerPool | None = None
        self.director: CallDirector | None = None
        self.routing: Any = None
        self.api: Any = None
        self.engine: Any = None
        self.direct_mode = False
        self.flow: Any = None
        self.queues: dict[str, Any] = {}
        self.worker_stats: dict[int, Any] = {}
        self._retention: asyncio.Task[None] | None = None
        self._expiry: asyncio.Task[Any] | None = None
        self.processes: Any = None          # gateway.supervisor.SupervisorLink (or LocalProcesses)
        self.adopting = False               # started again by the supervisor: workers and calls kept

    # ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        from ivr.flow import FlowInvalid
        from ivr.loader import load_flow
        from routing.acd import SkillPolicy
        from routing.queues_file import QueuesInvalid, load_queues
        from routing.seats_file import SeatsFileInvalid, load_seats

        # 1. configuration that can be wrong: say so in one line, before touching anything
        try:
            self.flow = load_flow(s.flow_file)
        except FlowInvalid as e:
            # Every problem with its location, still one line (handoff122 check-flow lists them one a line).
            listed = "; ".join(str(p) for p in e.problems)
            raise ConfigError(f"flow {s.flow_file}: {len(e.problems)} problem(s): {listed}") from None
        except OSError as e:
            raise ConfigError(f"flow {s.flow_file}: {e.strerror}") from None
        from ivr.prompts import missing_prompts

        missing = missing_prompts(self.flow)
        if missing:
            # checked now, not when a caller would hear silence instead
            raise ConfigError(f"flow {s.flow_file}: {len(missing)} prompt(s) unusable: {'; '.join(missing)}")
        seats = []
        if s.seats is not None:
            try:
                seats = load_seats(s.seats)
                self.seat_specs = list(seats)
            except SeatsFileInvalid as e:
                raise ConfigError(f"seats file {s.seats}: {e}") from None
            except OSError as e:
                raise ConfigError(f"seats file {s.seats}: {e.strerror}") from None
            try:
                self.queues = load_queues(s.seats, SkillPolicy(wrap_up_s=float(s.wrap_up_s)))
            except QueuesInvalid as e:
                raise ConfigError(f"seats file {e}") from None
        binary = find_kamailio(s.kamailio)
        if s.kamailio not in ("auto", "off") and binary is None:
            raise ConfigError(f"kamailio binary {s.kamailio!r} is not executable")
        self.direct_mode = binary is None
        from gateway.reconcile import clear_leftovers, wait_gone
        from gateway.supervisor import LocalProcesses

        self.processes = self.processes or LocalProcesses(s)
        running = await self.processes.status()
        # a control process started again by the supervisor: the workers and Kamailio are its own
        self.adopting = bool(running["workers"])
        specs = self._worker_specs()
        if self.adopting:
            wait_gone(self.run_dir / "api.pid")  # the API process of the control process that died
        else:
            clear_leftovers(self.run_dir)  # issue 13: what a crashed node left holding its ports
            _check_port_free(s.sip_host, s.sip_port, True, "SIP")
            if s.tls_port:
                _check_port_free(s.sip_host, s.tls_port, False, "SIP TLS")
            for spec in specs if not self.direct_mode else []:
                _check_port_free(spec.sip_host, spec.sip_port, True, f"worker {spec.worker_id} SIP")
        if s.api_port:
            _check_port_free(s.api_host, s.api_port, False, "API")
        try:
            s.data_dir.mkdir(parents=True, exist_ok=True)
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"data dir {s.data_dir}: {e.strerror}") from None

        # 2. storage and routing
        from gateway.schema import upgrade_schema
        from recordings.catalog import Catalog
        from routing.service import RoutingService
        from routing.store.calls import CallRecords
        from routing.store.database import make_engine

        self.engine = make_engine(s.database_url, sqlite_synchronous=s.sqlite_synchronous)
        try:
            await upgrade_schema(self.engine)
        except Exception as e:
            raise ConfigError(f"database {_safe_url(s.database_url)}: {str(e).splitlines()[0][:200]}") from None
        self.calls = CallRecords(self.engine)
        self.catalog = Catalog(self.engine, s.recordings_dir, node_id=self.node_id)  # issue 13: owner of its recordings
        self.catalog.layout.prepare()
        if s.cluster:  # issue 14: the elected routing authority decides; this node's calls are its clients
            from routing.cluster import ClusterRoutingPort

            self.routing = ClusterRoutingPort.from_settings(s, self.engine, self.node_id, queues=self.queues)
        else:
            self.routing = RoutingService.from_settings(s, self.engine, node_id=self.node_id, queues=self.queues)

        # 3. the media workers: spawned by the supervisor (or found running after a control
        # restart); their events wait until the calls they carry are taken over
        self.pool = WorkerPool(specs, run_dir=self.run_dir, callers_per_worker=s.worker_callers,
                               secret=self.processes.secret, spawner_pid=self.processes.spawner_pid,
                               on_event=self._worker_event, on_worker_lost=self._worker_lost)
        deaths: list[dict[str, Any]] = []
        if self.adopting:
            deaths = await self.processes.worker_deaths()
            await self._front_door_after_gap(deaths, specs)
        await self.pool.listen()
        (self.run_dir / "control.pid").write_text(str(os.getpid()))
        try:
            await self.processes.ensure_workers()
        except RuntimeError as e:
            raise ConfigError(str(e)) from None
        if not await self.pool.wait_ready(15.0):
            d = self.pool.not_ready()[0]
            codes = set((await self.processes.exit_codes()).values())
            why = "port in use?" if codes <= {2} else f"exit codes {sorted(codes)}"
            raise ConfigError(f"media worker {d.worker_id} did not start on {d.sip_host}:{d.sip_port} ({why})")

        # 4. routing: what the store shows in progress but no worker carries is closed as lost
        # (issue 13); the calls the workers still carry keep their place, their seat, their recording
        from gateway.reconcile import live_calls_at_start, seal_after_crash, talking_at_hello

        kept = await live_calls_at_start(self.pool, self.engine, self.node_id)
        seats = await self._with_stored_credentials(seats)
        lost_reasons: dict[str, str] = {}
        if deaths:  # a media worker that died while this process was away: its calls' reason
            from gateway.reconcile import died_with_workers
            from routing.store.reconcile import LOST_WORKER_FAILURE

            lost_reasons = dict.fromkeys(await died_with_workers(self.engine, self.node_id, deaths, kept),
                                         LOST_WORKER_FAILURE)
        if s.cluster and s.front_door_sip:
            # the leader's ACD cannot be told each registration (seats change only through the
            # seats file in cluster mode), and needs none: a seat phone is dialled at its AOR on the
            # front door, the same on every node and after every election; the front door finds
            # the registered phone (404 while none is) and a lost registration logs the seat out
            seats = [replace(spec, contact=f"sip:{spec.register_user}@{s.front_door_sip}") if spec.register_user
                     else spec for spec in seats]
        await self.routing.start(seats, live_calls=kept, talking=talking_at_hello(self.pool),
                                 lost_reasons=lost_reasons)
        recovered = await seal_after_crash(self.catalog, self.calls, time.time(), open_calls=kept)
        if recovered:
            log.warning("recordings_recovered", extra={"count": len(recovered)})
        self._retention = asyncio.create_task(self._retention_job(), name="recordings-retention")
        self.recordings = CallRecordings(self.catalog, self.calls)
        self.director = CallDirector(flow=self.flow, routing=self.routing, media=self, recordings=self.recordings,
                                     node_id=self.node_id, sip_host=s.sip_host, caller_id_header=s.caller_id_header,
                                     announce_every_s=s.hold_announce_interval,
                                     seat_media_timeout_s=s.seat_media_timeout_s)
        if self.pool.live_at_hello:
            from routing.store.reconcile import in_progress

            records = (await in_progress(self.engine, self.node_id)).open_calls
            await self.director.adopt(self.pool.live_at_hello, records)
        self.pool.dispatch()
        if s.cluster:  # the leader's offers reach the calls only now that every live call has its journey
            self.routing.serve_control(self._control_here)  # acts on its calls asked through the leader's API
            await self.routing.open_deliveries()

        # 5. the front door (the supervisor runs it; it lives through a control restart)
        if self.direct_mode:
            print(f"handoff122: kamailio not found: running one media worker directly on "
                  f"{s.sip_host}:{s.sip_port} ({s.worker_callers} callers at most)", file=sys.stderr)
        else:
            try:
                await self.processes.ensure_front_door()
            except RuntimeError as e:
                raise ConfigError(str(e)) from None
            from gateway.registrations import SeatRegistrations
            from gateway.supervisor import front_door

            self.kamailio = front_door(s)  # JSON-RPC to it: mark a dead worker down, end its dialogs
            assert self.kamailio is not None

            # seats file + credentials set through the API; each keeps the file's fixed contact (if
            # any), given back when its credentials are removed
            fixed = {spec.id: spec.contact for spec in self.seat_specs}
            phones = [replace(spec, contact=fixed.get(spec.id, "")) for spec in seats if spec.register_user]
            self.registrations = SeatRegistrations(self._registrar_rpc(), self.routing, phones,
                                                   via=s.front_door_sip, fixed_aor=bool(s.cluster and s.front_door_sip))
            await self.registrations.load_credentials()
            self.registrations.start()

        # 6. the API, in its own process, reading what this one pushes
        if s.api_port:
            self.api = await self._start_api()
            if kept:  # issue 13: Twilio callers kept at start who never come back are closed as lost
                from gateway.reconcile import expire_unclaimed

                self._expiry = asyncio.create_task(expire_unclaimed(
                    self.routing, getattr(self.api, "twilio", None), self.engine, self.node_id, kept,
                    s.twilio_reclaim_s), name="twilio-expiry")
        if not self.routing.acd.seats_view(time.time()):
            log.info("no_seats", extra={"hint": no_seats_hint()})
        signin = getattr(self.api, "signin_url", None)
        if signin:
            log.info("first_sign_in", extra={"url": signin, "note": "one-time link, signs in one browser as supervisor"})
        log.info("node_ready", extra={"node_id": self.node_id, "sip": f"{s.sip_host}:{s.sip_port}",
                                      "api": f"http://{s.api_host}:{s.api_port}" if s.api_port else None,
                                      "workers": len(specs), "front_door": "kamailio" if self.kamailio else "none",
                                      "capacity": len(specs) * s.worker_callers})

    def _registrar_rpc(self) -> Any:
        """Where seat phones register: the cluster front door if there is one, else this node's Kamailio."""
        if self.settings.front_door_rpc:
            from gateway.kamailio import KamailioRpc

            rpc = KamailioRpc(self.settings.front_door_rpc)
            return lambda method, *params: asyncio.to_thread(rpc.call, method, *params)
        assert self.kamailio is not None
        return self.kamailio.call

    def facts(self) -> NodeFacts:
        """What the banner tells a person about this running node."""
        s = self.settings
        api_url = f"http://{s.api_host}:{s.api_port}" if s.api_port else None
        where = f"--data-dir {s.data_dir}" if s.db_url is None else '--db-url "$HANDOFF_DB_URL"'
        return NodeFacts(
            sip_host=s.sip_host, sip_port=s.sip_port, service_numbers=list(s.service_numbers),
            front_door="kamailio" if self.kamailio else "none",
            capacity=(1 if self.direct_mode else s.workers) * s.worker_callers, api_url=api_url,
            data_dir=s.data_dir, database=_safe_url(s.database_url),
            seats=len(self.routing.acd.seats_view(time.time())) if self.routing else 0,
            signin_url=getattr(self.api, "signin_url", None),
            token_command=f"handoff122 token create --role supervisor {where}")

    async def _retention_job(self, every_s: float = 6 * 3600) -> None:
        """Purge recordings older than the retention, never one whose call is still open."""
        from recordings.retention import purge

        while True:
            try:
                open_calls = set(self.director.calls) if self.director else set()
                report = await purge(self.catalog, time.time(), self.settings.recordings_retention_days, open_calls)
                if report.purged or report.errors:
                    log.info("recordings_purged", extra={"purged": len(report.purged), "errors": len(report.errors),
                                                         "bytes_freed": report.bytes_freed})
            except Exception as e:
                log.error("recordings_purge_failed", extra={"error": str(e)[:300]})
            await asyncio.sleep(every_s)

    def _edge(self) -> EdgePolicy:
        from gateway.supervisor import edge_policy

        return edge_policy(self.settings)

    def _worker_specs(self) -> list[WorkerSpec]:
        from gateway.supervisor import worker_specs

        return worker_specs(self.settings)

    async def _start_api(self) -> Any:
        """The API in a process of its own (``gateway.api_process``), fed by this one."""
        from api.node import build_api_desk
        from gateway.api_process import ApiProcess, ApiProcessFailed, new_secret
        from gateway.local_sockets import unix_socket_path

        desk = await build_api_desk(self, unix_socket_path(self.run_dir, "api.sock"), new_secret())
        api = ApiProcess(desk, log_level=self.settings.log_level, pid_file=self.run_dir / "api.pid",
                         nice=self.settings.api_nice)
        try:
            await api.start()
        except ApiProcessFailed as e:
            await desk.stop()
            raise ConfigError(str(e)) from None
        return api

    # -- acts on live calls asked through the API (hold, transfers, a supervisor joining) ----------
    # In cluster mode the API door sends every request to the routing leader's node, which may not
    # carry the call: the leader asks the node that does (``routing.cluster.ControlRequest``) and
    # answers with that node's result or refusal.
    async def monitor_call(self, req: Any) -> dict[str, Any]:
        """A supervisor joins a live call (``journey.transfer.MonitorRequest``); ``TransferRefused``."""
        from dataclasses import asdict

        node = self._carried_elsewhere(req.call_id)
        if node is not None:
            return await self._ask_node(node, req.call_id, "monitor_call", {"req": asdict(req)})
        return self._director().monitor(req)

    async def hold_call(self, call_id: str, on: bool, by: str) -> dict[str, Any]:
        """Seat hold / resume asked through the API; ``TransferRefused`` carries the API's status."""
        node = self._carried_elsewhere(call_id)
        if node is not None:
            return await self._ask_node(node, call_id, "hold_call", {"on": on, "by": by})
        return self._director().hold(call_id, on, by)

    async def transfer_call(self, req: Any) -> dict[str, Any]:
        """A transfer asked through the API (``journey.transfer.TransferRequest``), run on the
        control loop; ``TransferRefused`` carries the API's status."""
        from dataclasses import asdict

        from journey.transfer import TransferRefused

        node = self._carried_elsewhere(req.call_id)
        if node is None:
            director = self._director()
            return await director.consult(req) if req.mode == "warm" else director.transfer(req)
        if req.mode == "warm":
            raise TransferRefused(409, "warm transfers are not available in cluster mode yet")
        args: dict[str, Any] = {"req": asdict(req)}
        if req.to_seat is not None:  # only the leader reads seats: the target is found (or refused) here
            view = self.routing.acd.call_view(req.call_id) or {}
            args["seat_skill"] = self._director().seat_target(req.to_seat, view.get("seat_id"))
        return await self._ask_node(node, req.call_id, "transfer_call", args)

    async def consult_call(self, call_id: str, complete: bool, by: str) -> dict[str, Any]:
        """Complete or cancel a warm transfer asked through the API; ``TransferRefused`` carries the status."""
        node = self._carried_elsewhere(call_id)
        if node is not None:
            return await self._ask_node(node, call_id, "consult_call", {"complete": complete, "by": by})
        return await self._director().end_consult(call_id, complete, by)

    def _director(self) -> Any:
        from journey.transfer import TransferRefused

        if self.director is None:
            raise TransferRefused(409, "no media workers on this node")
        return self.director

    def _carried_elsewhere(self, call_id: str) -> str | None:
        """The other node whose worker carries ``call_id`` (cluster mode; a node that does not lead
        refuses a call it does not carry, saying to ask the API door)."""
        from journey.transfer import TransferRefused
        from routing.cluster import ControlRefused

        if self.director is not None and call_id in self.director.calls:
            return None
        elsewhere = getattr(self.routing, "carries_elsewhere", None)
        try:
            return elsewhere(call_id) if elsewhere is not None else None
        except ControlRefused as e:
            raise TransferRefused(e.status, e.detail) from None

    async def _ask_node(self, node: str, call_id: str, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """``op`` carried out by ``node``, which carries ``call_id``; its refusal is this request's."""
        from journey.transfer import TransferRefused
        from routing.cluster import ControlRefused

        try:
            return await self.routing.control_on(node, op, {"call_id": call_id, **args})
        except ControlRefused as e:
            raise TransferRefused(e.status, e.detail) from None

    async def _control_here(self, req: Any) -> dict[str, Any]:
        """The leader's ``ControlRequest`` for a call of this node, already authorised by its API."""
        from journey.transfer import MonitorRequest, TransferRefused, TransferRequest

        a = req.args
        director = self._director()
        if req.op == "hold_call":
            return director.hold(a["call_id"], bool(a["on"]), str(a["by"]))
        if req.op == "transfer_call":
            return director.transfer(TransferRequest(**a["req"]), seat_skill=a.get("seat_skill"))
        if req.op == "monitor_call":
            return director.monitor(MonitorRequest(**a["req"]))
        if req.op == "consult_call":
            return await director.end_consult(a["call_id"], bool(a["complete"]), str(a["by"]))
        raise TransferRefused(400, f"unknown call control {req.op!r}")

    async def _with_stored_credentials(self, seats: list[Any]) -> list[Any]:
        """The seats file's seats with the credentials set through the admin API (the database wins)."""
        from gateway.seat_credentials import SeatCredentials, merge

        stored = await SeatCredentials(self.engine).all()
        unknown = sorted(set(stored) - {spec.id for spec in seats})
        if unknown:
            log.warning("seat_credentials_without_seat", extra={"seat_ids": unknown})
        return merge(seats, stored)

    async def set_seat_credentials(self, seat_id: str, username: str, ha1: str) -> dict[str, Any]:
        """Credentials set through the admin API (HA1 only): stored, then loaded into Kamailio at once.
        Raises ``UnknownSeat`` (404), ``DuplicateId`` (409: the username is another seat's)."""
        from gateway.seat_credentials import SeatCredentials
        from routing.acd import SeatSpec
        from routing.errors import DuplicateId

        view = self.routing.acd.seat_view(seat_id, time.time())  # UnknownSeat
        regs = self.registrations
        owner = regs.by_user.get(username) if regs is not None else None
        if owner is not None and owner.id != seat_id:
            raise DuplicateId(f"username {username!r} is seat {owner.id}'s")
        await SeatCredentials(self.engine).put(seat_id, username, ha1)
        if regs is None:
            return {"seat_id": seat_id, "username": username, "loaded": False}
        previous = regs.by_user.get(regs.user_of(seat_id) or "")
        fixed = previous.contact if previous is not None else str(view.get("contact") or "")
        await regs.set_credentials(SeatSpec(id=seat_id, contact=fixed, skills=dict(view.get("skills") or {}),
                                            name=str(view.get("name") or ""), register_user=username, ha1=ha1))
        return {"seat_id": seat_id, "username": username, "loaded": True}

    async def remove_seat_credentials(self, seat_id: str) -> dict[str, Any]:
        """The seat's phone may no longer register (until credentials are set again), even if the
        seats file gives it some; a current registration is removed and the seat logged out."""
        from gateway.seat_credentials import SeatCredentials

        self.routing.acd.seat_view(seat_id, time.time())  # UnknownSeat
        await SeatCredentials(self.engine).put(seat_id, None, None)
        removed = await self.registrations.remove_credentials(seat_id) if self.registrations is not None else None
        return {"seat_id": seat_id, "removed": removed is not None}

    def install_flow(self, flow: Any) -> None:
        """A flow installed through the API: new calls start on it; calls in the IVR keep theirs."""
        self.flow = flow
        if self.director is not None:
            self.director.flow = flow

    # ------------------------------------------------------------------------------------------
    # the media side as the director sees it
    # ------------------------------------------------------------------------------------------
    def send(self, call_id: str, cmd: Any) -> bool:
        return self.pool.send(call_id, cmd) if self.pool else False

    def _worker_event(self, worker_id: int, msg: Any) -> None:
        from gateway import channel as ch

        if isinstance(msg, ch.WorkerStats):
            self.worker_stats[worker_id] = msg
            return
        if isinstance(msg, ch.CallRejected):
            from journey.metrics import count_call_ended, count_sip_error

            if msg.code == 487:
                count_call_ended("caller_cancelled")  # the caller's own CANCEL: not a SIP error
            else:
                count_sip_error(msg.code)
        if self.director is None:
            return  # a start that failed before the calls could be taken over: the node stops
        self.director.worker_event(worker_id, msg)

    async def _front_door_after_gap(self, deaths: list[dict[str, Any]], specs: list[WorkerSpec]) -> None:
        """Workers that died while no control process was there (``Supervisor``): the front door
        still holds their dialogs and counts their calls' load, so their replacement would look
        full.  Done before the control socket opens: until their hello no worker takes a caller
        (a replacement waits for a control process before it starts SIP), so only dead calls'
        dialogs are ended."""
        if self.direct_mode:
            return
        from gateway.supervisor import front_door

        kamailio = front_door(self.settings)
        assert kamailio is not None
        for d in deaths:
            if d.get("control_alive", True) or d.get("reported"):
                continue  # seen (and handled) by the control process that was there
            spec = next((w for w in specs if w.worker_id == d["worker_id"]), None)
            if spec is None:
                continue
            ended = await kamailio.end_dialogs_of(spec.destination)
            fresh = await kamailio.fresh_destination(spec.destination)
            log.warning("worker_dialogs_ended", extra={"worker_id": spec.worker_id, "dialogs": ended,
                                                       "load_reset": fresh, "died_at": d.get("died_at")})

    async def _worker_lost(self, spec: WorkerSpec, call_ids: set[str]) -> None:
        if self.kamailio is not None:
            await self.kamailio.mark_down(spec.destination)
            ended = await self.kamailio.end_dialogs_of(spec.destination)
            fresh = await self.kamailio.fresh_destination(spec.destination)  # its dead calls' load forgotten
            log.warning("worker_dialogs_ended", extra={"worker_id": spec.worker_id, "dialogs": ended,
                                                       "load_reset": fresh})
        self.worker_stats.pop(spec.worker_id, None)
        if self.director is not None:
            from gateway.reconcile import worker_lost

            worker_lost(self.director, self.routing, call_ids)  # issue 13: lost with a callback, seat freed

    def media_stats(self) -> dict[str, float]:
        """Live pjsua2 objects across workers (``handoff122_gateway_*`` in /metrics): leaks show here."""
        stats = list(self.worker_stats.values())
        pool = self.pool.stats() if self.pool else {}
        return {"media_calls": sum(x.calls for x in stats), "media_callers": sum(x.callers for x in stats),
                "media_players": sum(x.players for x in stats), "media_recorders": sum(x.recorders for x in stats),
                "workers_ready": pool.get("ready", 0), "worker_restarts": pool.get("restarts", 0),
                "capacity_callers": pool.get("capacity", 0)}

    # ------------------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Each step of a stop is bounded: a step that hangs (a child that does not answer, a
        database that is gone) is logged by name and the stop goes on, so a node asked to stop
        always stops and its children are always ended."""
        started = self.engine is not None
        if started:
            log.info("node_stopping", extra={"node_id": self.node_id})
        if self._retention is not None:
            self._retention.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        if self.api is not None:
            await self._stop_step("api", self.api.stop(), 15)
        if self.registrations is not None:
            await self._stop_step("registrations", self.registrations.stop(), 5)
        if self.processes is not None:  # no new caller while the node stops, no worker replaced
            await self._stop_step("front_door", self.processes.stopping(), 15)
        if self.director is not None:
            self.director.hangup_all()
            await asyncio.sleep(0.3)
        if self.pool is not None:
            await self._stop_step("workers", self.pool.stop(), 15)
        if self.processes is not None:
            await self._stop_step("processes", self.processes.stop(), 20)
        if self.director is not None:
            await self._stop_step("calls", self.director.drain(), 15)
        if self.routing is not None:  # the final flush of the event log: events it cannot write are lost, loudly
            await self._stop_step("routing", self.routing.stop(), 30)
        if self.engine is not None:
            await self._stop_step("database", self.engine.dispose(), 10)
        if started:
            log.info("node_stopped", extra={"node_id": self.node_id})

    async def _stop_step(self, step: str, work: Any, timeout_s: float) -> None:
        try:
            await asyncio.wait_for(work, timeout_s)
        except TimeoutError:
            log.error("node_stop_step_timed_out", extra={"node_id": self.node_id, "step": step, "timeout_s": timeout_s})
        except Exception:
            log.exception("node_stop_step_failed", extra={"node_id": self.node_id, "step": step})


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def stop_on_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM end the node cleanly (calls hung up, recordings sealed)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def start_or_explain(node: Node) -> bool:
    """Start the node; on bad configuration undo what started and say why in one line."""
    try:
        await node.start()
    except ConfigError as e:
        await node.stop()
        print(f"handoff122: {e}", file=sys.stderr)
        return False
    return True


async def serve(settings: Settings, ready: asyncio.Event | None = None,
                stop: asyncio.Event | None = None, banner: logging.Handler | None = None,
                processes: Any = None) -> int:
    """Run one node until ``stop`` (or Ctrl-C / SIGTERM).

    ``processes``: the supervisor running this node's workers and Kamailio
    (``gateway.supervisor.SupervisorLink``); None spawns them from this process.
    ``banner``: the console log handler of a person's terminal.  Its INFO lines are held back while
    the node starts, so that the first screen is the banner; warnings and errors still show.
    """
    node = Node(settings)
    node.processes = processes
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    if banner is not None:
        banner.setLevel(logging.WARNING)
    if not await start_or_explain(node):
        return 2
    if banner is not None:
        print(render_banner(node.facts()), file=sys.stderr, flush=True)
        banner.setLevel(logging.NOTSET)
    if ready is not None:
        ready.set()
    await node.processes.ready()  # the supervisor restarts this process from now on if it dies
    await stop.wait()
    await node.stop()
    return 0


def run_node(settings: Settings) -> int:
    """The control process (under ``handoff122 serve``'s supervisor, ``gateway.supervisor``)."""
    from gateway.supervisor import die_with_supervisor, link_from_env

    link = link_from_env()
    if link is not None:
        die_with_supervisor(link.spawner_pid)
    fmt = resolve_format(settings.log_format)
    os.environ["HANDOFF_LOG_FORMAT"] = fmt  # the workers, on the same terminal, write alike
    handler = configure_logging(settings.log_level, process_name="control", fmt=fmt)
    return asyncio.run(serve(settings, banner=handler if fmt == "human" else None, processes=link))
