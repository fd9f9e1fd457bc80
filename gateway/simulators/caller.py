"""``handoff122 call``: a simulated person at the roadside dialling 122.

Dials, presses the keys with the given gap (RFC 4733 or SIP INFO), plays a tone and records what
it hears, stays on the line, and prints one JSON object: answered, seconds to answer, whether it
heard a seat (the seat simulator's tone), the longest silence it sat through, who hung up.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pjsua2 as pj

from gateway.pjsip import PjsipConfig, PjsipRuntime, srtp_active
from gateway.simulators.phone import TonePhoneLeg, heard_tone, longest_silence

SEAT_TONE_HZ = 1000.0


class CallerPhone(pj.Call):
    def __init__(self, account: pj.Account, sim: CallerSimulation) -> None:
        super().__init__(account)
        self.sim = sim

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        info = self.getInfo()
        self.sim.state_changed(info.state, info.lastStatusCode, info.lastReason)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.sim.media.media_active(self)
        self.sim.srtp = self.sim.srtp or srtp_active(self)

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        # Every request the gateway sent this caller in the dialog (re-INVITE, UPDATE, REFER, BYE,
        # INFO ...), as the caller itself saw it: the proof that a hand-off never touched its leg.
        if prm.e.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        tsx = prm.e.body.tsxState.tsx
        if tsx.role == pj.PJSIP_ROLE_UAS and tsx.state == pj.PJSIP_TSX_STATE_TRYING:
            self.sim.received.append(str(tsx.method))

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        self.sim.received.append("REFER(followed?)")
        prm.statusCode = 603


class CallerSimulation:
    def __init__(self, rt: PjsipRuntime, to: str, digits: list[str], gap: float, first_after: float,
                 stay: float, dtmf: str, tone_hz: float, record: Path, hangup_at: float | None) -> None:
        self.rt = rt
        self.to = to
        self.digits = digits
        self.gap = gap
        self.first_after = first_after
        self.stay = stay
        self.dtmf = dtmf
        self.hangup_at = hangup_at
        self.media = TonePhoneLeg(tone_hz, record)
        self.record = record
        self.call: CallerPhone | None = None
        self.started = time.monotonic()
        self.answered_at: float | None = None
        self.ended_at: float | None = None
        self.hung_up_by: str | None = None
        self.status_code = 0
        self.reason = ""
        self.sent: list[str] = []
        self.received: list[str] = []  # the methods of requests received in the call (after our INVITE)
        self.done = False
        self.srtp = False

    def start(self) -> None:
        assert self.rt.account is not None
        self.call = CallerPhone(self.rt.account, self)
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        try:
            self.call.makeCall(self.to, prm)
        except pj.Error as e:
            self.reason = e.reason
            self.done = True

    def state_changed(self, state: int, code: int, reason: str) -> None:
        if state == pj.PJSIP_INV_STATE_CONFIRMED and self.answered_at is None:
            self.answered_at = time.monotonic()
            self.status_code = 200
            t = self.first_after
            for d in self.digits:
                self.rt.call_later(t, lambda d=d: self._press(d))
                t += self.gap
            end = self.hangup_at if self.hangup_at is not None else t - self.gap + self.stay
            self.rt.call_later(max(end, 0.0), self._hang_up)
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ended_at = time.monotonic()
            if self.hung_up_by is None:
                self.hung_up_by = "remote"
            if self.answered_at is None:
                self.status_code = code
            self.reason = reason
            self.media.close()
            self.call = None  # drop inside DISCONNECTED
            self.rt.call_later(0.05, self._finish)

    def _press(self, digit: str) -> None:
        if self.call is None or self.hung_up_by is not None:
            return
        try:
            if self.dtmf == "info":
                prm = pj.CallSendDtmfParam()
                prm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
                prm.digits = digit
                prm.duration = 160
                self.call.sendDtmf(prm)
            else:
                self.call.dialDtmf(digit)
            self.sent.append(digit)
        except pj.Error:
            pass

    def _hang_up(self) -> None:
        if self.call is None or self.hung_up_by is not None:
            return
        self.hung_up_by = "caller"
        try:
            self.call.hangup(pj.CallOpParam(True))
        except pj.Error:
            pass

    def _finish(self) -> None:
        self.done = True

    def result(self) -> dict[str, object]:
        answered = self.answered_at is not None
        talk_end = self.ended_at or time.monotonic()
        out: dict[str, object] = {
            "to": self.to,
            "answered": answered,
            "seconds_to_answer": round(self.answered_at - self.started, 3) if answered else None,
            "duration_s": round(talk_end - self.answered_at, 2) if answered else 0.0,
            "digits_sent": "".join(self.sent),
            "hung_up_by": self.hung_up_by,
            "status_code": self.status_code,
            "reason": self.reason,
            "srtp": self.srtp,
            "received_requests": list(self.received),
        }
        if answered:
            out["seat_tone_s"] = heard_tone(self.record, SEAT_TONE_HZ)
            out["bridged"] = out["seat_tone_s"] >= 0.4  # type: ignore[operator]
            out["longest_silence_s"] = longest_silence(self.record, start_s=0.5)
            out["recording"] = str(self.record)
        else:
            out["bridged"] = False
        return out


def run_caller(*, to: str, digits: str, gap: float, stay: float, dtmf: str, tone_hz: float, record: Path | None,
               first_digit_after: float = 0.5, local_port: int = 0, hangup_at: float | None = None,
               timeout: float = 600.0, number: str = "caller", srtp: str = "off") -> int:
    keys = [k for k in digits.replace(",", " ").split() if k] if " " in digits.strip() or "," in digits else list(
        digits.strip())
    tmp = None
    if record is None:
        tmp = tempfile.TemporaryDirectory(prefix="h122-caller-")
        record = Path(tmp.name) / "heard.wav"
    rt = PjsipRuntime(PjsipConfig(sip_port=local_port, rtp_port=0, tcp=False, max_calls=2, identity=number,
                                  tls="transport=tls" in to.lower(), srtp=srtp))
    rt.start(pj.Account)
    sim = CallerSimulation(rt, to, keys, gap, first_digit_after, stay, dtmf, tone_hz, record, hangup_at)
    rt.call_soon(sim.start)
    deadline = time.monotonic() + timeout
    rt.run(stop=lambda: sim.done or time.monotonic() > deadline)
    if sim.call is not None:
        sim._hang_up()
        rt.pump(0.5)
    result = sim.result()
    rt.shutdown(lambda: 1 if sim.call is not None else 0)
    print(json.dumps(result, ensure_ascii=False), flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0 if result["answered"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_caller(to=sys.argv[1], digits="", gap=1, stay=3, dtmf="rfc4733", tone_hz=440, record=None))
