"""Entry point of a media worker process (``python -m gateway.worker``).

Threads: the main thread owns PJSIP; a reader thread turns channel lines into commands queued for
it; a writer thread sends events so a slow control process never stalls the media loop.  When the
control process goes away the worker hangs up and exits: without it nobody could route its callers.
It also asks the kernel for SIGTERM when its parent dies (even by ``kill -9``), so no worker keeps
its SIP port after the node is gone.  It proves itself to the control socket with the per-start
secret the pool put in its environment (read once, then removed, never on the command line).
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import queue
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from gateway import channel as ch
from gateway.logs import configure_logging
from gateway.pjsip import PjsipConfig, PjsipRuntime
from gateway.worker.service import GatewayAccount, WorkerConfig, WorkerService

log = logging.getLogger("gateway.worker")


class ControlLink:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self._out: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.closed = threading.Event()

    def send(self, msg: Any) -> None:
        self._out.put(ch.encode(msg))

    def start(self, on_command, on_close) -> None:
        threading.Thread(target=self._write_loop, name="channel-writer", daemon=True).start()
        threading.Thread(target=self._read_loop, args=(on_command, on_close), name="channel-reader",
                         daemon=True).start()

    def _write_loop(self) -> None:
        while True:
            data = self._out.get()
            if data is None:
                return
            try:
                self.sock.sendall(data)
            except OSError:
                self.closed.set()
                return

    def _read_loop(self, on_command, on_close) -> None:
        f = self.sock.makefile("rb")
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
        self.closed.set()
        on_close()

    def close(self) -> None:
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
    signal.signal(signal.SIGTERM, lambda *_: rt.call_soon(rt.request_stop))
    def on_command(cmd: Any) -> None:
        rt.call_soon(lambda: service.handle(cmd))
        rt.wake()

    link.start(on_command=on_command,
               on_close=lambda: rt.call_soon(rt.request_stop))
    link.send(ch.Hello(worker_id=a.worker_id, pid=os.getpid(), sip_port=rt.udp_port, max_calls=a.max_calls,
                       secret=secret))
    log.info("worker_ready", extra={"worker_id": a.worker_id, "sip_port": rt.udp_port, "rtp_port": a.rtp_port})
    rt.call_soon(service.report_stats)
    rt.run()
    service.hangup_all()
    rt.shutdown(service.live_calls)
    link.close()
    # Let the writer flush CallEnded messages produced by the shutdown hang-ups.
    threading.Event().wait(0.2)
    return 0
