"""Entry point of a media worker process (``python -m gateway.worker``).

Threads: the main thread owns PJSIP; a reader thread turns channel lines into commands queued for
it; a writer thread sends events so a slow control process never stalls the media loop.  When the
control process goes away (it crashed and its supervisor starts it again) the worker keeps its
calls: bridged conversations flow on in its conference bridge, waiting callers hear their prompt
again, new callers are refused; it reconnects and its ``Hello`` lists the calls it carries, for the
new control process to take over.  Its parent is the node's supervisor (``gateway.supervisor``): it
asks the kernel for SIGTERM when that dies (even by ``kill -9``), so no worker keeps its SIP port
after the node is gone, and a ``Shutdown`` (the whole node stopping) ends its calls.  It proves
itself to the control socket with the per-start secret the supervisor put in its environment (read
once, then removed, never on the command line).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gateway import channel as ch
from gateway.logs import configure_logging
from gateway.pjsip import PjsipConfig, PjsipRuntime
from gateway.worker.gap import ControlGap
from gateway.worker.service import GatewayAccount, WorkerConfig, WorkerService

log = logging.getLogger("gateway.worker")


class ControlLink:
    """The worker's end of the control channel, across control-process restarts.

    Every connection starts with a ``Hello`` (built on the PJSIP thread, so it lists exactly the
    calls that exist when the events after it start flowing).  While no control process is
    connected, ``gap`` (``gateway.worker.gap.ControlGap``) keeps the calls as they were when it went
    away and the events produced since; the next ``Hello`` carries the former and the latter follow
    it, in order.  The socket is tried again every ``retry_s`` until a control process accepts it.
    """

    def __init__(self, path: str, retry_s: float = 0.2) -> None:
        self.path = path
        self.retry_s = retry_s
        self.sock: socket.socket | None = None
        self._gen = 0
        self._out: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self.closed = threading.Event()
        self.stopping = False
        self.gap: ControlGap | None = None  # PJSIP thread only

    def connect(self, timeout_s: float | None = None) -> bool:
        """Connect (retrying); False when ``timeout_s`` passed or the worker is stopping."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.stopping:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.path)
                self.sock = s
                return True
            except OSError:
                s.close()
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(self.retry_s)
        return False

    def attach(self, hello: Any, replay: list[Any] | None = None) -> None:
        """PJSIP thread: the connected socket carries events from now on, ``hello`` first, then
        ``replay`` (what happened while no control process was connected)."""
        self._gen += 1
        self.closed.clear()
        self._out.put((self._gen, ch.encode(hello)))
        for msg in replay or ():
            self._out.put((self._gen, ch.encode(msg)))

    def send(self, msg: Any) -> None:
        """PJSIP thread: to the control process, or kept for the next one while there is none."""
        if self.gap is not None:
            self.gap.add(msg)
        elif not self.closed.is_set() and self.sock is not None:
            self._out.put((self._gen, ch.encode(msg)))

    def start(self) -> None:
        threading.Thread(target=self._write_loop, name="channel-writer", daemon=True).start()

    def read(self, on_command: Any, on_close: Any) -> None:
        threading.Thread(target=self._read_loop, args=(self.sock, on_command, on_close), name="channel-reader",
                         daemon=True).start()

    def _write_loop(self) -> None:
        while True:
            item = self._out.get()
            if item is None:
                return
            gen, data = item
            sock = self.sock
            if gen != self._gen or sock is None:
                continue  # written for a connection that is gone
            try:
                sock.sendall(data)
            except OSError:
                self.closed.set()

    def _read_loop(self, sock: socket.socket, on_command: Any, on_close: Any) -> None:
        f = sock.makefile("rb")
        try:
            for line in f:
                try:
                    cmd = ch.decode_command(line)
                except ch.ProtocolError as e:
                    log.error("bad_command", extra={"error": str(e)})
                    continue
                on_command(cmd)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sock.close()
        if sock is self.sock:  # not a reader of a connection already replaced
            self.closed.set()
            on_close()

    def close(self) -> None:
        self.stopping = True
        self._out.put(None)


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGTERM when the node dies; if it already died before we asked, leave at once."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent_pid and os.getppid() != parent_pid:
        os._exit(70)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="handoff122-worker")
    p.add_argument("--worker-id", type=int, required=True)
    p.add_argument("--control", required=True, help="Unix socket of the control process")
    p.add_argument("--sip-host", default="127.0.0.1")
    p.add_argument("--sip-port", type=int, required=True)
    p.add_argument("--rtp-port", type=int, required=True)
    p.add_argument("--rtp-range", type=int, default=40)
    p.add_argument("--callers", type=int, default=2)
    p.add_argument("--max-calls", type=int, default=4)
    p.add_argument("--service-numbers", default="122")
    p.add_argument("--partial-dir", type=Path, required=True)
    p.add_argument("--retry-after", type=int, default=5)
    p.add_argument("--answer-delay", type=float, default=0.0)
    p.add_argument("--ack-timeout", type=float, default=5.0)
    p.add_argument("--identity-sources", default="", help="IPs/CIDRs whose P-Asserted-Identity is believed")
    p.add_argument("--parent-pid", type=int, default=0, help="the node; the worker ends when it does")
    p.add_argument("--srtp", choices=["off", "optional"], default="off", help="SRTP (SDES) when the peer offers it")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--pjsip-log-level", type=int, default=0)
    a = p.parse_args(argv)
    die_with_parent(a.parent_pid)
    secret = os.environ.pop(ch.SECRET_ENV, "")
    configure_logging(a.log_level, process_name=f"worker-{a.worker_id}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the control process decides when we stop

    link = ControlLink(a.control)
    if not link.connect(timeout_s=15.0):
        print(f"worker {a.worker_id}: no control process on {a.control}", file=sys.stderr)
        return 2
    rt = PjsipRuntime(PjsipConfig(sip_host=a.sip_host, sip_port=a.sip_port, rtp_port=a.rtp_port,
                                  rtp_port_range=a.rtp_range, max_calls=a.max_calls,
                                  log_level=a.pjsip_log_level, srtp=a.srtp))
    config = WorkerConfig(worker_id=a.worker_id, callers=a.callers, max_calls=a.max_calls, partial_dir=a.partial_dir,
                          service_numbers=tuple(x for x in a.service_numbers.split(",") if x),
                          retry_after_s=a.retry_after, answer_delay_s=a.answer_delay, ack_timeout_s=a.ack_timeout,
                          identity_sources=tuple(x for x in a.identity_sources.split(",") if x))
    service = WorkerService(rt, config, link.send)
    a.partial_dir.mkdir(parents=True, exist_ok=True)
    try:
        rt.start(lambda: GatewayAccount(service.on_incoming))
    except Exception as e:
        print(f"worker {a.worker_id}: cannot start SIP on {a.sip_host}:{a.sip_port}: {e}", file=sys.stderr)
        return 2

    def stop() -> None:
        link.stopping = True
        rt.request_stop()

    signal.signal(signal.SIGTERM, lambda *_: rt.call_soon(stop))

    def on_command(cmd: Any) -> None:
        rt.call_soon(lambda: stop() if isinstance(cmd, ch.Shutdown) else service.handle(cmd))
        rt.wake()

    def hello() -> None:
        """PJSIP thread, on every (re)connection: say who we are and which calls we carry (as they
        were when the last control process went away), then what happened to them since."""
        gap, link.gap = link.gap, None
        calls = service.live_call_report()
        replay: list[Any] = []
        if gap is not None:
            calls, replay = gap.hello_calls(calls)
        link.attach(ch.Hello(worker_id=a.worker_id, pid=os.getpid(), sip_port=rt.udp_port, max_calls=a.max_calls,
                             secret=secret, calls=calls, replayed=len(replay)), replay)
        service.control_up = True
        reconnecting[0] = False
        link.read(on_command, on_close)
        if gap is not None:
            log.warning("control_reconnected", extra={
                "worker_id": a.worker_id, "calls": len(calls), "ended_meanwhile": sum(c.ended for c in calls),
                "replayed": len(replay), "dropped": gap.dropped, "overflowed": gap.overflowed})

    reconnecting = [False]  # PJSIP thread only: one reconnect loop at a time

    def reconnect() -> None:
        if link.connect():
            rt.call_soon(hello)
            rt.wake()

    def on_close() -> None:
        """The control process is gone (crashed, or restarting): calls go on; we wait for the next."""
        if link.stopping:
            return
        def lost() -> None:
            if link.stopping:
                return  # the Shutdown that came before the close is being carried out
            log.warning("control_lost", extra={"worker_id": a.worker_id, "calls": len(service.sessions)})
            if link.gap is None:
                link.gap = ControlGap(service.control_lost())
            if not reconnecting[0]:
                reconnecting[0] = True
                threading.Thread(target=reconnect, name="channel-reconnect", daemon=True).start()
        rt.call_soon(lost)
        rt.wake()

    link.start()
    hello()
    log.info("worker_ready", extra={"worker_id": a.worker_id, "sip_port": rt.udp_port, "rtp_port": a.rtp_port})
    rt.call_soon(service.report_stats)
    rt.run()
    link.stopping = True
    service.hangup_all()
    rt.shutdown(service.live_calls)
    link.close()
    # Let the writer flush CallEnded messages produced by the shutdown hang-ups.
    threading.Event().wait(0.2)
    return 0
