"""The one thread that owns PJSIP in a process (worker or simulator).

pjsua2's Python binding deadlocks when a second thread touches a ``Call`` (it holds the GIL while
waiting on a PJSIP lock that the PJSIP thread holds while waiting on the GIL), so every pjsua2
call in this project happens on the thread that runs ``PjsipRuntime.run``.  Other threads hand it
work with ``call_soon`` (a queue drained between ``libHandleEvents`` slices).  Timers live here too
(``call_later``), so no pjsua2 timer callback is needed.

Shutdown is the other trap: objects alive after ``libDestroy`` abort the process and
``libDestroy`` can spin on a pending call, so ``shutdown`` hangs up, pumps until the calls are
gone, and a watchdog ends the process if that does not finish in time.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pjsua2 as pj

log = logging.getLogger("gateway.pjsip")

#: G.711 first; everything else off so no call ever resamples away from the 8 kHz bridge.
CODEC_PRIORITIES = {"PCMU/8000": 255, "PCMA/8000": 254, "telephone-event/8000": 0}


@dataclass(slots=True)
class PjsipConfig:
    sip_host: str = "127.0.0.1"
    sip_port: int = 0
    rtp_port: int = 0
    rtp_port_range: int = 40
    max_calls: int = 4
    tcp: bool = True
    user_agent: str = "handoff122"
    log_level: int = 0
    identity: str = "gateway"
    tls: bool = False             # a TLS transport too (to dial sip:...;transport=tls); peers not verified
    srtp: str = "off"             # off | optional | mandatory: SRTP with SDES keys in the SDP


SRTP_USE = {"off": pj.PJMEDIA_SRTP_DISABLED, "optional": pj.PJMEDIA_SRTP_OPTIONAL,
            "mandatory": pj.PJMEDIA_SRTP_MANDATORY}


def srtp_active(call: pj.Call) -> bool:
    """Whether the call's media runs over SRTP now (pjsua's own call dump says so)."""
    try:
        return "SRTP status: Active" in call.dump(True, "")
    except pj.Error:
        return False


class PjsipRuntime:
    def __init__(self, config: PjsipConfig) -> None:
        self.config = config
        self.ep: pj.Endpoint | None = None
        self.account: pj.Account | None = None
        self._queue: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._running = False
        self._thread_id: int | None = None
        self.udp_port = 0
        self._waker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    # -- lifecycle (on the PJSIP thread) -------------------------------------------------------
    def start(self, account_factory: Callable[[], pj.Account]) -> None:
        self._thread_id = threading.get_ident()
        ep = pj.Endpoint()
        # pjlib prints its start-up banner on stdout before any log config applies; stdout is
        # reserved for the simulators' JSON results and logs are JSON lines, so silence it.
        saved_stdout = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        try:
            ep.libCreate()
            self._init(ep)
        finally:
            os.dup2(saved_stdout, 1)
            os.close(saved_stdout)
        self._open_transports(ep, account_factory)

    def _init(self, ep: pj.Endpoint) -> None:
        c = self.config
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.uaConfig.maxCalls = c.max_calls
        cfg.uaConfig.userAgent = c.user_agent
        cfg.logConfig.level = c.log_level
        cfg.logConfig.consoleLevel = c.log_level
        cfg.medConfig.clockRate = 8000
        cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.channelCount = 1
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.threadCnt = 0
        cfg.medConfig.hasIoqueue = True
        ep.libInit(cfg)

    def _open_transports(self, ep: pj.Endpoint, account_factory: Callable[[], pj.Account]) -> None:
        c = self.config
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = c.sip_host
        tcfg.port = c.sip_port
        tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.udp_port = int(ep.transportGetInfo(tid).localName.rsplit(":", 1)[-1])
        if c.tcp:
            tcfg_tcp = pj.TransportConfig()
            tcfg_tcp.boundAddress = c.sip_host
            tcfg_tcp.port = self.udp_port
            ep.transportCreate(pj.PJSIP_TRANSPORT_TCP, tcfg_tcp)
        if c.tls:
            tcfg_tls = pj.TransportConfig()
            tcfg_tls.boundAddress = c.sip_host
            tcfg_tls.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
            ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg_tls)
        ep.libStart()
        ep.audDevManager().setNullDev()
        for info in ep.codecEnum2():
            ep.codecSetPriority(info.codecId, 0)
        for codec_id, prio in CODEC_PRIORITIES.items():
            with contextlib.suppress(pj.Error):
                ep.codecSetPriority(codec_id, prio)
        self.ep = ep

        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:{c.identity}@{c.sip_host}:{self.udp_port}"
        acfg.natConfig.sdpNatRewriteUse = 0
        acfg.natConfig.contactRewriteUse = 0
        acfg.natConfig.viaRewriteUse = 0
        acfg.natConfig.sipOutboundUse = 0
        acfg.mediaConfig.transportConfig.boundAddress = c.sip_host
        acfg.mediaConfig.transportConfig.port = c.rtp_port
        acfg.mediaConfig.transportConfig.portRange = c.rtp_port_range
        acfg.mediaConfig.srtpUse = SRTP_USE[c.srtp]
        acfg.mediaConfig.srtpSecureSignaling = 0  # SDES keys also over UDP/TCP legs (loopback, workers)
        acc = account_factory()
        acc.create(acfg, True)
        self.account = acc

    def run(self, stop: Callable[[], bool] | None = None) -> None:
        """Pump PJSIP events, queued work and timers until ``stop()`` or ``request_stop()``."""
        assert self.ep is not None
        self._running = True
        ep = self.ep
        while self._running and not (stop and stop()):
            ep.libHandleEvents(10)
            self._drain()

    def request_stop(self) -> None:
        self._running = False

    def _drain(self) -> None:
        while True:
            try:
                fn = self._queue.get_nowait()
            except queue.Empty:
                break
            self._safe(fn)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            self._safe(fn)

    @staticmethod
    def _safe(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("pjsip_task_failed")

    # -- scheduling (call_soon from any thread, call_later on the PJSIP thread) -----------------
    def call_soon(self, fn: Callable[[], None]) -> None:
        self._queue.put(fn)

    def wake(self) -> None:
        """End the current ``libHandleEvents`` wait now (from any thread).

        Queued work would otherwise wait for the poll slice to run out (up to 10 ms on every
        command).  A CRLF keep-alive (RFC 5626) to our own SIP port is an I/O event PJSIP
        swallows without a trace: a self-pipe that needs no pjsua2 call from this thread.
        """
        if self.udp_port:
            with contextlib.suppress(OSError):
                self._waker.sendto(b"\r\n\r\n", (self.config.sip_host, self.udp_port))

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        assert threading.get_ident() == self._thread_id, "call_later is for the PJSIP thread"
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))

    def pump(self, seconds: float) -> None:
        """Run the loop for a while (used during shutdown, on the PJSIP thread)."""
        assert self.ep is not None
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ep.libHandleEvents(10)
            self._drain()

    def shutdown(self, live_calls: Callable[[], int], grace_s: float = 3.0, watchdog_s: float = 8.0) -> None:
        """Hang up, wait for calls to go, destroy the library; never hang the process."""
        watchdog = threading.Timer(watchdog_s, lambda: os._exit(3))
        watchdog.daemon = True
        watchdog.start()
        ep = self.ep
        if ep is not None:
            with contextlib.suppress(pj.Error):
                ep.hangupAllCalls()
            end = time.monotonic() + grace_s
            while live_calls() and time.monotonic() < end:
                ep.libHandleEvents(10)
                self._drain()
            self._timers.clear()
            if self.account is not None:
                with contextlib.suppress(Exception):
                    self.account.shutdown()
                self.account = None
            self.pump(0.05)
            with contextlib.suppress(Exception):
                ep.libDestroy()
            self.ep = None
        watchdog.cancel()


def sip_user_of(uri: str) -> str:
    """``"Alice" <sip:13800138000@host;x=y>`` -> ``13800138000`` (empty when there is none)."""
    s = uri
    if "<" in s:
        s = s.split("<", 1)[1].split(">", 1)[0]
    for scheme in ("sips:", "sip:", "tel:"):
        if scheme in s:
            s = s.split(scheme, 1)[1]
            break
    if "@" in s:
        return s.split("@", 1)[0].split(";", 1)[0]
    if s.startswith(("+",)) or s.split(";", 1)[0].isdigit():
        return s.split(";", 1)[0]
    return ""


def request_uri_user(whole_msg: str) -> str:
    """The user part of the Request-URI of an INVITE (what the caller dialled)."""
    first = whole_msg.split("\r\n", 1)[0].split("\n", 1)[0]
    parts = first.split(" ")
    return sip_user_of(parts[1]) if len(parts) >= 2 else ""


def header_value(whole_msg: str, name: str) -> str | None:
    lname = name.lower()
    for line in whole_msg.split("\r\n\r\n", 1)[0].splitlines()[1:]:
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == lname:
            return v.strip()
    return None
