"""``handoff122 seat``: a simulated seat phone in the joint command centre.

Rings on an incoming INVITE, answers after a delay (or never, or refuses with a code), plays a
steady tone so the caller can be shown to hear a person, records what it hears, and prints one JSON
line per call with the hand-off headers it received.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pjsua2 as pj

from gateway.pjsip import PjsipConfig, PjsipRuntime, header_value, sip_user_of, srtp_active
from gateway.simulators.phone import TonePhoneLeg, heard_tone

CALLER_TONE_HZ = 440.0


class SeatPhoneCall(pj.Call):
    def __init__(self, account: pj.Account, call_index: int, seat: SeatPhone, info: dict[str, Any]) -> None:
        super().__init__(account, call_index)
        self.seat = seat
        self.info = info
        self.media: TonePhoneLeg | None = None
        self.answered_at: float | None = None
        self.hung_up = False

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        ci = self.getInfo()
        if ci.state == pj.PJSIP_INV_STATE_CONFIRMED and self.answered_at is None:
            self.answered_at = time.monotonic()
            if self.seat.hangup_after is not None:
                self.seat.rt.call_later(self.seat.hangup_after, self._hang_up)
            if self.seat.refer_to:
                self.seat.rt.call_later(self.seat.refer_after, self._refer)
        elif ci.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.seat.ended(self, ci.lastStatusCode, ci.lastReason)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        if self.media is not None:
            self.media.media_active(self)
        self.info["srtp"] = bool(self.info.get("srtp")) or srtp_active(self)

    def _refer(self) -> None:
        """The phone's transfer key: a REFER on this call (what the gateway does with it is its business)."""
        if self.hung_up or self not in self.seat.calls or not self.seat.refer_to:
            return
        try:
            self.xfer(self.seat.refer_to, pj.CallOpParam(True))
            self.info["referred_to"] = self.seat.refer_to
        except pj.Error as e:
            self.info["refer_error"] = e.info()

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        self.info["refer_status"] = prm.statusCode
        prm.cont = False

    def answer_now(self) -> None:
        if self.answered_at is not None or self.hung_up or self not in self.seat.calls:
            return
        prm = pj.CallOpParam(True)
        prm.statusCode = 200
        try:
            self.answer(prm)
        except pj.Error:
            pass

    def _hang_up(self) -> None:
        if self.hung_up or self not in self.seat.calls:
            return
        self.hung_up = True
        try:
            self.hangup(pj.CallOpParam(True))
        except pj.Error:
            pass


class SeatPhone(pj.Account):
    def __init__(self, seat_id: str, answer_after: float | None, hangup_after: float | None, record: Path | None,
                 tone_hz: float, respond: int | None, refer_to: str | None = None, refer_after: float = 2.0) -> None:
        super().__init__()
        self.refer_to = refer_to
        self.refer_after = refer_after
        self.seat_id = seat_id
        self.answer_after = answer_after
        self.hangup_after = hangup_after
        self.record = record
        self.tone_hz = tone_hz
        self.respond = respond
        self.calls: set[SeatPhoneCall] = set()
        self.count = 0
        self.rt: PjsipRuntime

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        msg = prm.rdata.wholeMsg
        self.count += 1
        info = {
            "seat": self.seat_id,
            "call_id": header_value(msg, "X-Handoff-Call-Id"),
            "skill": header_value(msg, "X-Handoff-Skill"),
            "caller": sip_user_of(header_value(msg, "From") or header_value(msg, "f") or ""),
            "pai": sip_user_of(header_value(msg, "P-Asserted-Identity") or ""),
            "n": self.count,
            "others": len(self.calls),  # calls this phone already had when the INVITE came (0 = one at a time)
            "invite_at": time.time(),
        }
        call = SeatPhoneCall(self, prm.callId, self, info)
        self.calls.add(call)
        if self.respond:
            p = pj.CallOpParam(True)
            p.statusCode = self.respond
            info["responded"] = self.respond
            call.hangup(p)
            return
        record = None
        if self.record is not None:
            record = self.record if self.count == 1 else self.record.with_name(
                f"{self.record.stem}-{self.count}{self.record.suffix}")
        call.media = TonePhoneLeg(self.tone_hz, record)
        info["recording"] = str(record) if record else None
        ring = pj.CallOpParam(True)
        ring.statusCode = 180
        call.answer(ring)
        if self.answer_after is not None:
            self.rt.call_later(self.answer_after, call.answer_now)

    def ended(self, call: SeatPhoneCall, code: int, reason: str) -> None:
        info = call.info
        answered = call.answered_at is not None
        info.update({
            "answered": answered,
            "talk_s": round(time.monotonic() - call.answered_at, 2) if call.answered_at else 0.0,
            "ended_by": "seat" if call.hung_up else "remote",
            "code": code, "reason": reason,
        })
        if call.media is not None:
            call.media.close()
        self.calls.discard(call)  # drop inside DISCONNECTED
        self.rt.call_later(0.05, lambda: self._report(info))

    def _report(self, info: dict[str, Any]) -> None:
        rec = info.get("recording")
        if rec and info.get("answered"):
            info["caller_tone_s"] = heard_tone(Path(rec), CALLER_TONE_HZ)
        print(json.dumps(info, ensure_ascii=False), flush=True)


def run_seat(*, seat_id: str, sip_port: int, answer_after: float | None, hangup_after: float | None,
             record: Path | None, tone_hz: float, respond: int | None = None, max_calls: int = 0,
             srtp: str = "off", refer_to: str | None = None, refer_after: float = 2.0) -> int:
    rt = PjsipRuntime(PjsipConfig(sip_port=sip_port, rtp_port=0, tcp=True, max_calls=4, identity=seat_id,
                                  srtp=srtp))
    phone = SeatPhone(seat_id, answer_after, hangup_after, record, tone_hz, respond, refer_to, refer_after)
    phone.rt = rt
    try:
        rt.start(lambda: phone)
    except pj.Error as e:
        print(f"handoff122 seat: cannot listen on 127.0.0.1:{sip_port}: {e.reason}", flush=True)
        return 2
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    print(json.dumps({"seat": seat_id, "listening": f"sip:{seat_id}@127.0.0.1:{rt.udp_port}"}), flush=True)
    rt.run(stop=lambda: stop["now"] or (max_calls > 0 and phone.count >= max_calls and not phone.calls))
    rt.pump(0.2)
    rt.shutdown(lambda: len(phone.calls))
    return 0
