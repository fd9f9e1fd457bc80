"""Where a recording lives on disk, while the call lasts and after.

While the call lasts the media worker writes ``<root>/.partial/<id>.wav``; when it ends the file
moves to ``<root>/YYYY/MM/DD/<id>.wav`` (UTC date of the answer).  Both live under one root so the
move is a rename on one filesystem (atomic), and dated directories keep any one directory small
enough to list after years of calls.  Recording ids are checked against a strict pattern because
they reach file names from the API (``GET /api/v1/recordings/{id}``): no id can climb out of root.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

RECORDING_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")
PARTIAL_DIR = ".partial"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def valid_recording_id(recording_id: str) -> bool:
    return bool(RECORDING_ID.match(recording_id))


def new_recording_id(call_id: str) -> str:
    """A file-name-safe, unique id that still shows which call it belongs to.

    SIP Call-IDs carry ``@`` and dots and can be long, so the call id is reduced to a safe slug
    and a random suffix makes two recordings of one call (a retried finalisation, a restarted
    worker) never collide.
    """
    slug = _UNSAFE.sub("_", call_id).strip("_-")[:60] or "call"
    return f"{slug}-{secrets.token_hex(6)}"


class RecordingLayout:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    new_recording_id = staticmethod(new_recording_id)

    @property
    def partial_dir(self) -> Path:
        return self.root / PARTIAL_DIR

    def prepare(self) -> None:
        """Create the partial directory (blocking; once at start-up, before any worker records)."""
        self.partial_dir.mkdir(parents=True, exist_ok=True)

    def partial_path(self, recording_id: str) -> Path:
        return self.partial_dir / f"{_checked(recording_id)}.wav"

    def final_path(self, recording_id: str, started_at: float) -> Path:
        day = datetime.fromtimestamp(started_at, tz=UTC)
        return self.root / f"{day:%Y}" / f"{day:%m}" / f"{day:%d}" / f"{_checked(recording_id)}.wav"

    def relative(self, path: Path) -> str:
        """The path as stored in the catalog: POSIX, relative to root (the root may move)."""
        try:
            rel = Path(path).resolve().relative_to(self.root.resolve())
        except ValueError:
            raise ValueError(f"{path} is not under the recordings root {self.root}") from None
        return PurePosixPath(*rel.parts).as_posix()

    def absolute(self, relative: str) -> Path:
        rel = PurePosixPath(relative)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"catalog path {relative!r} escapes the recordings root")
        return self.root.joinpath(*rel.parts)


def _checked(recording_id: str) -> str:
    if not valid_recording_id(recording_id):
        raise ValueError(f"invalid recording id {recording_id!r}")
    return recording_id
