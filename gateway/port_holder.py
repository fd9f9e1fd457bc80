"""Who holds a local port: so "port in use" can name the process (often a node's leftover child).

Linux only, read from /proc: the socket's inode from /proc/net/{udp,tcp}[6], then the process
whose file descriptors include that socket.  Processes of other users cannot be looked into; then
only their uid is known.
"""

from __future__ import annotations

import os
from pathlib import Path

TCP_LISTEN = "0A"


def _inodes(port: int, proto: str) -> dict[int, int]:
    """inode -> uid of the sockets bound to ``port`` (TCP: listening only)."""
    found: dict[int, int] = {}
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or int(f[1].rsplit(":", 1)[1], 16) != port:
                continue
            if proto == "tcp" and f[3] != TCP_LISTEN:
                continue
            found[int(f[9])] = int(f[7])
    return found


def _owner(inodes: set[int]) -> tuple[int, str] | None:
    targets = {f"socket:[{i}]" for i in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    name = (entry / "comm").read_text().strip()
                    return int(entry.name), name
        except OSError:
            continue
    return None


def who_holds(port: int, udp: bool) -> str | None:
    """``"pid 1234 (kamailio)"``, ``"a process of uid 0"``, or None when nothing is seen."""
    inodes = _inodes(port, "udp" if udp else "tcp")
    if not inodes:
        return None
    owner = _owner(set(inodes))
    if owner is not None:
        return f"pid {owner[0]} ({owner[1]})"
    return f"a process of uid {next(iter(inodes.values()))}"
