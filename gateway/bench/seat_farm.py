"""Hundreds of seats on a few SIPp UAS processes, and the seats file that points the node at them.

Every seat of the seats file has its own user part (``f0001``...) and a contact on one of the UAS
ports, round robin; every seat has every skill, so the ACD may hand any call to any free seat.  A
share of the seats (the probe seats) answer with an SDP that sends the node's audio to the bench's
RTP probe instead of to SIPp, so what those seats hear can be measured.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from gateway.bench.runner import free_port, sipp_media_port
from routing.skills import SKILLS

SCENARIOS = Path(__file__).resolve().parents[2] / "tests" / "sipp"
ANSWER = re.compile(r"ANSWER (\S*) (\S*) ([\d.]+) ([\d.]+)")


@dataclass
class Answer:
    call_id: str
    node_rtp_port: int
    at: float
    probe: bool


@dataclass
class SeatFarm:
    seats: int
    uas_processes: int = 3
    probe_share: float = 0.1
    probe_port: int | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)
    probe_ports: list[int] = field(default_factory=list)

    def start(self, workdir: Path) -> Path:
        """Start the UAS processes; returns the seats file."""
        self.workdir = workdir
        template = (SCENARIOS / "uas_seat_bench.xml").read_text()
        plain = workdir / "seat.xml"
        plain.write_text(template.replace("@MEDIA_PORT@", "[media_port]"))
        kinds = [("plain", plain)] * self.uas_processes
        if self.probe_port:
            probe = workdir / "seat_probe.xml"
            probe.write_text(template.replace("@MEDIA_PORT@", str(self.probe_port)))
            kinds.append(("probe", probe))
        for kind, scenario in kinds:
            port = free_port()
            d = workdir / f"uas-{port}"
            d.mkdir()
            self.procs.append(subprocess.Popen(
                ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-cp", str(free_port()),
                 "-mi", "127.0.0.1", "-mp", str(sipp_media_port()), "-nostdin", "-trace_logs", "-max_socket", "4096"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=d))
            (self.probe_ports if kind == "probe" else self.ports).append(port)
        return self._seats_file(workdir / "seats.yaml")

    def _seats_file(self, path: Path) -> Path:
        n_probe = round(self.seats * self.probe_share) if self.probe_ports else 0
        lines = ["seats:"]
        for i in range(self.seats):
            # probe seats spread evenly through the list, so the ACD's order does not favour them
            probe = n_probe and i % max(1, self.seats // n_probe) == 0
            port = self.probe_ports[0] if probe else self.ports[i % len(self.ports)]
            lines += [f"  - id: f{i:04d}", f"    contact: sip:f{i:04d}@127.0.0.1:{port}",
                      f"    skills: [{', '.join(SKILLS)}]", "    status: available"]
        path.write_text("\n".join(lines) + "\n")
        return path

    def answers(self) -> dict[str, Answer]:
        """Every answer logged so far, by the node's call id (the last one wins after a re-offer)."""
        out: dict[str, Answer] = {}
        for d in self.workdir.glob("uas-*"):
            probe = int(d.name.split("-")[1]) in self.probe_ports
            for log in d.glob("*_logs.log"):
                for m in ANSWER.finditer(log.read_text(errors="replace")):
                    cid, port, s, us = m.groups()
                    if cid:
                        out[cid] = Answer(cid, int(port) if port.isdigit() else 0, float(s) + float(us) / 1e6, probe)
        return out

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
