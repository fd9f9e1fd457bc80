"""Logs for machines and for people: JSON lines, or one short human line per event.

Every package logs through the standard ``logging`` module with ``extra={...}`` fields.  Off a
terminal (or with ``--log-format json``) each record is one JSON object per line, for grep and log
shippers.  On a terminal each record is one human line: time, process, the call id first when
there is one, what happened, then the fields.  Workers inherit the choice through
``HANDOFF_LOG_FORMAT`` so that a node's lines all read alike.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import TextIO

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}

#: Library loggers whose INFO lines are set-up chatter, not events of the centre.
_CHATTY = ("uvicorn.access", "aiosqlite", "asyncio", "httpx", "httpcore", "alembic")


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}


class JsonLineFormatter(logging.Formatter):
    def __init__(self, process_name: str = "control") -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": round(record.created, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "proc": self.process_name,
            "logger": record.name,
            "event": record.getMessage(),
        }
        out.update(_fields(record))
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out, ensure_ascii=False, default=str)


def _short(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HumanLineFormatter(logging.Formatter):
    """``12:03:41 control  call 5f1c…  offer  seat_id=s101 attempt=1``: one event, one line."""

    def __init__(self, process_name: str = "control") -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        call_id = fields.pop("call_id", None)
        parts = [time.strftime("%H:%M:%S", time.localtime(record.created)), f"{self.process_name:<9}"]
        if record.levelno >= logging.WARNING:
            parts.append(record.levelname)
        if call_id:
            parts.append(f"call {call_id}")
        parts.append(record.getMessage())
        parts.extend(f"{k}={_short(v)}" for k, v in fields.items() if v is not None and v != "")
        if record.exc_info:
            parts.append("error=" + _short(self.formatException(record.exc_info).splitlines()[-1], 200))
        return "  ".join(parts)


def resolve_format(setting: str, stream: TextIO | None = None) -> str:
    """``auto`` is human on a terminal and JSON anywhere else (files, pipes, journald)."""
    if setting != "auto":
        return setting
    stream = stream or sys.stderr
    return "human" if hasattr(stream, "isatty") and stream.isatty() else "json"


def configure_logging(level: str = "INFO", process_name: str = "control", stream: TextIO | None = None,
                      fmt: str | None = None) -> logging.Handler:
    """One handler on the root logger; returns it so a caller may hold lines back during start."""
    fmt = resolve_format(fmt or os.environ.get("HANDOFF_LOG_FORMAT", "json"), stream)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(HumanLineFormatter(process_name) if fmt == "human" else JsonLineFormatter(process_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in _CHATTY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    return handler
