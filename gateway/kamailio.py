"""Kamailio as the node's SIP front door: config from settings, a child process, JSON-RPC.

Kamailio owns the public SIP port and relays signalling only (RTP flows caller <-> worker).  It
answers what needs no media (404 for other numbers, OPTIONS, 503 + Retry-After when every worker
is full, malformed requests) and spreads INVITEs over the workers with dispatcher algorithm 10
(call load, ``maxload`` = callers per worker), health-checked with OPTIONS, failing over on
timeout/5xx.  The control process talks to it over a JSON-RPC datagram socket to mark a dead
worker down at once and to end that worker's dialogs so its callers hear a BYE, not silence.

122 is a public number: anyone can send it SIP, so the front door trusts nobody but the trunks
named in the settings (``EdgePolicy``).  From everyone else it removes identity headers, sheds
floods per source (pike for the request rate, a dialog profile for concurrent calls), drops known
scanners without a word, refuses every method but INVITE (and, inside a dialog it knows, the few
a call needs), and relays in-dialog requests only for dialogs it created itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.local_sockets import unix_socket_path

log = logging.getLogger("gateway.kamailio")

MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/aarch64-linux-gnu/kamailio/modules",
               "/usr/lib/kamailio/modules", "/usr/local/lib64/kamailio/modules")


@dataclass(slots=True)
class Destination:
    worker_id: int
    host: str
    port: int
    label: str | None = None   # the dispatcher's duid; default w<worker_id> (a cluster node: node-<i>)

    @property
    def uri(self) -> str:
        return f"sip:{self.host}:{self.port}"


def find_kamailio(setting: str) -> str | None:
    """The binary to run, or None when the node must run without a front door."""
    if setting == "off":
        return None
    if setting != "auto":
        return setting if os.access(setting, os.X_OK) else None
    return shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.access(p, os.X_OK)), None)


def module_dir() -> str:
    for d in MODULE_DIRS:
        if Path(d, "dispatcher.so").exists():
            return d
    raise FileNotFoundError("Kamailio modules not found (is the kamailio package complete?)")


#: identity headers a caller could forge; believed only from trunks (CONTRACT.md, SIP)
IDENTITY_HEADERS = ("P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID")
#: methods a caller may send inside a dialog the front door knows; REFER, SUBSCRIBE, NOTIFY,
#: MESSAGE, PUBLISH ... get 403 (a caller can never make the gateway call someone else)
IN_DIALOG_METHODS = "ACK|BYE|CANCEL|INFO|INVITE|UPDATE|PRACK|OPTIONS"


@dataclass(slots=True)
class EdgePolicy:
    """Who the front door believes and how much it takes from one source (settings: edge trust)."""

    trunk_sources: list[str] = field(default_factory=list)  # IPs/CIDRs; the node's own address is added
    requests_per_s: int = 20         # per non-trunk source (pike), then ignored until it slows down
    source_max_calls: int = 2        # concurrent calls per non-trunk source (dialog profile)
    invite_timeout_s: int = 10       # tm fr_inv_timer: a worker answers within its answer delay
    scanner_user_agents: list[str] = field(default_factory=lambda: ["friendly-scanner", "sipvicious", "sipcli",
                                                                    "VaxSIPUserAgent", "sipsak", "sundayddr"])
    sip_realm: str = "handoff122"    # digest realm of seat phones (HA1 = md5(user:realm:password))

    def trusted_networks(self, host: str) -> list[str]:
        """Trunks plus the node's own SIP address (its workers and local tools speak from there)."""
        nets = [str(ipaddress.ip_network(s, strict=False)) for s in self.trunk_sources]
        try:
            own = ipaddress.ip_address(host)
        except ValueError:
            return nets
        if not own.is_unspecified:
            nets.append(str(ipaddress.ip_network(own)))
        return list(dict.fromkeys(nets))


@dataclass(slots=True)
class TlsListener:
    """SIP over TLS at the front door (Kamailio ``tls`` module, Debian kamailio-tls-modules)."""

    port: int
    cert: Path
    key: Path

    def render(self) -> str:
        """Kamailio's tls.cfg: TLS 1.2+, trunks and seats are not asked for a client certificate."""
        return (f"[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
                f"certificate = {self.cert.resolve()}\nprivate_key = {self.key.resolve()}\n\n"
                f"[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n")


