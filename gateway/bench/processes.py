"""CPU and memory of every process of a node, by kind: front door (Kamailio), media workers,
control, API.

A node is one process tree: the control process (``handoff122 serve``), its Kamailio (which forks
its own children), its pjsua2 workers and its API process.  A thread walks the tree once a second,
so workers that restart are counted too, and adds up per kind the CPU time used (as a share of one
core) and the resident memory.  Three measures of memory, because they answer different questions:

- **RSS** (``VmRSS``): every page a process has resident, shared or not.  Summed over processes it
  counts a shared page once per process that maps it: the CPython and pjsua2 libraries every
  worker maps, Kamailio's shared memory in each of its children.  The issue's "memory per held
  caller" is defined on it, so the goal is judged on it.
- **PSS** (``smaps_rollup``): each shared page divided among the processes that map it.  Summed
  over a node it is close to what the node really takes from the machine.
- **USS** (private clean + private dirty): what ending that one process would give back.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
KINDS = ("front_door", "workers", "control", "api")


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def node_processes(root: int) -> dict[int, str]:
    """pid -> kind for the node whose top process is ``root`` (the supervisor of ``serve``, counted
    with the control process as "control": both are the node's fixed cost, not a call's)."""
    kids = _children()
    out = {root: "control"}
    todo = list(kids.get(root, []))
    while todo:
        pid = todo.pop()
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "kamailio" in cmd:
            out[pid] = "front_door"
        elif "gateway.worker" in cmd:
            out[pid] = "workers"
        elif "gateway.api_process" in cmd:
            out[pid] = "api"
        else:
            out[pid] = "control"  # the control process under the supervisor
        todo.extend(kids.get(pid, []))
    return out


def processes_under(path: Path) -> list[tuple[int, str]]:
    """Every live process whose command line names ``path`` (what a cluster started there), so a
    test or a benchmark can check that it left none behind, or end what it left."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((ln for ln in (d / "status").read_text().splitlines() if ln.startswith("State:")), "")
        except OSError:
            continue
        if str(path) in cmd and "zombie" not in state:
            out.append((int(d.name), cmd[:200]))
    return out


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def rollup(pid: int) -> tuple[int, int]:
    """(PSS, USS) of a process in bytes, from ``/proc/<pid>/smaps_rollup``; (0, 0) once it is gone."""
    pss = uss = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1]) * 1024
            elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                uss += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0, 0
    return pss, uss


def pss_bytes(pid: int) -> int:
    return rollup(pid)[0]


def memory_now(root: int, with_pss: bool = True) -> dict[str, Any]:
    """RSS (and PSS, USS) summed per kind and in all, in MB, right now."""
    procs = node_processes(root)
    out: dict[str, Any] = {}
    total_rss = total_pss = total_uss = 0
    for kind in KINDS:
        pids = [p for p, k in procs.items() if k == kind]
        rss = sum(rss_bytes(p) for p in pids)
        pss = uss = 0
        if with_pss:
            for p in pids:
                one_pss, one_uss = rollup(p)
                pss += one_pss
                uss += one_uss
        total_rss += rss
        total_pss += pss
        total_uss += uss
        n = max(1, len(pids))
        out[kind] = {"processes": len(pids), "rss_mb": round(rss / 2**20, 1),
                     "rss_mb_per_process": round(rss / n / 2**20, 1)}
        if with_pss:
            out[kind].update(pss_mb=round(pss / 2**20, 1), uss_mb=round(uss / 2**20, 1),
                             pss_mb_per_process=round(pss / n / 2**20, 1), uss_mb_per_process=round(uss / n / 2**20, 1))
    out["rss_mb_total"] = round(total_rss / 2**20, 1)
    if with_pss:
        out["pss_mb_total"] = round(total_pss / 2**20, 1)
        out["uss_mb_total"] = round(total_uss / 2**20, 1)
    return out


def per_held_caller(peak_rss_mb: float, while_held: dict[str, Any], callers: int) -> dict[str, Any]:
    """Memory per held caller, both ways: RSS summed over every process of the node (peak; the
    issue's definition, the goal's measure) and PSS summed the same way (mid-hold)."""
    n = max(1, callers)
    return {"memory_per_held_caller_mb": round(peak_rss_mb / n, 2),
            "pss_per_held_caller_mb": round(while_held.get("pss_mb_total", 0) / n, 2)}


class NodeSampler:
    """Samples a node's process tree every ``interval`` seconds on a thread, until ``stop``.

    ``processes`` and ``kinds`` sample another set of processes the same way (``bench cluster``:
    every process of a cluster, its load generators and its PostgreSQL backends, by role)."""

    def __init__(self, root: int, interval: float = 1.0, processes: Callable[[], dict[int, str]] | None = None,
                 kinds: tuple[str, ...] = KINDS) -> None:
        self.root = root
        self.interval = interval
        self.kinds = kinds
        self.processes = processes or (lambda: node_processes(root))
        self.t0 = time.monotonic()
        self.last_cpu: dict[int, float] = {}
        self.cpu_used = dict.fromkeys(kinds, 0.0)
        self.rss_peak = dict.fromkeys(kinds, 0)
        self.procs_peak = dict.fromkeys(kinds, 0)
        #: (seconds since start, total RSS bytes of the node) once per sample
        self.rss_series: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="node-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        procs = self.processes()
        rss = dict.fromkeys(self.kinds, 0)
        count = dict.fromkeys(self.kinds, 0)
        for pid, kind in procs.items():
            cpu = cpu_seconds(pid)
            if cpu is None or kind not in rss:
                continue
            if pid in self.last_cpu:
                self.cpu_used[kind] += max(0.0, cpu - self.last_cpu[pid])
            self.last_cpu[pid] = cpu
            rss[kind] += rss_bytes(pid)
            count[kind] += 1
        for kind in self.kinds:
            self.rss_peak[kind] = max(self.rss_peak[kind], rss[kind])
            self.procs_peak[kind] = max(self.procs_peak[kind], count[kind])
        self.rss_series.append((time.monotonic() - self.t0, sum(rss.values())))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        dt = max(1e-6, time.monotonic() - self.t0)
        out: dict[str, Any] = {}
        for kind in self.kinds:
            n = max(1, self.procs_peak[kind])
            out[kind] = {"processes": self.procs_peak[kind],
                         "cpu_core_share": round(self.cpu_used[kind] / dt, 3),
                         "cpu_core_share_per_process": round(self.cpu_used[kind] / dt / n, 4),
                         "rss_mb_peak": round(self.rss_peak[kind] / 2**20, 1),
                         "rss_mb_per_process": round(self.rss_peak[kind] / n / 2**20, 1)}
        out["cpu_core_share_total"] = round(sum(self.cpu_used.values()) / dt, 3)
        out["rss_mb_peak_total"] = round(max((r for _, r in self.rss_series), default=0) / 2**20, 1)
        out["seconds"] = round(dt, 1)
        return out
