"""Proving the recordings are what was closed: recompute every seal and compare.

Hashing reads every byte, so it runs in a worker thread one file at a time (the event loop, and
with it the calls, keep running) and logs progress so an operator watching a long verify of a
year of recordings sees it move.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

from recordings.catalog import Catalog, RecordingRow, RecordingStatus
from recordings.finalize import sha256_file

log = logging.getLogger(__name__)

PAGE = 500


class ProblemKind(StrEnum):
    MISSING = "missing"              # the file is gone but the catalog says closed
    SIZE_CHANGED = "size_changed"    # bytes were added or cut
    SHA256_MISMATCH = "sha256_mismatch"  # same size, different content
    UNREADABLE = "unreadable"        # exists but cannot be read (permissions, I/O error)
    FILE_WITHOUT_ROW = "file_without_row"  # a recording on disk the catalog does not know (or says purged)
    UNSEALED = "unsealed"            # the catalog says recording/failed but the file sits at its final name


@dataclass(frozen=True, slots=True)
class Problem:
    recording_id: str
    kind: ProblemKind
    path: str
    expected: str = ""
    actual: str = ""

    def line(self) -> str:
        detail = f" expected={self.expected} actual={self.actual}" if self.expected or self.actual else ""
        return f"{self.kind.value} {self.recording_id} {self.path}{detail}"


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def of_kind(self, kind: ProblemKind) -> list[Problem]:
        return [p for p in self.problems if p.kind is kind]

    @property
    def mismatches(self) -> list[Problem]:
        return self.of_kind(ProblemKind.SHA256_MISMATCH)

    @property
    def missing(self) -> list[Problem]:
        return self.of_kind(ProblemKind.MISSING)

    @property
    def size_changed(self) -> list[Problem]:
        return self.of_kind(ProblemKind.SIZE_CHANGED)

    @property
    def files_without_rows(self) -> list[Problem]:
        return self.of_kind(ProblemKind.FILE_WITHOUT_ROW)

    @property
    def unsealed(self) -> list[Problem]:
        return self.of_kind(ProblemKind.UNSEALED)


def _files_on_disk(root: Path) -> dict[str, str]:
    """Every ``*.wav`` under the recordings root (partial ones too): id -> path relative to root."""
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(".wav"):
                full = Path(dirpath) / name
                out[full.stem] = PurePosixPath(*full.relative_to(root).parts).as_posix()
    return out


async def _compare_disk_and_catalog(catalog: Catalog, report: VerifyReport) -> None:
    """Files without rows (or whose row says purged), and rows whose seal never finished."""
    on_disk = await asyncio.to_thread(_files_on_disk, catalog.layout.root)
    after: str | None = None
    known: dict[str, RecordingRow] = {}
    while True:
        page = await catalog.list(after_id=after, limit=PAGE)
        if not page:
            break
        known.update((r.id, r) for r in page)
        after = page[-1].id
    for rid, rel in sorted(on_disk.items()):
        row = known.get(rid)
        if row is None or row.status is RecordingStatus.PURGED:
            report.problems.append(Problem(rid, ProblemKind.FILE_WITHOUT_ROW, rel,
                                           actual="purged" if row is not None else ""))
        elif row.status in (RecordingStatus.RECORDING, RecordingStatus.FAILED) and not rel.startswith(".partial/"):
            report.problems.append(Problem(rid, ProblemKind.UNSEALED, rel, expected=row.status.value))


async def verify(catalog: Catalog, progress_every: int = 100) -> VerifyReport:
    """Recompute the SHA-256 of every closed recording and report each one that differs; then
    report the files on disk the catalog does not know (or says it purged) and the recordings
    left unsealed at their final name (the rows without files are the ``missing`` ones)."""
    report = VerifyReport()
    await _compare_disk_and_catalog(catalog, report)
    after: str | None = None
    while True:
        page = await catalog.list(status=RecordingStatus.CLOSED, after_id=after, limit=PAGE)
        if not page:
            break
        for row in page:
            path = catalog.file_of(row)
            try:
                digest, size = await asyncio.to_thread(sha256_file, path)
            except FileNotFoundError:
                report.problems.append(Problem(row.id, ProblemKind.MISSING, row.path))
            except OSError as e:
                report.problems.append(Problem(row.id, ProblemKind.UNREADABLE, row.path, actual=e.strerror or str(e)))
            else:
                if size != row.size:
                    report.problems.append(
                        Problem(row.id, ProblemKind.SIZE_CHANGED, row.path, str(row.size), str(size))
                    )
                elif digest != row.sha256:
                    report.problems.append(
                        Problem(row.id, ProblemKind.SHA256_MISMATCH, row.path, row.sha256 or "", digest)
                    )
            report.checked += 1
            if report.checked % progress_every == 0:
                log.info("recordings verify progress",
                         extra={"checked": report.checked, "problems": len(report.problems)})
        after = page[-1].id
    for p in report.problems:
        log.warning("recording integrity problem",
                    extra={"recording_id": p.recording_id, "kind": p.kind.value, "path": p.path})
    log.info("recordings verified", extra={"checked": report.checked, "problems": len(report.problems)})
    return report
