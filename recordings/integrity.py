"""Proving the recordings are what was closed: recompute every seal and compare.

Hashing reads every byte, so it runs in a worker thread one file at a time (the event loop, and
with it the calls, keep running) and logs progress so an operator watching a long verify of a
year of recordings sees it move.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from enum import StrEnum

from recordings.catalog import Catalog, RecordingStatus
from recordings.finalize import sha256_file

log = logging.getLogger(__name__)

PAGE = 500


class ProblemKind(StrEnum):
    MISSING = "missing"              # the file is gone but the catalog says closed
    SIZE_CHANGED = "size_changed"    # bytes were added or cut
    SHA256_MISMATCH = "sha256_mismatch"  # same size, different content
    UNREADABLE = "unreadable"        # exists but cannot be read (permissions, I/O error)


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


async def verify(catalog: Catalog, progress_every: int = 100) -> VerifyReport:
    """Recompute the SHA-256 of every closed recording and report each one that differs."""
    report = VerifyReport()
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
