"""The two SIP legs of a hand-off, one class per leg (pjsua2 ``Call`` subclasses).

A leg forwards what happens on the wire to its session (``LegOwner``); it holds no policy.  Both run
their callbacks on the PJSIP thread.
"""

from __future__ import annotations

import logging
import time
from enum import StrEnum
from typing import Protocol

import pjsua2 as pj

log = logging.getLogger("gateway.worker.legs")


class LegOwner(Protocol):
    """What a leg reports to (``gateway.worker.session.HandoffSession``)."""

    def caller_disconnected(self, code: int, reason: str) -> None: ...
    def caller_media_changed(self) -> None: ...
    def digit(self, digit: str, method: str) -> None: ...
    def seat_ringing(self, leg: SeatLeg) -> None: ...
    def seat_media_changed(self, leg: SeatLeg) -> None: ...
    def seat_disconnected(self, leg: SeatLeg, code: int, reason: str) -> None: ...
    def seat_referred(self, leg: SeatLeg, refer_to: str) -> None: ...
    def monitor_media_changed(self, leg: MonitorLeg) -> None: ...
    def monitor_disconnected(self, leg: MonitorLeg, code: int, reason: str) -> None: ...


class SeatLegState(StrEnum):
    """The seat leg's states, in the manner of sippy's per-state UA classes."""

    DIALING = "dialing"        # INVITE sent, nothing back yet
    RETRYING = "retrying"      # PJSIP had no call free; the dial is tried again shortly
    RINGING = "ringing"        # 18x from the seat
    BRIDGED = "bridged"        # 200 OK and media: caller <-> seat audio connected
    CANCELLING = "cancelling"  # we gave up (ring timeout, the control process said so)
    ENDED = "ended"


L = SeatLegState
#: The only moves of a seat leg; anything else is logged as an error and ignored.
SEAT_LEG_MOVES: dict[SeatLegState, frozenset[SeatLegState]] = {
    L.RETRYING: frozenset({L.DIALING, L.RETRYING, L.ENDED}),
    L.DIALING: frozenset({L.RINGING, L.BRIDGED, L.CANCELLING, L.ENDED}),
    L.RINGING: frozenset({L.BRIDGED, L.CANCELLING, L.ENDED}),
    L.BRIDGED: frozenset({L.ENDED}),
    L.CANCELLING: frozenset({L.ENDED}),
    L.ENDED: frozenset(),
}


def seat_leg_move(call_id: str, leg_id: str, src: SeatLegState | None, dst: SeatLegState) -> bool:
    """Whether ``src -> dst`` is a legal seat-leg move (a new leg starts dialing or retrying); logs it."""
    legal = dst in (L.DIALING, L.RETRYING) if src is None else dst in SEAT_LEG_MOVES[src]
    if legal:
        log.info("seat_leg", extra={"call_id": call_id, "leg_id": leg_id, "from": src.value if src else None,
                                    "to": dst.value})
    else:
        log.error("seat_leg_unexpected", extra={"call_id": call_id, "leg_id": leg_id,
                                                "from": src.value if src else None, "to": dst.value})
    return legal


def active_audio(call: pj.Call) -> pj.AudioMedia | None:
    """The call's audio on the bridge, when media is flowing (not on hold, not failed)."""
    info = call.getInfo()
    for i, m in enumerate(info.media):
        if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
            return call.getAudioMedia(i)
    return None


class CallerLeg(pj.Call):
    """The leg of the person who dialled 122.  The gateway never REFERs it and never hangs it up
    because of a hand-off; only the caller (or a node shutdown) ends it."""

    def __init__(self, account: pj.Account, call_index: int, session: LegOwner) -> None:
        super().__init__(account, call_index)
        self.session = session

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.session.caller_disconnected(info.lastStatusCode, info.lastReason)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.session.caller_media_changed()

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        method = "rfc4733" if prm.method == pj.PJSUA_DTMF_METHOD_RFC2833 else (
            "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "other")
        self.session.digit(prm.digit, method)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        # pjsua2 follows a caller's REFER by default: the caller could make the gateway dial
        # anyone (toll fraud).  The gateway dials only seats from its own table: 603.
        prm.statusCode = 603


class SeatLeg(pj.Call):
    """The leg the gateway opens to a seat's phone."""

    def __init__(self, account: pj.Account, session: LegOwner, leg_id: str) -> None:
        super().__init__(account)
        self.session = session
        self.leg_id = leg_id
        self.rang = False
        self.cancelled: str | None = None  # why we ended it before an answer, if we did
        self.answered_at: float | None = None  # when the seat's 200 OK arrived

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_EARLY and not self.rang:
            self.rang = True
            self.session.seat_ringing(self)
        elif info.state in (pj.PJSIP_INV_STATE_CONNECTING, pj.PJSIP_INV_STATE_CONFIRMED) \
                and self.answered_at is None:
            self.answered_at = time.time()
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.session.seat_disconnected(self, info.lastStatusCode, info.lastReason)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.session.seat_media_changed(self)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        # The seat's transfer key.  pjsua2 would follow the REFER and dial the target itself (any
        # URI the phone names); the gateway never does: it reports the target to the control
        # process, which turns a known skill into its own transfer (the caller is never handed to
        # the phone's choice of URI).  The REFER itself is answered 603 (pjsua2 has no "202 but do
        # not follow"); the seat's leg is then released by the transfer.
        self.session.seat_referred(self, str(prm.dstUri))
        prm.statusCode = 603


class MonitorLeg(pj.Call):
    """The leg the gateway opens to a supervisor's phone to listen, whisper or barge.  It never
    takes a REFER (the default pjsua2 behaviour would follow it)."""

    def __init__(self, account: pj.Account, session: LegOwner, leg_id: str, mode: str) -> None:
        super().__init__(account)
        self.session = session
        self.leg_id = leg_id
        self.mode = mode
        self.answered = False
        self.ending: str | None = None

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.session.monitor_disconnected(self, info.lastStatusCode, info.lastReason)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.session.monitor_media_changed(self)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        prm.statusCode = 603
