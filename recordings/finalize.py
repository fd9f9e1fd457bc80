"""Closing a call's recording: repair, make durable, move into place, fingerprint.

The SHA-256 taken here is the recording's evidence seal: it goes into the catalog at once, and
``handoff122 recordings verify`` later proves the file is byte for byte what was closed.  So the
order matters: the header is repaired *before* hashing (the seal covers the playable file), the
bytes are fsynced before the rename (a crash never leaves a final name on unwritten data), and the
directory is fsynced after it (the rename itself survives a power cut).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from recordings.wav import WavInvalid, read_header

log = logging.getLogger(__name__)

HASH_BLOCK = 1 << 20


class RecordingError(Exception):
    """A recording could not be finalised; the message names the file and the reason.

    The call itself is never affected: the control process logs this and flags the call record.
    """


@dataclass(frozen=True, slots=True)
class RecordingInfo:
    size: int
    duration_s: float
    sha256: str
    sample_rate: int
    channels: int
    repaired: bool = False


def finalize(partial: Path, final: Path) -> RecordingInfo:
    """Repair the WAV header if needed, fsync, rename ``partial`` to ``final``, and hash it.

    Blocking (fsync and a full read of the file): the asyncio control process must run it in a
    thread, e.g. ``await asyncio.to_thread(finalize, partial, final)``.

    A worker killed mid-call leaves the header's RIFF and data lengths wrong (pjmedia fixes them
    only on close); they are rebuilt from the file size, dropping a trailing half sample frame.
    ``final`` is never overwritten.  Every failure raises ``RecordingError``, leaving the partial
    file where it was so nothing recorded is lost.  ``prepare`` and ``place`` are its two halves,
    for a caller that writes the seal between them (``recordings.closing``).
    """
    partial, final = Path(partial), Path(final)
    if final.exists():
        raise RecordingError(f"cannot finalise {partial}: {final} already exists (recordings are never overwritten)")
    info = prepare(partial)
    place(partial, final)
    log.info("recording finalised", extra={"path": str(final), "size": info.size, "sha256": info.sha256,
                                           "duration_s": round(info.duration_s, 3), "repaired": info.repaired})
    return info


def prepare(partial: Path) -> RecordingInfo:
    """Repair the header, fsync and hash the partial file in place (blocking); the seal to write."""
    partial = Path(partial)
    if not partial.is_file():
        raise RecordingError(f"recording {partial} is missing: the media worker never wrote it or it was moved")
    try:
        with open(partial, "r+b") as f:
            try:
                header = read_header(f)
            except WavInvalid as e:
                raise RecordingError(f"recording {partial} is not a repairable WAV file: {e}") from e
            repaired = not header.consistent
            if repaired:
                data_size = header.whole_frame_data
                new_size = header.data_offset + data_size if header.data_end == header.file_size else header.file_size
                if new_size < header.file_size:
                    f.truncate(new_size)
                f.seek(header.riff_size_offset)
                f.write(struct.pack("<I", new_size - 8))
                f.seek(header.data_size_offset)
                f.write(struct.pack("<I", data_size))
                f.flush()
                log.warning(
                    "recording header repaired",
                    extra={"partial": str(partial), "declared_data": header.declared_data_size,
                           "data": data_size, "file_size": header.file_size, "new_size": new_size},
                )
                header = read_header(f)
            f.flush()
            os.fsync(f.fileno())
        sha256, size = sha256_file(partial)
    except RecordingError:
        raise
    except OSError as e:
        raise RecordingError(f"cannot finalise recording {partial}: {_reason(e)}") from e
    return RecordingInfo(size=size, duration_s=header.duration_s, sha256=sha256,
                         sample_rate=header.sample_rate, channels=header.channels, repaired=repaired)


def place(partial: Path, final: Path) -> None:
    """Move the prepared file to its final name, durably (blocking); never overwrites ``final``."""
    partial, final = Path(partial), Path(final)
    if final.exists():
        raise RecordingError(f"cannot finalise {partial}: {final} already exists (recordings are never overwritten)")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
        _fsync_dir(final.parent)
        if partial.parent != final.parent:
            _fsync_dir(partial.parent)
    except OSError as e:
        raise RecordingError(f"cannot finalise recording {partial} -> {final}: {_reason(e)}") from e


def _reason(e: OSError) -> str:
    return "disk full" if e.errno in (errno.ENOSPC, errno.EDQUOT) else (e.strerror or str(e))


def sha256_file(path: Path) -> tuple[str, int]:
    """The hex SHA-256 and byte count of a file, read in 1 MiB blocks (blocking)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
