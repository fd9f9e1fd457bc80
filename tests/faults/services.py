"""A PostgreSQL and a Mosquitto of the test's own, to stop and start at will.

The machine's shared PostgreSQL and Mosquitto serve other test runs: a fault test never touches
them.  It starts its own instance on a free loopback port instead (``initdb`` into a temporary
directory, run as the ``postgres`` user since PostgreSQL refuses root), kills or stops it, and
starts it again on the same data.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


class OwnPostgres:
    """``listen``: the addresses it accepts on (``0.0.0.0`` inside a test's own network namespace,
    where each node reaches it through its own loopback alias, tests/faults/partitions.py)."""

    def __init__(self, listen: str = "127.0.0.1") -> None:
        self.listen = listen
        self.dir = Path(tempfile.mkdtemp(prefix="h122-pg-"))
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.port = free_port(also_tcp=True)
        self.sock.mkdir()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.dir, "postgres")
            shutil.chown(self.sock, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *cmd: str) -> None:
        full = ["runuser", "-u", "postgres", "--", *cmd] if self._as_postgres else list(cmd)
        subprocess.run(full, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.sock} -c listen_addresses={self.listen} -c fsync=off", "start")

    def stop(self, mode: str = "immediate") -> None:
        """``immediate`` is a crash (no checkpoint, connections cut)."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class OwnMosquitto:
    """``listen``: an address to accept on besides loopback's default (``0.0.0.0`` in a test's
    own network namespace); Mosquitto 2 takes that only from a config file."""

    def __init__(self, listen: str | None = None) -> None:
        self.port = free_port(also_tcp=True)
        self.listen = listen
        self.proc: subprocess.Popen[bytes] | None = None
        self._conf: Path | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = ["mosquitto", "-p", str(self.port)]
        if self.listen is not None:
            if self._conf is None:
                fd, name = tempfile.mkstemp(prefix="h122-mqtt-", suffix=".conf")
                os.close(fd)
                self._conf = Path(name)
                self._conf.write_text(f"listener {self.port} {self.listen}\nallow_anonymous true\n")
            cmd = ["mosquitto", "-c", str(self._conf)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import socket

        end = time.monotonic() + 10
        while time.monotonic() < end:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def close(self) -> None:
        self.kill()
        if self._conf is not None:
            self._conf.unlink(missing_ok=True)
