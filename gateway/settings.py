"""One typed settings object for a node.

Sources, strongest first: command-line flags, ``HANDOFF_<NAME>`` environment variables, the
optional YAML/JSON file given by ``--config`` / ``HANDOFF_CONFIG``, then defaults that run on one
laptop.  Every bad value is reported as one line naming the setting, so an operator can fix a
deployment without reading a traceback.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_IVR_DIR = PACKAGE_DIR.parent / "ivr"


class ConfigError(Exception):
    """A configuration problem, printed as one line by the CLI before exiting non-zero."""


def _default_workers() -> int:
    # Each worker holds `worker_callers` callers (2 legs each).  Sized so that a 2-core laptop
    # gets a useful node without oversubscribing: at ~0.5 % of a core per bridged call the CPU is
    # never the limit, the slot count is.
    return max(2, min(64, (os.cpu_count() or 2) * 4))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HANDOFF_", extra="forbid", validate_default=True)

    config: Path | None = Field(None, description="YAML/JSON file of settings (flags and HANDOFF_* beat it)")

    # SIP edge
    sip_host: str = Field("127.0.0.1", description="address of the public SIP port (Kamailio)")
    sip_port: int = Field(5060, ge=1, le=65535, description="public SIP port, UDP and TCP")
    service_numbers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["122"], description="numbers answered, comma-separated; others get 404")
    workers: int = Field(default_factory=_default_workers, ge=1, le=256,
                         description="media worker processes (one pjsua2 endpoint each)")
    worker_callers: int = Field(2, ge=1, le=256, description="callers per worker (each needs a seat leg too)")
    worker_max_calls: int = Field(4, ge=2, le=1024, description="PJSUA_MAX_CALLS of the pjsua2 build")
    worker_base_port: int = Field(0, ge=0, le=65535, description="first worker SIP port; 0 = sip_port + 100")
    rtp_base_port: int = Field(0, ge=0, le=65535, description="first RTP port; 0 = sip_port + 10000")
    rtp_ports_per_worker: int = Field(40, ge=8, le=2000, description="RTP ports each worker may use")
    kamailio: str = Field("auto", description="auto | off | path to the kamailio binary")
    kamailio_shm_mb: int = Field(128, ge=16, le=4096, description="Kamailio shared memory, MB")
    retry_after_s: int = Field(5, ge=1, le=3600, description="Retry-After of a 503 when every worker is full")
    answer_delay_s: float = Field(0.3, ge=0, le=10, description="ring before answering (a caller may still CANCEL)")

    # control, storage, events
    api_host: str = Field("127.0.0.1", description="address of the API, dashboard and seat console")
    api_port: int = Field(8000, ge=0, le=65535, description="API port; 0 = no API")
    data_dir: Path = Field(Path("./var"), description="SQLite database, recordings and run files (made absolute)")
    db_url: str | None = Field(None, description="SQLAlchemy URL, e.g. postgresql+asyncpg://u:p@host/db; "
                                                 "default SQLite in the data dir")
    mqtt_url: str | None = Field(None, description="mqtt://host:port of the event bus; default no MQTT")
    seats: Path | None = Field(None, description="seats file (YAML); example: examples/seats.yaml")
    flow: Path | None = Field(None, description="IVR flow file (YAML); default the shipped ivr/flows/default.yaml")

    # call handling
    ring_timeout: float = Field(20.0, gt=0, le=600, description="seconds a seat rings before ring-no-answer")
    rona_not_ready_after: int = Field(1, ge=1, le=100, description="RONAs before a seat goes not_ready")
    hold_announce_interval: float = Field(15.0, ge=2, le=600,
                                          description="seconds between queue-position announcements")
    service_level_s: float = Field(20.0, gt=0, le=3600, description="service-level threshold, seconds")
    wrap_up_s: float = Field(15.0, ge=0, le=3600, description="seconds of wrap-up after a conversation")
    callback_after_s: float = Field(30.0, ge=0, le=86400,
                                    description="an abandoned caller who waited this long is put on the callback list")
    dispositions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["fast_handled_online", "insurance_claim_opened", "police_on_scene", "query_answered",
                                 "not_road_accident", "caller_unreachable"],
        description="outcome codes a seat picks when a conversation ends, comma-separated (docs/SEATS.md)")
    fast_handled_dispositions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["fast_handled_online", "insurance_claim_opened"],
        description="codes that count as fast-handled in the centre's headline figure")
    not_accident_dispositions: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["query_answered", "not_road_accident"],
        description="codes that take a call out of the accident calls (the headline figure's denominator)")
    sip_realm: str = Field("handoff122", pattern=r"^[A-Za-z0-9_.-]{1,64}$",
                           description="digest realm of seat phones that REGISTER (HA1 = md5(user:realm:password))")
    report_timezone: str = Field("Asia/Shanghai", description="time zone of the centre's day (daily report)")
    recordings_retention_days: int = Field(180, ge=1, le=36500, description="recordings older than this are purged")
    caller_id_header: str = Field("from+pai", description="how the caller's number reaches a seat: from | pai | from+pai")

    # api limits (issue 12)
    api_max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024,
                                    description="largest API request body; larger ones get 413 before authentication")
    api_max_flow_bytes: int = Field(1024 * 1024, ge=1024, le=16 * 1024 * 1024,
                                    description="largest IVR flow upload (PUT /api/v1/admin/flow)")
    api_flow_parse_timeout_s: float = Field(2.0, gt=0, le=60, description="time limit to read an uploaded flow")
    api_auth_failures: int = Field(20, ge=1, le=10_000, description="bad tokens per client address per window before 429")
    api_auth_window_s: float = Field(60.0, gt=0, le=3600)
    api_ws_auth_timeout_s: float = Field(5.0, gt=0, le=60, description="a WebSocket must authenticate within this")
    api_nice: int = Field(10, ge=0, le=19, description="scheduling niceness of the API process: when CPU is "
                          "short, calls (control, workers, front door) get it first")
    api_ws_queue: int = Field(256, ge=4, le=100_000,
                              description="live messages a WebSocket client may have waiting before it is resynced")

    # durability (issue 13)
    sqlite_synchronous: str = Field("full", description="SQLite fsync policy: full (every commit survives a "
                                    "power cut) | normal (a power cut may lose the last commits); docs/DURABILITY.md")
    twilio_reclaim_s: float = Field(15.0, gt=0, le=600, description="after a restart, a Twilio caller in the IVR "
                                    "or queue not heard from within this is closed as lost (with a callback)")
    seat_media_timeout_s: float = Field(9.0, ge=0, le=600, description="a bridged seat leg from which no RTP "
                                        "arrives for this long is taken as lost (its network vanished): the caller "
                                        "goes back to the head of the queue; must exceed the phones' silence "
                                        "keep-alive (5 s); 0 = off (docs/DURABILITY.md)")

    # cluster (issue 14, docs/CLUSTER.md): several nodes, one elected routing authority on PostgreSQL
    cluster: bool = Field(False, description="route through the cluster's elected routing authority "
                          "(true | false); needs db_url on PostgreSQL shared by every node")
    cluster_node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
                                        description="this node's name in the cluster, unique per node; "
                                                    "default host:sip_port")
    cluster_lease_s: float = Field(3.0, ge=1, le=60, description="the routing authority's lease: a frozen or "
                                   "cut-off leader is replaced after about this long")
    cluster_node_grace_s: float = Field(30.0, ge=1, le=3600, description="a node gone this long (no session "
                                        "with the database) is dead: the leader closes its calls as lost and "
                                        "frees its seats; longer than a control-process restart")
    front_door_sip: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:\[\]-]{1,128}$",
                                       description="host:port of the cluster front door: seat phones register "
                                       "there, and this node's seat INVITEs go through it (its dialog profile "
                                       "refuses a second call to one seat); default none (the node's own Kamailio)")
    front_door_rpc: str | None = Field(None, description="the cluster front door's JSON-RPC socket (a Unix "
                                       "socket path, or udp:host:port): seat credentials are loaded and "
                                       "registrations read there; needs front_door_sip")

    # Twilio ingress
    twilio_auth_token: str | None = Field(None, description="Twilio auth token: enables /twilio/* (signed webhooks)")
    public_base_url: str | None = Field(None, description="the URL Twilio calls (signatures are checked against it)")

    log_level: str = Field("INFO", description="DEBUG | INFO | WARNING | ERROR")
    log_format: str = Field("auto", description="auto (human on a terminal, else json) | human | json")

    # edge trust (issue 12)
    trunk_sources: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="IPs/CIDRs of carrier trunks: identity headers (P-Asserted-Identity, P-Preferred-Identity, "
                    "Remote-Party-ID, X-Handoff-*) are believed only from these (and from the node's own SIP "
                    "address), and they are exempt from the per-source limits")
    source_requests_per_s: int = Field(20, ge=1, le=100000,
                                       description="SIP requests per second one non-trunk source may send (pike); "
                                                   "above it the source is ignored until it slows down")
    source_max_calls: int = Field(2, ge=1, le=10000, description="calls one non-trunk source may hold at once")
    ack_timeout_s: float = Field(5.0, ge=0.5, le=32,
                                 description="an answered caller who never ACKs the 200 OK is hung up after this")
    invite_timeout_s: int = Field(10, ge=2, le=180,
                                  description="how long the front door waits for a worker's final answer to an INVITE")
    scanner_user_agents: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["friendly-scanner", "sipvicious", "sipcli", "VaxSIPUserAgent", "sipsak",
                                 "sundayddr", "iWar", "SIVuS", "sip-scan", "smap", "PortSIP VoIP SDK", "pplsip"],
        description="User-Agent substrings (case-insensitive) whose requests are dropped without a reply")

    tls_port: int = Field(0, ge=0, le=65535, description="SIP over TLS on this port of sip_host (0 = no TLS listener)")
    tls_cert: Path | None = Field(None, description="PEM certificate (chain) of the TLS listener")
    tls_key: Path | None = Field(None, description="PEM private key of the TLS listener")
    srtp: str = Field("optional", pattern="^(off|optional)$",
                      description="SRTP (SDES) on the worker's legs: optional = used when the peer offers it")

    @model_validator(mode="after")
    def _dispositions_known(self) -> Settings:
        bad = [c for c in self.dispositions if not re.fullmatch(r"[a-z0-9_]{1,48}", c)]
        if bad or not self.dispositions:
            raise ValueError(f"dispositions must be a non-empty list of [a-z0-9_]{{1,48}} codes (bad: {bad})")
        unknown = sorted(set(self.fast_handled_dispositions + self.not_accident_dispositions) - set(self.dispositions))
        if unknown:
            raise ValueError(f"fast_handled/not_accident dispositions not in dispositions: {', '.join(unknown)}")
        try:
            ZoneInfo(self.report_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"report_timezone {self.report_timezone!r} is not a known time zone") from None
        return self

    @model_validator(mode="after")
    def _front_door_pair(self) -> Settings:
        if bool(self.front_door_sip) != bool(self.front_door_rpc):
            raise ValueError("front_door_sip and front_door_rpc go together (the front door's SIP address "
                             "and its JSON-RPC socket)")
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> Settings:
        if self.tls_port and not (self.tls_cert and self.tls_key):
            raise ValueError("tls_port needs tls_cert and tls_key (PEM files)")
        return self

    @field_validator("trunk_sources", "scanner_user_agents", "dispositions", "fast_handled_dispositions",
                     "not_accident_dispositions", mode="before")
    @classmethod
    def _split_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                return json.loads(v)
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("trunk_sources")
    @classmethod
    def _check_sources(cls, v: list[str]) -> list[str]:
        import ipaddress

        out = []
        for src in v:
            try:
                out.append(str(ipaddress.ip_network(src.strip(), strict=False)))
            except ValueError:
                raise ValueError(f"{src!r} is not an IP address or CIDR") from None
        return out

    @field_validator("scanner_user_agents")
    @classmethod
    def _check_agents(cls, v: list[str]) -> list[str]:
        for ua in v:
            if not ua or any(c in ua for c in '"\\\r\n|()[]{}^$*+?.'):
                raise ValueError(f"{ua!r}: a User-Agent substring is plain text (no quotes or regex characters)")
        return v

    @field_validator("service_numbers", mode="before")
    @classmethod
    def _split_numbers(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                return json.loads(v)
            return [p for p in v.replace(",", " ").split() if p]
        return v

    @field_validator("service_numbers")
    @classmethod
    def _check_numbers(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one service number is needed")
        for n in v:
            if not n.replace("+", "").isalnum():
                raise ValueError(f"{n!r} is not a dialable number")
        return v

    @field_validator("log_format")
    @classmethod
    def _format(cls, v: str) -> str:
        v = v.lower()
        if v not in {"auto", "human", "json"}:
            raise ValueError("must be auto, human or json")
        return v

    @field_validator("data_dir", "seats", "flow", "config", "tls_cert", "tls_key")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        # Every path the node hands to a child process must be absolute: Kamailio changes its
        # working directory, so a relative RPC socket or dispatcher list breaks it at start.
        return None if v is None else v.expanduser().resolve()

    @field_validator("sqlite_synchronous")
    @classmethod
    def _synchronous(cls, v: str) -> str:
        v = v.lower()
        if v not in {"normal", "full"}:
            raise ValueError("must be normal or full")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        v = v.upper()
        if v not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v

    @model_validator(mode="after")
    def _derived(self) -> Settings:
        if self.worker_callers * 2 > self.worker_max_calls:
            raise ValueError(
                f"worker_callers={self.worker_callers} needs {self.worker_callers * 2} calls per worker "
                f"(caller + seat leg) but worker_max_calls={self.worker_max_calls}"
            )
        self._check_port_ranges()
        if self.cluster and not self.database_url.startswith("postgresql"):
            raise ValueError("cluster mode needs a PostgreSQL db_url shared by every node "
                             "(postgresql+asyncpg://...); SQLite is one node's database")
        return self

    def port_ranges(self) -> list[tuple[str, int, int]]:
        """Every port range the node will bind, as (what, first, last), derived ports included."""
        ranges = [("sip_port", self.sip_port, self.sip_port)]
        if self.tls_port:
            ranges.append(("tls_port", self.tls_port, self.tls_port))
        if self.api_port:
            ranges.append(("api_port", self.api_port, self.api_port))
        ranges.append(("worker SIP ports (worker_base_port)", self.first_worker_port,
                       self.first_worker_port + self.workers - 1))
        ranges.append(("worker RTP ports (rtp_base_port)", self.first_rtp_port,
                       self.first_rtp_port + self.workers * self.rtp_ports_per_worker - 1))
        return ranges

    def _check_port_ranges(self) -> None:
        # A derived range that runs past 65535 or into another one does not fail at start: it fails
        # later, in one worker's makeCall ("Address already in use"), and looks like a dead seat.
        # So the whole plan is checked when the settings load, and refused in one line.
        ranges = self.port_ranges()
        for what, first, last in ranges:
            if last > 65535:
                hint = " (it defaults to sip_port + 10000: set rtp_base_port)" if "RTP" in what else (
                    " (it defaults to sip_port + 100: set worker_base_port)" if "worker SIP" in what else "")
                raise ValueError(f"{what} {first}-{last} run past 65535{hint}")
        for i, (a, a1, a2) in enumerate(ranges):
            for b, b1, b2 in ranges[i + 1:]:
                if a1 <= b2 and b1 <= a2:
                    raise ValueError(f"{a} {a1}-{a2} overlap {b} {b1}-{b2}")

    # -- derived values -------------------------------------------------------------------------
    @property
    def first_worker_port(self) -> int:
        return self.worker_base_port or self.sip_port + 100

    @property
    def first_rtp_port(self) -> int:
        return self.rtp_base_port or self.sip_port + 10000

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'handoff122.sqlite3').resolve()}"

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    @property
    def flow_file(self) -> Path:
        return self.flow or (REPO_IVR_DIR / "flows" / "default.yaml")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"config file {path}: {e.strerror}") from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path}: not valid YAML/JSON ({e.__class__.__name__})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: must be a mapping of setting: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def load_settings(cli: dict[str, Any] | None = None) -> Settings:
    """Merge file, environment and flags (flags win) into a validated Settings, or raise ConfigError."""
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    config_path = cli.get("config") or os.environ.get("HANDOFF_CONFIG")
    file_values: dict[str, Any] = _read_file(Path(config_path)) if config_path else {}
    env_names = {k[len("HANDOFF_"):].lower() for k in os.environ if k.startswith("HANDOFF_")}
    # The environment beats the file: drop file keys that the environment sets.
    merged = {k: v for k, v in file_values.items() if k not in env_names}
    merged.update(cli)
    try:
        return Settings(**merged)
    except SettingsError as e:
        raise ConfigError(f"invalid environment setting: {str(e).splitlines()[0]}") from e
    except ValidationError as e:
        err = e.errors()[0]
        message = str(err.get("msg", "")).removeprefix("Value error, ")
        where = ".".join(str(p) for p in err.get("loc", ()))
        raise ConfigError(f"invalid setting {where}: {message}" if where else f"invalid settings: {message}") from e
