"""The seat leg's media watchdog: a seat whose network vanished sends no BYE, only silence.

A phone that loses its network (cable pulled, Wi-Fi gone, laptop lid shut, the process frozen)
sends nothing more: no BYE, no RTP.  SIP alone notices only when the next in-dialog request fails
(a session-timer refresh, half an hour later by PJSIP's default), so the caller would sit in dead
air.  While the seat leg is bridged the watchdog reads the leg's RTP receive counter once a second
(``Call.getStreamStat``); when it has not moved for ``timeout_s`` the leg is declared lost.

Rules, and why:

* it arms on the first RTP packet from the seat: a leg that never sent any (a SIPp seat in the
  benches, a one-way-audio NAT fault) is not judged by it, since "it stopped" needs "it flowed";
* it pauses while the seat does not send by its own SDP (the phone put the call on hold with
  ``sendonly``/``inactive`` or media is not active): silence is then what was agreed.  The
  gateway's own hold (``HoldSeat``) happens in the bridge without a re-INVITE, so the phone keeps
  sending and the watchdog keeps watching;
* ``timeout_s`` must exceed the silence-suppression keep-alive of phones (with VAD on, PJSIP and
  most phones send a comfort-noise or keep-alive packet at least every 5 s), hence 9 s by default.

Runs on the PJSIP thread (``call_later`` of the worker's loop), like everything touching pjsua2.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import pjsua2 as pj

log = logging.getLogger("gateway.worker.watchdog")

#: how often the counter is read (a pjsua2 call under the call's lock: cheap, but not free)
POLL_EVERY_S = 1.0


class Loop(Protocol):
    def call_later(self, delay: float, fn: Callable[[], Any]) -> Any: ...


def seat_sends(call: pj.Call) -> int | None:
    """The media index of the call's audio when the remote side is meant to send it to us (active,
    and our direction includes decoding), else None."""
    info = call.getInfo()
    for i, m in enumerate(info.media):
        if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE \
                and m.dir & pj.PJMEDIA_DIR_DECODING:
            return i
    return None


class SeatMediaWatchdog:
    """Watches one bridged seat leg; calls ``on_lost(silent_s)`` once, then stops.  It also stops
    for good as soon as ``watching()`` says the leg is no longer the session's bridged seat leg
    (released, hung up, the caller gone), so no path has to remember to stop it."""

    def __init__(self, loop: Loop, call: pj.Call, timeout_s: float, on_lost: Callable[[float], None],
                 watching: Callable[[], bool], clock: Callable[[], float] = time.monotonic,
                 every_s: float = POLL_EVERY_S) -> None:
        self.loop = loop
        self.call = call
        self.watching = watching
        self.timeout_s = timeout_s
        self.on_lost = on_lost
        self.clock = clock
        self.every_s = min(every_s, max(0.2, timeout_s / 4))
        self.stopped = False
        self.armed = False          # RTP from the seat was seen at least once
        self.last_pkt = -1
        self.last_change = clock()

    def start(self) -> None:
        self.loop.call_later(self.every_s, self._poll)

    def stop(self) -> None:
        self.stopped = True

    def _poll(self) -> None:
        if self.stopped or not self.watching():
            self.stopped = True
            return
        now = self.clock()
        try:
            idx = seat_sends(self.call)
            pkt = int(self.call.getStreamStat(idx).rtcp.rxStat.pkt) if idx is not None else None
        except pj.Error:
            pkt = None  # the leg is going away; its DISCONNECTED will say so
        if pkt is None:
            self.last_change = now  # paused: the seat is not meant to send now
        elif pkt != self.last_pkt:
            self.last_pkt = pkt
            self.last_change = now
            self.armed = self.armed or pkt > 0
        elif self.armed and now - self.last_change >= self.timeout_s:
            self.stopped = True
            self.on_lost(now - self.last_change)
            return
        self.loop.call_later(self.every_s, self._poll)
