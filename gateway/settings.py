"""One typed settings object for a node.

Sources, strongest first: command-line flags, ``HANDOFF_<NAME>`` environment variables, the
optional YAML/JSON file given by ``--config`` / ``HANDOFF_CONFIG``, then defaults that run on one
laptop.  Every bad value is reported as one line naming the setting, so an operator can fix a
deployment without reading a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

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

    config: Path | None = None

    # SIP edge
    sip_host: str = "127.0.0.1"
    sip_port: int = Field(5060, ge=1, le=65535)
    service_numbers: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["122"])
    workers: int = Field(default_factory=_default_workers, ge=1, le=256)
    worker_callers: int = Field(2, ge=1, le=256, description="callers per worker (each needs a seat leg too)")
    worker_max_calls: int = Field(4, ge=2, le=1024, description="PJSUA_MAX_CALLS of the pjsua2 build")
    worker_base_port: int = Field(0, ge=0, le=65535, description="first worker SIP port; 0 = sip_port + 100")
    rtp_base_port: int = Field(0, ge=0, le=65535, description="first RTP port; 0 = sip_port + 10000")
    rtp_ports_per_worker: int = Field(40, ge=8, le=2000)
    kamailio: str = Field("auto", description="auto | off | path to the kamailio binary")
    kamailio_shm_mb: int = Field(128, ge=16, le=4096)
    retry_after_s: int = Field(5, ge=1, le=3600)
    answer_delay_s: float = Field(0.3, ge=0, le=10, description="ring before answering (a caller may still CANCEL)")

    # control, storage, events
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path("./var")
    db_url: str | None = None
    mqtt_url: str | None = None
    seats: Path | None = None
    flow: Path | None = None

    # call handling
    ring_timeout: float = Field(20.0, gt=0, le=600)
    rona_not_ready_after: int = Field(1, ge=1, le=100, description="RONAs before a seat goes not_ready")
    hold_announce_interval: float = Field(15.0, ge=2, le=600)
    service_level_s: float = Field(20.0, gt=0, le=3600)
    wrap_up_s: float = Field(15.0, ge=0, le=3600)
    callback_after_s: float = Field(30.0, ge=0, le=86400)
    recordings_retention_days: int = Field(180, ge=1, le=36500)
    caller_id_header: str = Field("from+pai", description="how the caller's number reaches a seat: from | pai | from+pai")

    # durability (issue 13)
    sqlite_synchronous: str = Field("full", description="SQLite fsync policy: full (every commit survives a "
                                    "power cut) | normal (a power cut may lose the last commits); docs/DURABILITY.md")
    twilio_reclaim_s: float = Field(15.0, gt=0, le=600, description="after a restart, a Twilio caller in the IVR "
                                    "or queue not heard from within this is closed as lost (with a callback)")

    # Twilio ingress
    twilio_auth_token: str | None = None
    public_base_url: str | None = None

    log_level: str = "INFO"

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
        return self

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
        where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        raise ConfigError(f"invalid setting {where}: {err.get('msg')}") from e