def _trunk_test(networks: list[str]) -> str:
    if not networks:
        return "0"
    return " || ".join(f'is_in_subnet("$si", "{n}")' for n in networks)


def _scanner_check(agents: list[str]) -> str:
    """Drop known scanners without a reply (a reply tells them something answers here).
    Kamailio compiles ``=~`` case-insensitively; the settings allow only plain text in the names."""
    if not agents:
        return ""
    regex = "|".join(a.replace(" ", "[ ]") for a in agents)
    return f"""    if (is_present_hf("User-Agent") && $ua =~ "{regex}") {{
        exit;
    }}"""


def _ci_regex(text: str) -> str:
    """A POSIX regex matching ``text`` in any letter case (header names are case-insensitive)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else (f"[{c}]" if c == "." else c) for c in text)


#: seconds between the front door's in-dialog OPTIONS to the node side of a seat call; Kamailio 5.6's
#: dialog module refuses less than 30 ("ka interval too low"): a dead node's seat call therefore
#: ends within 30 + 2 (OPTIONS timeout) + 10 (the module's grace) + 1 (timer step) = 43 s
SEAT_KEEPALIVE_S = 30


@dataclass(slots=True)
class ClusterRole:
    """What makes a Kamailio the cluster's front door rather than one node's (docs/CLUSTER.md).

    Its dispatcher destinations are the nodes' own Kamailios (per-node dispatch, health-checked
    with OPTIONS every second), seat phones register here, and the nodes' workers send their seat
    INVITEs here (``sip:<seat user>@front``): from a node address such an INVITE is looked up in
    the registrations and relayed, under a dialog profile ``seat`` that refuses a second
    simultaneous call to one seat with ``486 Seat Busy``, whichever node sent it.
    """

    node_sources: list[str] = field(default_factory=list)  # IPs/CIDRs the nodes' workers send from

    def dialog_keepalive(self) -> str:
        """The dialog module's keep-alives of seat dialogs (only they set ``ka-src``): checked every
        second, an OPTIONS to the node's worker every SEAT_KEEPALIVE_S, the first one that times
        out (tm's fr_timer, 2 s) ends the dialog 10 s later (fixed in the module) with a BYE."""
        return (f'modparam("dialog", "ka_timer", 1)\n'
                f'modparam("dialog", "ka_interval", {SEAT_KEEPALIVE_S})\n'
                f'modparam("dialog", "ka_failed_limit", 1)\n')

    def node_test(self) -> str:
        nets = [str(ipaddress.ip_network(s, strict=False)) for s in self.node_sources]
        return " || ".join(f'is_in_subnet("$si", "{n}")' for n in nets) or "0"


#: the reply to a seat INVITE while that seat is on another call (the last guard of issue 14)
SEAT_BUSY = ("486", "Seat Busy: Another Call In Progress")


def _seat_route(cluster: ClusterRole | None, numbers: str) -> tuple[str, str]:
    """(the test in request_route, the SEAT route) of a cluster front door; empty for a node."""
    if cluster is None:
        return "", ""
    test = f"""    if (isflagset(FLT_NODE) && !($rU =~ "^({numbers})$")) {{
        route(SEAT);
        exit;
    }}
"""
    route = f"""
# A worker of some node dials a registered seat through here.  The dialog profile "seat" holds one
# entry per seat with a call in progress (ringing or talking), on this front door, so two nodes (or
# a deposed routing leader) can never ring one seat twice at once: the second INVITE is refused.
route[SEAT] {{
    # check and take the seat under one lock per seat: two INVITEs for one seat handled at the same
    # moment by two Kamailio children cannot both see it free
    $var(seat) = $rU;
    lock("seat-$var(seat)");
    get_profile_size("seat", "$var(seat)", "$var(seat_calls)");
    if ($var(seat_calls) >= 1) {{
        unlock("seat-$var(seat)");
        xlog("L_WARN", "seat $var(seat) already has a call: second INVITE from $si refused\\n");
        sl_send_reply("{SEAT_BUSY[0]}", "{SEAT_BUSY[1]}");
        exit;
    }}
    if (!lookup("location")) {{
        unlock("seat-$var(seat)");
        sl_send_reply("480", "Seat Not Registered");
        exit;
    }}
    remove_hf("Route");
    record_route();
    # a node that dies (kill -9, power) sends no BYE: the front door asks the node's side with
    # in-dialog OPTIONS every SEAT_KEEPALIVE_S (ka-src: the worker that sent this INVITE, which
    # answers 200 while it lives); an OPTIONS that times out ends the dialog, with a BYE to the
    # seat phone (timeout_bye), and frees the seat's profile entry
    $dlg_ctx(timeout_bye) = 1;
    dlg_manage();
    dlg_set_property("ka-src");
    set_dlg_profile("seat", "$var(seat)");
    if (!t_relay()) {{
        unlock("seat-$var(seat)");
        sl_reply_error();
        exit;
    }}
    unlock("seat-$var(seat)");
    exit;
}}
"""
    return test, route


def render_config(*, host: str, port: int, service_numbers: list[str], rpc_socket: Path | str, dispatcher_list: Path,
                  retry_after_s: int, max_forwards: int = 10, children: int = 4, probing: bool = True,
                  edge: EdgePolicy | None = None, tls: TlsListener | None = None, tls_cfg: Path | None = None,
                  cluster: ClusterRole | None = None) -> str:
    edge = edge or EdgePolicy()
    tls_listen = tls_module = ""
    if tls is not None:
        if not Path(module_dir(), "tls.so").exists():
            raise FileNotFoundError("a TLS listener needs Kamailio's tls module (Debian: kamailio-tls-modules)")
        tls_listen = f"enable_tls=yes\nlisten=tls:{host}:{tls.port}\n"
        assert tls_cfg is not None, "the TLS listener's tls.cfg path"
        tls_module = f'loadmodule "tls.so"\nmodparam("tls", "config", "{tls_cfg}")\n'

    numbers = "|".join(n.replace("+", "\\+") for n in service_numbers)
    seat_test, seat_route = _seat_route(cluster, numbers)
    # A node's Kamailio hands a call to a worker as the next hop ($du), the Request-URI unchanged.
    # The cluster front door hands it to a node's Kamailio, which relays only what is addressed to
    # itself: so the front door rewrites the Request-URI's host:port to that node (ds_*_domain).
    select, next_one, chosen = (("ds_select_domain", "ds_next_domain", "$ru") if cluster is not None
                                else ("ds_select_dst", "ds_next_dst", "$du"))
    node_flag = f"""    if ({cluster.node_test()}) {{
        setflag(FLT_NODE);
    }}
""" if cluster is not None else ""
    trunk = _trunk_test(edge.trusted_networks(host))
    scanners = _scanner_check(edge.scanner_user_agents)
    strip_identity = "\n".join(f'        remove_hf("{h}");' for h in IDENTITY_HEADERS)
    x_handoff = _ci_regex("X-Handoff-")
    return f"""#!KAMAILIO
# Written by handoff122 serve from its settings; edits are overwritten at the next start.
debug=1
log_stderror=yes
log_prefix="{{$mt $hdr(CSeq) $ci}} "
memdbg=5
memlog=5
children={children}
tcp_children=2
disable_tcp=no
auto_aliases=no
dns=no
rev_dns=no
listen=udp:{host}:{port}
listen=tcp:{host}:{port}
{tls_listen}alias="{host}:{port}"
server_header="Server: handoff122-front"
user_agent_header="User-Agent: handoff122-front"
tcp_connection_lifetime=3605

#!define FLT_TRUNK 1
#!define FLT_NODE 2

mpath="{module_dir()}"
{tls_module}loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "sanity.so"
loadmodule "jsonrpcs.so"
loadmodule "dialog.so"
loadmodule "dispatcher.so"
loadmodule "ipops.so"
loadmodule "pike.so"
loadmodule "htable.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
loadmodule "cfgutils.so"

modparam("jsonrpcs", "transport", 4)
modparam("jsonrpcs", "dgram_socket", "{rpc_socket}")
modparam("jsonrpcs", "dgram_mode", 0600)
modparam("tm", "fr_timer", 2000)
modparam("tm", "fr_inv_timer", {edge.invite_timeout_s * 1000})
modparam("rr", "enable_full_lr", 0)
modparam("rr", "append_fromtag", 1)
modparam("dialog", "enable_stats", 1)
modparam("dialog", "default_timeout", 14400)
modparam("dialog", "profiles_with_value", "source;seat")
{cluster.dialog_keepalive() if cluster is not None else ""}modparam("htable", "htable", "seatha1=>size=6;")
modparam("cfgutils", "lock_set_size", 8)
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "timer_interval", 5)
modparam("registrar", "min_expires", 10)
modparam("registrar", "max_expires", 3600)
modparam("pike", "sampling_time_unit", 2)
modparam("pike", "reqs_density_per_unit", {edge.requests_per_s * 2})
modparam("pike", "remove_latency", 4)
modparam("dispatcher", "list_file", "{dispatcher_list}")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "xavp_dst", "_dsdst_")
modparam("dispatcher", "xavp_ctx", "_dsctx_")
modparam("dispatcher", "ds_hash_size", 9)
modparam("dispatcher", "ds_hash_expire", 14400)
modparam("dispatcher", "ds_hash_initexpire", 300)
modparam("dispatcher", "ds_ping_interval", 1)
modparam("dispatcher", "reload_delta", 0)
modparam("dispatcher", "ds_ping_from", "sip:front@{host}:{port}")
modparam("dispatcher", "ds_probing_mode", {1 if probing else 0})
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("dispatcher", "ds_ping_reply_codes", "class=2")

request_route {{
{scanners}
{node_flag}    if (isflagset(FLT_NODE) || {trunk}) {{
        setflag(FLT_TRUNK);
    }} else {{
        if (!pike_check_req()) {{
            # a flood from one source: ignored (no reply costs nothing) until it slows down
            exit;
        }}
        # identity is believed only from trunks; from anyone else it is removed here
{strip_identity}
        remove_hf_re("^{x_handoff}");
    }}
    if (!mf_process_maxfwd_header("{max_forwards}")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check("17895", "7")) {{
        xlog("L_WARN", "malformed request from $si:$sp dropped\\n");
        exit;
    }}
    if (has_totag()) {{
        route(WITHINDLG);
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (is_method("ACK")) {{
        # an ACK without a to-tag belongs to no dialog: only tm's own transactions
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (t_check_trans()) {{
        exit;
    }}
    if (is_method("OPTIONS")) {{
        # answered here (load-balancer health checks), never relayed, whatever its Request-URI
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("REGISTER")) {{
        route(REGISTRAR);
        exit;
    }}
    if (!is_method("INVITE")) {{
        # REFER, MESSAGE, SUBSCRIBE, PUBLISH, NOTIFY ...: nothing to do here
        append_to_reply("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REGISTER\\r\\n");
        sl_send_reply("405", "Method Not Allowed");
        exit;
    }}
    if (uri != myself) {{
        # the front door is nobody's relay, whatever Route a request carries
        sl_send_reply("403", "Relaying Forbidden");
        exit;
    }}
{seat_test}    if (!($rU =~ "^({numbers})$")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    if (!isflagset(FLT_TRUNK)) {{
        get_profile_size("source", "$si", "$var(held)");
        if ($var(held) >= {edge.source_max_calls}) {{
            append_to_reply("Retry-After: {retry_after_s}\\r\\n");
            sl_send_reply("503", "Too Many Calls From Your Address");
            exit;
        }}
    }}
    remove_hf("Route");
    record_route();
    if (!{select}("1", "10")) {{
        route(FULL);
    }}
    dlg_manage();
    if (!isflagset(FLT_TRUNK)) {{
        set_dlg_profile("source", "$si");
    }}
    $dlg_var(worker) = {chosen};
    t_on_failure("FAILOVER");
    t_on_reply("REPLY");
    route(RELAY);
}}

# Seat phones register with digest auth; the HA1 of each seat phone is loaded into the seatha1
# hash table by the node over RPC (gateway.registrations): no password, no credentials file.
route[REGISTRAR] {{
    if (!is_present_hf("Authorization")) {{
        auth_challenge("{edge.sip_realm}", "0");
        exit;
    }}
    $var(ha1) = $sht(seatha1=>$au);
    if ($var(ha1) == $null || $au != $tU) {{
        xlog("L_WARN", "REGISTER of an unknown seat phone $au for $tU from $si\\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    $var(rc) = pv_auth_check("{edge.sip_realm}", "$var(ha1)", "1", "0");
    if ($var(rc) == -2) {{
        xlog("L_WARN", "REGISTER of seat phone $au from $si: wrong password\\n");
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    if ($var(rc) < 0) {{
        auth_challenge("{edge.sip_realm}", "0");
        exit;
    }}
    consume_credentials();
    if (!save("location")) {{
        sl_reply_error();
    }}
}}

{seat_route}
route[WITHINDLG] {{
    if (!is_method("ACK") && t_check_trans()) {{
        exit;  # a retransmission: tm answered it again
    }}
    if (!is_known_dlg()) {{
        # not a dialog this front door made: never relayed, whatever its Route says
        if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
            exit;
        }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    if (!is_method("{IN_DIALOG_METHODS}")) {{
        # REFER, MESSAGE, SUBSCRIBE, NOTIFY ... inside a call: a caller never steers the gateway
        sl_send_reply("403", "Forbidden");
        exit;
    }}
    if (!loose_route()) {{
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
            exit;
        }}
        sl_send_reply("404", "Not Here");
        exit;
    }}
    if (is_method("BYE")) {{
        ds_load_update();
    }}
    route(RELAY);
}}

route[RELAY] {{
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

route[FULL] {{
    append_to_reply("Retry-After: {retry_after_s}\\r\\n");
    sl_send_reply("503", "Service Unavailable");
    exit;
}}

onreply_route[REPLY] {{
    if (status =~ "2[0-9][0-9]" && is_method("INVITE")) {{
        ds_load_update();
    }}
}}

failure_route[FAILOVER] {{
    if (t_is_canceled()) {{
        ds_load_unset();
        exit;
    }}
    if (t_branch_timeout() || t_check_status("408|500|502")) {{
        xlog("L_WARN", "worker $du failed ($T_reply_code), marking it down\\n");
        ds_mark_dst("ip");
    }}
    if (t_branch_timeout() || t_check_status("408|5[0-9][0-9]")) {{
        ds_load_unset();
        if ({next_one}()) {{
            $dlg_var(worker) = {chosen};
            t_on_failure("FAILOVER");
            route(RELAY);
            exit;
        }}
        append_to_reply("Retry-After: {retry_after_s}\\r\\n");
        t_reply("503", "Service Unavailable");
        exit;
    }}
    ds_load_unset();
}}
"""


def private_dir(path: Path) -> Path:
    """A directory only this user can enter (0700): sockets inside it are nobody else's business."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


#: Runs in a fresh interpreter between fork and the real program: ask the kernel for SIGTERM when
#: the parent dies (PR_SET_PDEATHSIG = 1, kept across execve), then check the parent did not die
#: before that (then we were re-parented already), then become the program.
_PDEATHSIG_SHIM = (
    "import ctypes,os,signal,sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)\n"
    "os.getppid() == int(sys.argv[1]) or os._exit(70)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


def exec_with_parent_death(binary: str, *args: str) -> list[str]:
    """argv that runs ``binary args`` so it gets SIGTERM when this process dies (Linux), without
    a ``preexec_fn`` (unsafe once the node runs threads)."""
    if not sys.platform.startswith("linux"):
        return [binary, *args]
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_SHIM, str(os.getpid()), binary, *args]


#: dispatcher destination flags: inactive (1) and probing (8): back in use when it answers OPTIONS
DS_INACTIVE_PROBING = 9


def render_dispatcher_list(destinations: list[Destination], maxload: int) -> str:
    lines = ["# setid destination flags priority attributes (written by handoff122 serve)"]
    for d in destinations:
        lines.append(f"1 {d.uri} 0 0 duid={d.label or f'w{d.worker_id}'};maxload={maxload}")
    return "\n".join(lines) + "\n"


class KamailioRpc:
    """JSON-RPC over Kamailio's datagram socket (blocking; run it in a thread from asyncio)."""

    def __init__(self, rpc_socket: Path | str) -> None:
        # ``udp:host:port``: jsonrpcs's UDP listener (a cluster front door on another machine)
        self.udp: tuple[str, int] | None = None
        if isinstance(rpc_socket, str) and rpc_socket.startswith("udp:"):
            host, _, port = rpc_socket[4:].rpartition(":")
            self.udp = (host.strip("[]"), int(port))
        self.rpc_socket = Path(rpc_socket)
        self.address = str(rpc_socket)  # as Kamailio's jsonrpcs dgram_socket takes it
        self._id = 0

    def _udp_call(self, req: str, timeout: float) -> bytes:
        assert self.udp is not None
        s = socket.socket(socket.AF_INET6 if ":" in self.udp[0] else socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.settimeout(timeout)
            s.sendto(req.encode(), self.udp)
            return s.recv(1 << 20)
        finally:
            s.close()

    def call(self, method: str, *params: Any, timeout: float = 2.0) -> Any:
        self._id += 1
        req = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": self._id})
        if self.udp is not None:
            return self._unpack(method, self._udp_call(req, timeout))
        with tempfile.TemporaryDirectory(prefix="h122rpc") as d:
            reply_path = os.path.join(d, "r.sock")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                s.bind(reply_path)
                s.settimeout(timeout)
                s.sendto(req.encode(), str(self.rpc_socket))
                data = s.recv(1 << 20)
            finally:
                s.close()
        return self._unpack(method, data)

    @staticmethod
    def _unpack(method: str, data: bytes) -> Any:
        reply = json.loads(data)
        if "error" in reply:
            raise RuntimeError(f"kamailio {method}: {reply['error']}")
        return reply.get("result")


class Kamailio:
    """The front-door child process of a node."""

    def __init__(self, binary: str, run_dir: Path, *, host: str, port: int, service_numbers: list[str],
                 destinations: list[Destination], maxload: int, retry_after_s: int, shm_mb: int,
                 probing: bool = True, edge: EdgePolicy | None = None, tls: TlsListener | None = None,
                 cluster: ClusterRole | None = None, rpc_listen: str | None = None) -> None:
        self.binary = binary
        self.cluster = cluster
        self.run_dir = run_dir
        self.host = host
        self.port = port
        self.service_numbers = service_numbers
        self.destinations = destinations
        self.maxload = maxload
        self.retry_after_s = retry_after_s
        self.shm_mb = shm_mb
        self.probing = probing
        self.edge = edge or EdgePolicy()
        self.tls = tls
        self.proc: asyncio.subprocess.Process | None = None
        # a Unix socket in the run dir; or (a cluster front door serving nodes on other machines)
        # rpc_listen = udp:<private address>:<port>
        self.rpc = KamailioRpc(rpc_listen or unix_socket_path(run_dir, "kamailio-rpc.sock"))
        self._stderr_task: asyncio.Task[None] | None = None
        self.last_errors: deque[str] = deque(maxlen=5)
        self._stopping = False

    def write_config(self) -> Path:
        private_dir(self.run_dir)
        ds = self.run_dir / "dispatcher.list"
        ds.write_text(render_dispatcher_list(self.destinations, self.maxload))
        cfg = self.run_dir / "kamailio.cfg"
        tls_cfg = self.run_dir / "tls.cfg"
        if self.tls is not None:
            tls_cfg.write_text(self.tls.render())
        cfg.write_text(render_config(host=self.host, port=self.port, service_numbers=self.service_numbers,
                                     rpc_socket=self.rpc.address, dispatcher_list=ds,
                                     retry_after_s=self.retry_after_s, probing=self.probing, edge=self.edge,
                                     tls=self.tls, tls_cfg=tls_cfg, cluster=self.cluster))
        return cfg

    async def check_config(self) -> None:
        cfg = self.write_config()
        p = await asyncio.create_subprocess_exec(self.binary, "-c", "-f", str(cfg), stdout=asyncio.subprocess.PIPE,
                                                 stderr=asyncio.subprocess.STDOUT)
        out, _ = await p.communicate()
        if p.returncode != 0:
            lines = [ln for ln in out.decode(errors="replace").splitlines() if "ERROR" in ln or "error" in ln]
            raise RuntimeError("kamailio config rejected: " + (lines[-1] if lines else out.decode()[-300:]))

    async def start(self) -> None:
        await self.check_config()
        if self.rpc.udp is None:
            self.rpc.rpc_socket.unlink(missing_ok=True)
        # -DD: the main process stays in the foreground as our direct child; its own session so its
        # shutdown (a signal to its process group) never reaches the node; and it receives SIGTERM
        # when the node dies, even by kill -9, so it never outlives the node holding the port.
        self.proc = await asyncio.create_subprocess_exec(
            *exec_with_parent_death(self.binary, "-f", str(self.run_dir / "kamailio.cfg"), "-DD", "-E", "-m",
                                    str(self.shm_mb), "-M", "16", "-w", str(self.run_dir), "-Y", str(self.run_dir)),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        self._stderr_task = asyncio.create_task(self._pump_stderr())
        for _ in range(100):
            if self.proc.returncode is not None:
                await asyncio.sleep(0.1)  # let the stderr pump catch the reason
                why = self.last_errors[-1] if self.last_errors else f"is {self.host}:{self.port} already in use?"
                raise RuntimeError(f"kamailio exited at start (code {self.proc.returncode}): {why}")
            if (self.rpc.udp or self.rpc.rpc_socket.exists()) and await asyncio.to_thread(self._rpc_ok):
                log.info("kamailio_started", extra={"pid": self.proc.pid, "port": self.port})
                return
            await asyncio.sleep(0.1)
        why = f": {self.last_errors[-1]}" if self.last_errors else ""
        raise RuntimeError(f"kamailio did not come up within 10 s{why}")

    def _rpc_ok(self) -> bool:
        try:
            self.rpc.call("core.version", timeout=0.5)
            return True
        except Exception:
            return False

    async def _pump_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            level = logging.ERROR if " ERROR:" in line or "CRITICAL" in line else (
                logging.WARNING if "WARNING" in line else logging.DEBUG)
            if "cannot find load for" in line:
                level = logging.DEBUG  # a retransmitted BYE: its slot was already freed
            if self._stopping:
                level = logging.DEBUG  # children closing their pipes ("receive_fd(): EOF") on a normal stop
            if level == logging.ERROR:
                self.last_errors.append(line.split(": ", 2)[-1][:200])
            log.log(level, "kamailio", extra={"line": line[-400:]})

    async def call(self, method: str, *params: Any) -> Any:
        return await asyncio.to_thread(self.rpc.call, method, *params)

    async def mark_down(self, dest: Destination) -> None:
        """Stop sending new callers to a worker at once (probing brings it back when it answers)."""
        try:
            await self.call("dispatcher.set_state", "ip", 1, dest.uri)
        except Exception as e:
            log.warning("kamailio_mark_down_failed", extra={"worker_id": dest.worker_id, "error": str(e)})

    async def fresh_destination(self, dest: Destination) -> bool:
        """A worker that died is replaced: its destination starts again with no call load.

        The load-based algorithm (10) counts a call from its INVITE until ``ds_load_update`` sees
        its BYE in the script.  The dialogs of a dead worker are ended by the dialog module
        (``end_dialogs_of``), whose BYEs never pass the script: their load stayed counted for
        ``ds_hash_expire`` (4 h), so the replacement looked full (``maxload``) and the front door
        answered 503 while it sat idle (issue 13, ``bench faults`` worker_kill).  Removing the
        destination and adding it again gives it a load of 0 (``dispatcher.remove`` / ``add`` keep
        the other workers' loads); it comes back inactive and probing, so it takes callers once
        it answers OPTIONS.  False when the RPC failed (then it stays as ``mark_down`` left it)."""
        try:
            await self.call("dispatcher.remove", 1, dest.uri)
        except Exception as e:
            log.warning("kamailio_fresh_destination_failed", extra={"worker_id": dest.worker_id, "error": str(e)})
            return False
        # (``reload_delta`` 0 lets the add follow at once; should it be refused all the same, it
        # is tried again: a destination left out would be a worker the front door never uses)
        for attempt in range(20):
            try:
                await self.call("dispatcher.add", 1, dest.uri, DS_INACTIVE_PROBING, 0,
                                f"duid=w{dest.worker_id};maxload={self.maxload}")
                return True
            except Exception as e:
                log.warning("kamailio_fresh_destination_failed", extra={
                    "worker_id": dest.worker_id, "error": str(e), "attempt": attempt + 1})
                await asyncio.sleep(0.5)
        return False

    async def end_dialogs_of(self, dest: Destination) -> int:
        """End (BYE) every dialog that was relayed to ``dest``; returns how many."""
        try:
            dialogs = await self.call("dlg.list") or []
        except Exception as e:
            log.warning("kamailio_dlg_list_failed", extra={"error": str(e)})
            return 0
        ended = 0
        for d in dialogs if isinstance(dialogs, list) else []:
            variables = d.get("variables") or []
            worker = None
            for v in variables:
                if isinstance(v, dict) and "worker" in v:
                    worker = v["worker"]
            if worker and dest.uri in str(worker):
                try:
                    await self.call("dlg.end_dlg", d["h_entry"], d["h_id"])
                    ended += 1
                except Exception as e:
                    log.warning("kamailio_end_dlg_failed", extra={"error": str(e)})
        return ended

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self._stopping = True
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        if self._stderr_task:
            self._stderr_task.cancel()
