"""A newcomer's first minutes, as the README tells them: a fresh clone, `./dev serve`, a call.

These tests run the product the way a person does (the README's own command, a terminal, Ctrl-C)
and look at what a person sees and what is left on the machine afterwards.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.bench.runner import rtp_base_below_ephemeral, sipp
from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.sip
SIPP_DIR = ROOT / "tests" / "sipp"


def readme_commands() -> list[str]:
    """The two fresh-machine commands: the first lines of the README's first code block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```sh\n(.*?)```", text, flags=re.S)
    assert block, "README.md has no ```sh block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def wait_until(what: Callable[[], Any], timeout: float, why: str, every: float = 0.2,
               gone: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        if gone is not None and gone.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise AssertionError(f"exited {gone.returncode} while waiting for {why}:\n{tail}")
        try:
            last = what()
            if last:
                return last
        except Exception as e:  # not there yet
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {why}; last: {last!r}")


def port_is_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and alive(int(proc.name)):
            found.append((int(proc.name), cmdline[:200]))
    return found


def options_ok(port: int) -> bool:
    return sipp(port, SIPP_DIR / "uac_options.xml", calls=1, rate=1, limit=1, timeout=5).ok_calls == 1


def place_call(port: int, *digits: str, stay: float = 2.0) -> dict[str, Any]:
    import json

    p = subprocess.run([sys.executable, "-m", "gateway.cli", "call", "--to", f"sip:122@127.0.0.1:{port}",
                        "--digits", " ".join(digits), "--stay", str(stay)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT)
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    assert lines, f"the caller printed nothing: {p.stderr[-1500:]}"
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------------------------
def test_the_readme_first_command_serves_from_a_fresh_clone(tmp_path: Path) -> None:
    serve_cmd, test_cmd = readme_commands()[:2]
    assert serve_cmd == "./dev serve" and test_cmd == "./dev test"
    for port in (5060, 8000):
        assert port_is_free(port), f"port {port} is taken: the README's command needs the defaults free"

    clone = tmp_path / "handoff122"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
    # Reuse this checkout's venv (set up by ./dev test) to keep the test quick, but run the clone's
    # code: the stamp check of ./dev must see nothing to install.
    (clone / ".venv").symlink_to(ROOT / ".venv")
    os.utime(clone / "pyproject.toml", (0, 0))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}, "PYTHONPATH": str(clone)}
    log = tmp_path / "serve.log"
    node = subprocess.Popen(serve_cmd.split(), cwd=clone, env=env, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def healthy() -> bool:
            return httpx.get("http://127.0.0.1:8000/healthz", timeout=2).json() == {"status": "ok"}

        wait_until(healthy, 120, "/healthz on 127.0.0.1:8000", gone=node, log=log)
        assert options_ok(5060), "no 200 to OPTIONS on 127.0.0.1:5060"
        result = place_call(5060, "1", "2", "1", "2", "2", "2", "1", stay=2)
        assert result["answered"], result
        assert result["hung_up_by"] == "caller", result   # waits in the queue, never hung up on

        data = clone / "var"
        assert (data / "handoff122.sqlite3").exists()
        cfg = (data / "run" / "kamailio" / "kamailio.cfg").read_text()
        for path in re.findall(r'"(/[^"]*|\.{0,2}/?var/[^"]*)"', cfg):
            assert Path(path).is_absolute(), f"relative path handed to Kamailio: {path}"
        pids = [int(p.read_text()) for p in (data / "run").glob("*.pid")]
        assert len(pids) >= 2, pids   # the node and its workers
        started = [p for p, _ in processes_mentioning(str(clone))]
        kamailio = [p for p, cmd in processes_mentioning(str(data / "run" / "kamailio")) if "kamailio" in cmd]
        assert kamailio, "the node runs no Kamailio"
    finally:
        # Ctrl-C, as a terminal sends it: SIGINT to the foreground process group
        if node.poll() is None:
            os.killpg(node.pid, signal.SIGINT)
        try:
            node.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            raise
    assert node.returncode in (0, 130), log.read_text()[-3000:]
    left = [p for p in {*pids, *started, *kamailio} if alive(p)]
    assert not left, f"left running after Ctrl-C: {left}"
    assert not processes_mentioning(str(clone)), processes_mentioning(str(clone))
    assert port_is_free(5060) and port_is_free(8000)


def test_settings_that_cannot_work_are_refused_in_one_line(tmp_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--data-dir", str(tmp_path / "var"),
                               *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)

    high = serve("--sip-port", "55872")
    assert high.returncode == 2
    [line] = high.stderr.strip().splitlines()
    assert "RTP" in line and "65535" in line and "rtp_base_port" in line, line

    overlap = serve("--sip-port", "40000", "--api-port", "40105")  # workers take 40100-40107
    assert overlap.returncode == 2
    [line] = overlap.stderr.strip().splitlines()
    assert "overlap" in line and "api_port" in line, line

    rtp_over_sip = serve("--sip-port", "40000", "--rtp-base-port", "39990", "--workers", "2")
    assert rtp_over_sip.returncode == 2 and "overlap" in rtp_over_sip.stderr
    assert not (tmp_path / "var").exists(), "a refused start must not touch the data dir"


class Terminal:
    """A process on a pseudo-terminal: what a person running it in a shell sees."""

    def __init__(self, cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.screen = ""

    def read(self, until: Callable[[str], bool], timeout: float) -> str:
        end = time.monotonic() + timeout
        while not until(self.screen):
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; the terminal shows:\n{self.screen[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.screen += os.read(self.master, 65536).decode(errors="replace").replace("\r\n", "\n")
                except OSError:  # the process closed the terminal
                    break
        return self.screen

    def ctrl_c(self, timeout: float = 60) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        rc = self.proc.wait(timeout)
        try:
            while select.select([self.master], [], [], 0.5)[0]:
                self.screen += os.read(self.master, 65536).decode(errors="replace").replace("\r\n", "\n")
        except OSError:
            pass
        os.close(self.master)
        return rc


@pytest.mark.browser
def test_on_a_terminal_the_first_screen_is_the_banner_and_its_link_signs_in(tmp_path: Path) -> None:
    sip_port, api_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")},
           "HANDOFF_RTP_BASE_PORT": str(rtp_base_below_ephemeral(sip_port, 200)),
           "HANDOFF_WORKER_BASE_PORT": str(free_port()), "HANDOFF_WORKERS": "1"}
    term = Terminal([sys.executable, "-m", "gateway.cli", "serve", "--sip-port", str(sip_port), "--api-port",
                     str(api_port)], cwd=tmp_path, env=env)
    try:
        screen = term.read(lambda s: "Ctrl-C stops the node" in s, 90)
        first = next(line for line in screen.splitlines() if line.strip())
        assert "handoff122" in first and "running" in first, f"the first screen is not the banner:\n{screen}"
        assert "{" not in screen.split("Ctrl-C stops the node")[0], "JSON log lines before the banner"
        assert f"sip:122@127.0.0.1:{sip_port}" in screen
        assert f"http://127.0.0.1:{api_port}/seat" in screen
        assert str(tmp_path / "var") in screen           # where the data lives, absolute
        assert "handoff122 demo" in screen               # a node with no seats says how to get some
        link = re.search(rf"(http://127\.0\.0\.1:{api_port}/signin\?code=[\w-]+)", screen)
        assert link, f"no one-time sign-in link on the first screen:\n{screen}"

        # a person opens the dashboard from the link: signed in, no token typed
        from playwright.sync_api import expect, sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(link.group(1))
            page.wait_for_url(f"http://127.0.0.1:{api_port}/")
            expect(page.locator("#skills tbody tr")).to_have_count(8, timeout=15_000)
            browser.close()
        again = httpx.get(link.group(1), timeout=5)
        assert again.status_code == 410 and "token create" in again.text   # the link is good once

        # after the banner: one human line per event, with the call id
        result = place_call(sip_port, "0", stay=1)
        assert result["answered"]
        screen = term.read(lambda s: re.search(r"call c-\w+.*call_ended", s) is not None, 60)
        after = screen.split("Ctrl-C stops the node", 1)[1]
        assert not [line for line in after.splitlines() if line.lstrip().startswith("{")], after
    finally:
        rc = term.ctrl_c() if term.proc.poll() is None else term.proc.returncode
    tail = term.screen.split("Ctrl-C stops the node", 1)[-1]
    assert rc in (0, 130), term.screen[-3000:]
    assert " ERROR " not in tail and "CRITICAL" not in tail, f"a normal stop printed errors:\n{tail}"
