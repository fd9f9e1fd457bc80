"""Caller-supplied text made safe for a column before it reaches one.

A caller id comes from a SIP header or a Twilio form field: anyone can put 300 characters, a NUL,
a lone surrogate or a right-to-left override in it.  PostgreSQL refuses the first three (a
``VARCHAR(200)`` overflow, ``invalid byte sequence``), and one refused row fails the whole batch
of events it rides in.  So every text value is normalised (Unicode NFC, control and format
characters removed, surrounding space stripped) and cut to its column's length, and every string
inside a JSON column is cleaned the same way (bounded at ``JSON_TEXT_LIMIT``).  SQLite would take
anything; the same rules apply there so both backends store the same thing.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from sqlalchemy import JSON, String, Table

#: Longest text kept inside a JSON value (IVR records, event data): enough for any honest value.
JSON_TEXT_LIMIT = 2000
#: Unicode categories never kept: controls (NUL ...), format (bidi overrides, zero-width), surrogates.
_DROPPED = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def clean_text(value: str, limit: int | None = None) -> str:
    """NFC, without control/format/surrogate characters, stripped, at most ``limit`` characters."""
    if not value.isprintable() or not value.isascii():
        value = unicodedata.normalize("NFC", value.encode("utf-8", "replace").decode("utf-8"))
        value = "".join(ch for ch in value if unicodedata.category(ch) not in _DROPPED)
    value = value.strip()
    return value[:limit] if limit is not None else value


def clean_json(value: Any, limit: int = JSON_TEXT_LIMIT) -> Any:
    """The same value with every string (keys too) cleaned; other types are left as they are."""
    if isinstance(value, str):
        return clean_text(value, limit)
    if isinstance(value, dict):
        return {clean_text(k, limit) if isinstance(k, str) else k: clean_json(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v, limit) for v in value]
    return value


def _limits(table: Table) -> dict[str, int | None]:
    cached = table.info.get("_text_limits")
    if cached is None:
        cached = {}
        for col in table.columns:
            if isinstance(col.type, JSON):
                cached[col.name] = -1
            elif isinstance(col.type, String):
                cached[col.name] = col.type.length
        table.info["_text_limits"] = cached
    return cached


def bounded(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its text columns cleaned and cut to their lengths, JSON columns cleaned."""
    limits = _limits(table)
    out = dict(row)
    for name, value in row.items():
        limit = limits.get(name, 0)
        if limit == 0 or value is None:
            continue
        if limit == -1:
            out[name] = clean_json(value)
        elif isinstance(value, str):
            out[name] = clean_text(value, limit)
    return out


def bounded_rows(table: Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [bounded(table, r) for r in rows]


__all__ = ["JSON_TEXT_LIMIT", "bounded", "bounded_rows", "clean_json", "clean_text"]
