"""Run SIPp scenarios from tests/sipp/ against a node (templates: @SERVICE@, @DIGITS@, ...)."""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port, sipp_media_port

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
DTMF_PCAPS = Path("/usr/share/sip-tester")


@dataclass
class SippResult:
    returncode: int
    stdout: str
    stderr: str
    successful: int
    failed: int
    log: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0


def digits_xml(digits: str, gap_ms: int) -> str:
    """RFC 4733 key presses as SIPp RTP pcap plays (SIPp ships one pcap per digit)."""
    parts = []
    for d in digits.replace(" ", ""):
        name = {"*": "star", "#": "pound"}.get(d, d)
        parts.append(f'  <nop><action><exec play_pcap_audio="{DTMF_PCAPS}/dtmf_2833_{name}.pcap"/></action></nop>')
        parts.append(f'  <pause milliseconds="{gap_ms}"/>')
    return "\n".join(parts)


def render(template: str, **subs: str) -> Path:
    text = (SIPP_DIR / template).read_text()
    for k, v in subs.items():
        text = text.replace(f"@{k.upper()}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise ValueError(f"{template}: unfilled placeholders {left}")
    with tempfile.NamedTemporaryFile("w", suffix=".xml", prefix="sipp-", delete=False) as f:
        f.write(text)
    return Path(f.name)


def run_sipp(template: str, port: int, *, calls: int = 1, concurrency: int | None = None, rate: float | None = None,
             timeout: float = 90, transport: str = "u1", local_ip: str = "127.0.0.1", extra: tuple[str, ...] = (),
             **subs: str) -> SippResult:
    scenario = render(template, **subs)
    workdir = Path(tempfile.mkdtemp(prefix="sipp-run-"))
    cmd = ["sipp", f"127.0.0.1:{port}", "-sf", str(scenario), "-m", str(calls), "-i", local_ip,
           "-p", str(free_port()), "-cp", str(free_port()), "-mi", "127.0.0.1", "-mp", str(sipp_media_port()),
           "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin", "-trace_err", "-t", transport,
           "-max_recv_loops", "1000", "-recv_timeout", "20000"]
    if concurrency:
        cmd += ["-l", str(concurrency)]
    if rate:
        cmd += ["-r", str(rate)]
    cmd += list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30, cwd=workdir)
    ok = re.search(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", p.stdout)
    bad = re.search(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", p.stdout)
    errs = "".join(f.read_text(errors="replace")[-3000:] for f in workdir.glob("*_errors.log"))
    return SippResult(p.returncode, p.stdout[-4000:], p.stderr[-2000:], int(ok.group(1)) if ok else 0,
                      int(bad.group(1)) if bad else 0, errs)
