"""The two SIP legs of a hand-off, one class per leg (pjsua2 ``Call`` subclasses).

A leg forwards what happens on the wire to its ``HandoffSession``; it holds no policy.  Both run
their callbacks on the PJSIP thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pjsua2 as pj

if TYPE_CHECKING:
    from gateway.worker.session import HandoffSession


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

    def __init__(self, account: pj.Account, call_index: int, session: HandoffSession) -> None:
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

    def __init__(self, account: pj.Account, session: HandoffSession, leg_id: str) -> None:
        super().__init__(account)
        self.session = session
        self.leg_id = leg_id
        self.rang = False
        self.cancelled: str | None = None  # why we ended it before an answer, if we did

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_EARLY and not self.rang:
            self.rang = True
            self.session.seat_ringing(self)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.session.seat_disconnected(self, info.lastStatusCode, info.lastReason)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.session.seat_media_changed(self)
