"""Where a node's Unix sockets live: in its run directory, unless that path is too long.

A Unix socket's path must fit ``sun_path`` (108 bytes with its NUL on Linux).  A data directory
deep in a home or a test's temporary tree (``/home/.../var/run/kamailio/kamailio-rpc.sock``) passes
that, and Kamailio then refuses to start ("socket path is too long").  Such a socket moves to a
short private directory named after the run directory, so two nodes never share one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

#: ``sun_path`` is 108 bytes on Linux, including the terminating NUL; Kamailio's jsonrpcs refused a
#: 107-byte path, so keep a margin below the kernel's limit.
MAX_SOCKET_PATH = 96


def unix_socket_path(run_dir: Path, name: str) -> Path:
    """``run_dir/name`` when it fits, else ``<tmp>/h122-<uid>-<hash of run_dir>/name`` (mode 0700)."""
    path = run_dir.resolve() / name
    if len(os.fsencode(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(run_dir.resolve())).hexdigest()[:12]
    short_dir = Path(tempfile.gettempdir()) / f"h122-{os.getuid()}-{digest}"
    short_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(short_dir, 0o700)
    return short_dir / name
