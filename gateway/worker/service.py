"""A media worker's SIP service: admits callers, runs commands, keeps every pjsua2 object alive
exactly as long as PJSIP needs it (PJSIP thread only).

Nothing a caller sends is used as it came: the caller's number is normalised before anything
sees it (identity headers count only from trusted sources: the front door, which removed them
from everyone but trunks, or a trunk itself), a caller who never ACKs our 200 OK is hung up
within seconds instead of holding a slot for PJSIP's 32 s, and a seat dial is checked before
PJSIP sees it, so the caller's input can never make a seat look unreachable.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pjsua2 as pj

from gateway import channel as ch
from gateway.pjsip import PjsipRuntime, header_value, request_uri_user, sip_user_of
from gateway.worker.legs import MonitorLeg, SeatLeg
from gateway.worker.session import HandoffSession

log = logging.getLogger("gateway.worker")


MAX_NUMBER_DIGITS = 32    # E.164 allows 15; room for prefixes, never room for a payload
MAX_RAW_CALLER = 200      # what is kept of the caller's own header, for the record

_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")


def new_call_id() -> str:
    # os.urandom is what secrets.token_hex reads; importing secrets would map OpenSSL's libcrypto
    # (~3 MB of RSS) into every worker for nothing (docs/PERFORMANCE.md, memory per held caller)
    return "c-" + os.urandom(8).hex()


def normalise_number(value: str) -> str:
    """A caller's number as the rest of the system may use it (seat-leg From URI, records, screen
    pop): the user part's digits with a leading + if it had one, at most 32 digits;
    ``anonymous`` when there are none.  ``<sip:1 2"x@h>`` gives ``12``."""
    user = sip_user_of(value).strip() if value else ""
    digits = "".join(c for c in user if c.isascii() and c.isdigit())[:MAX_NUMBER_DIGITS]
    if not digits:
        return "anonymous"
    return ("+" if user.startswith("+") else "") + digits


def raw_caller(value: str) -> str:
    """The caller's header as sent, printable ASCII only and truncated (never parsed or dialled)."""
    return _NOT_PRINTABLE.sub("?", value[:MAX_RAW_CALLER])


def source_ip(address: str) -> str:
    """``127.0.0.1:5060`` / ``[::1]:5060`` -> the IP alone."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    return address.rsplit(":", 1)[0] if address.count(":") == 1 else address


@dataclass(slots=True)
class WorkerConfig:
    worker_id: int
    service_numbers: tuple[str, ...]
    callers: int                  # callers admitted at once (each may need a seat leg)
    partial_dir: Path             # recordings are written here while the call lasts
    max_calls: int = 4            # PJSUA_MAX_CALLS of this build
    retry_after_s: int = 5
    answer_delay_s: float = 0.0   # ring this long before answering (lets a caller CANCEL)
    ack_timeout_s: float = 5.0    # a caller who never ACKs our 200 OK is hung up after this
    #: where identity headers (P-Asserted-Identity) are believed from: the front door (it removed
    #: them from all but trunks) and the trunks themselves; everyone else is known by From only
    identity_sources: tuple[str, ...] = ()

    def trusts(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(source_ip(address))
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(n, strict=False) for n in self.identity_sources)


class RefusedLeg(pj.Call):
    """An INVITE we answered with an error; kept referenced until PJSIP is done with it."""

    def __init__(self, account: pj.Account, call_index: int, service: WorkerService) -> None:
        super().__init__(account, call_index)
        self.service = service

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.service.refused.discard(self)


class GatewayAccount(pj.Account):
    def __init__(self, on_incoming: Callable[[pj.OnIncomingCallParam], None]) -> None:
        super().__init__()
        self._on_incoming = on_incoming

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self._on_incoming(prm)


class WorkerService:
    def __init__(self, rt: PjsipRuntime, config: WorkerConfig, send: Callable[[Any], None]) -> None:
        self.rt = rt
        self.config = config
        self.send = send
        self.sessions: dict[str, HandoffSession] = {}
        self.refused: set[RefusedLeg] = set()
        self.orphans: set[SeatLeg | MonitorLeg] = set()
        self._graveyard: list[Any] = []
        self._raw_callers: dict[str, str] = {}
        #: the control process is connected; while it restarts, calls in progress go on and new
        #: callers are refused (503 + Retry-After): nobody could route them
        self.control_up = True

    @property
    def account(self) -> pj.Account:
        assert self.rt.account is not None
        return self.rt.account

    def live_calls(self) -> int:
        """Callers, refused INVITEs, orphans and a conversation's third legs (a supervisor's, a warm
        transfer's consult leg: a caller admitted in the overlap would find no call for its seat).
        A caller's own seat leg is not counted: each admitted caller stands for two calls."""
        third = sum((s.consult is not None) + (s.monitor is not None) for s in self.sessions.values())
        return len(self.sessions) + len(self.refused) + len(self.orphans) + third

    def _room_for_caller(self) -> bool:
        """The front door sends at most ``callers`` callers, but it frees a slot when a BYE passes
        it, and the next INVITE can overtake that BYE on the way here.  So one caller more is
        admitted while PJSIP still has a call free; the overlap lasts until the BYE lands."""
        if len(self.sessions) < self.config.callers:
            return True
        return len(self.sessions) == self.config.callers and self.live_calls() < self.config.max_calls - 1

    def stats(self) -> ch.WorkerStats:
        """Live pjsua2 objects, so a leak (a player or recorder outliving its call) is visible."""
        return ch.WorkerStats(
            calls=self.live_calls(), callers=len(self.sessions), at=time.time(),
            players=sum(1 for s in self.sessions.values() if s.player is not None) + len(self._graveyard),
            recorders=sum(1 for s in self.sessions.values() if s.recording is not None),
        )

    def report_stats(self, every_s: float = 1.0) -> None:
        self.send(self.stats())
        self.rt.call_later(every_s, lambda: self.report_stats(every_s))

    # -- admission -----------------------------------------------------------------------------
    def on_incoming(self, prm: pj.OnIncomingCallParam) -> None:
        msg = prm.rdata.wholeMsg
        callee = request_uri_user(msg)
        asserted = header_value(msg, "P-Asserted-Identity") if self.config.trusts(prm.rdata.srcAddress) else None
        claimed = asserted or header_value(msg, "From") or header_value(msg, "f") or ""
        caller = normalise_number(claimed)
        if callee not in self.config.service_numbers:
            self._refuse(prm.callId, 404, "Not Found", callee, caller)
            return
        if not self._room_for_caller() or not self.control_up:
            self._refuse(prm.callId, 503, "Service Unavailable", callee, caller,
                         {"Retry-After": str(self.config.retry_after_s)})
            return
        call_id = new_call_id()
        session = HandoffSession(self, call_id, prm.callId)
        self.sessions[call_id] = session
        assert session.caller is not None
        sip_call_id = header_value(msg, "Call-ID") or header_value(msg, "i") or ""
        session.pending_answer = (caller, callee, sip_call_id)
        self._raw_callers[call_id] = raw_caller(claimed)
        if self.config.answer_delay_s <= 0:
            # Answer at once: a 180 right before the 200 tells the caller nothing, and a proxy's
            # parallel children may deliver it after the 200, which strict UACs treat as an error.
            self._answer(session)
            return
        try:
            session.caller.answer(_status(180))
        except pj.Error as e:
            log.error("answer_failed", extra={"call_id": call_id, "error": e.info()})
            return
        self.rt.call_later(self.config.answer_delay_s, lambda: self._answer(session))

    def _answer(self, session: HandoffSession) -> None:
        """200 OK, recording from this moment, and the control process learns of the call."""
        if session.ended or session.caller is None or session.pending_answer is None:
            return
        caller, callee, sip_call_id = session.pending_answer
        session.pending_answer = None
        call_id = session.call_id
        session.start_recording(self.config.partial_dir / f"{call_id}.wav")
        try:
            session.caller.answer(_status(200))
        except pj.Error as e:
            log.error("answer_failed", extra={"call_id": call_id, "error": e.info()})
            return
        session.announced = True
        session.identity = (caller, callee, sip_call_id, time.time())
        raw = self._raw_callers.pop(call_id, None)
        log.info("call_answered", extra={"call_id": call_id, "caller": caller, "callee": callee,
                                         "sip_call_id": sip_call_id})
        self.send(ch.CallStarted(
            call_id=call_id, caller=caller, callee=callee, sip_call_id=sip_call_id, at=time.time(),
            recording_path=str(session.recording_path) if session.recording_path else None,
            recording_error=session.recording_error, caller_raw=raw,
        ))
        self.rt.call_later(self.config.ack_timeout_s, lambda: self._check_acked(session))

    def _check_acked(self, session: HandoffSession) -> None:
        """PJSIP waits 32 s (timer H) for the ACK of a 200 OK; a flood of INVITEs that never ACK
        would hold every slot that long.  A caller who has not ACKed by now is not there: BYE."""
        caller = session.caller
        if session.ended or caller is None:
            return
        try:
            state = caller.getInfo().state
        except pj.Error:
            return
        if state == pj.PJSIP_INV_STATE_CONNECTING:
            log.warning("caller_never_acked", extra={"call_id": session.call_id,
                                                     "after_s": self.config.ack_timeout_s})
            session.hangup()

    def _refuse(self, call_index: int, code: int, reason: str, callee: str, caller: str,
                headers: dict[str, str] | None = None) -> None:
        leg = RefusedLeg(self.account, call_index, self)
        self.refused.add(leg)
        prm = _status(code)
        for k, v in (headers or {}).items():
            h = pj.SipHeader()
            h.hName = k
            h.hValue = v
            prm.txOption.headers.append(h)
        try:
            leg.hangup(prm)
        except pj.Error:
            self.refused.discard(leg)
        self.send(ch.CallRejected(code=code, reason=reason, callee=callee, caller=caller))

    # -- the control process restarting (gateway.supervisor) ----------------------------------------
    def control_lost(self) -> list[ch.LiveCall]:
        """The control socket closed: calls go on (a bridged conversation flows in this worker's
        bridge, a waiting caller hears their prompt again), new callers are refused, and a warm
        transfer under way is cancelled (the caller back with seat 1: nobody could complete it).
        Returns the calls as they are now (``gateway.worker.gap``: what happens to them from here
        on is kept for the next control process); then a seat leg still ringing is cancelled (its
        answer could not be routed; the caller keeps their place and is offered again once the
        control process is back, the cancel's ``SeatFailed`` is replayed and found stale)."""
        self.control_up = False
        for session in list(self.sessions.values()):
            if session.pending_answer is not None:
                session.hangup(503)  # rang while the control died: refused like any new caller
            elif session.consult is not None:
                session.drop_consult("control restart")
        snapshot = self.live_call_report()
        for session in list(self.sessions.values()):
            if session.pending_answer is None and session.seat_leg_id is not None and not session.bridged:
                session.cancel_seat(session.seat_leg_id, "control restart")
        return snapshot

    def live_call_report(self) -> list[ch.LiveCall]:
        """The calls this worker carries, for the hello to a (restarted) control process."""
        out = []
        for s in self.sessions.values():
            if not s.announced or s.ended or s.identity is None:
                continue
            caller, callee, sip_call_id, at = s.identity
            out.append(ch.LiveCall(
                call_id=s.call_id, caller=caller, callee=callee, sip_call_id=sip_call_id, started_at=at,
                recording_path=str(s.recording_path) if s.recording_path else None,
                recording_error=s.recording_error, seat_leg_id=s.seat_leg_id,
                seat_state=s.seat_state.value if s.seat_state is not None else None,
                seat_id=s.seat_id if s.seat_state is not None else None, on_hold=s.on_hold,
                was_bridged=s.was_bridged, last_seat_leg=s.last_seat_leg, last_consult_leg=s.last_consult_leg))
        return out

    # -- commands from the control process -----------------------------------------------------
    def handle(self, cmd: Any) -> None:
        if isinstance(cmd, ch.Shutdown):
            self.rt.request_stop()
            return
        session = self.sessions.get(cmd.call_id)
        if session is None:
            if isinstance(cmd, ch.DialSeat):
                self.send(ch.SeatFailed(call_id=cmd.call_id, leg_id=cmd.leg_id, code=0,
                                        reason="caller gone", cancelled=True, at=time.time()))
            elif isinstance(cmd, ch.DialConsult):
                self.send(ch.ConsultEnded(call_id=cmd.call_id, leg_id=cmd.leg_id, outcome="refused",
                                          reason="caller gone", at=time.time()))
            return
        if isinstance(cmd, ch.Play):
            session.play(cmd.files, cmd.token)
        elif isinstance(cmd, ch.StopPlayback):
            session.stop_playback()
        elif isinstance(cmd, ch.DialSeat):
            checked = self._checked_dial(cmd)
            if checked is not None:
                session.dial_seat(checked)
        elif isinstance(cmd, ch.CancelSeat):
            session.cancel_seat(cmd.leg_id, cmd.reason)
        elif isinstance(cmd, ch.DialMonitor):
            if self.rt.ep is not None and self.rt.ep.utilVerifySipUri(cmd.uri) != 0:
                self.send(ch.MonitorEnded(call_id=cmd.call_id, leg_id=cmd.leg_id, code=0, at=time.time(),
                                          reason=f"supervisor URI not valid: {cmd.uri[:80]!r}"))
            else:
                session.dial_monitor(cmd)
        elif isinstance(cmd, ch.EndMonitor):
            session.end_monitor(cmd.leg_id)
        elif isinstance(cmd, ch.HoldSeat):
            session.hold_seat(cmd.leg_id, cmd.on, cmd.files, cmd.token)
        elif isinstance(cmd, ch.ReleaseSeat):
            session.release_seat(cmd.leg_id, cmd.reason)
        elif isinstance(cmd, ch.DialConsult):
            checked = self._checked_dial(cmd)
            if checked is not None:
                session.dial_consult(checked)
        elif isinstance(cmd, ch.EndConsult):
            session.end_consult(cmd)
        elif isinstance(cmd, ch.Hangup):
            session.hangup(cmd.code)

    def _checked_dial(self, cmd: Any) -> Any:
        """What PJSIP would refuse, caught before it can count against the seat: an invalid
        caller identity is dropped (the seat is still called, as from the gateway), header values
        that could break the message are left out, and a seat URI PJSIP cannot parse is reported
        as the gateway's own failure (``local``), which never marks the seat unreachable."""
        ep = self.rt.ep
        assert ep is not None
        if ep.utilVerifySipUri(cmd.uri) != 0:
            why = f"seat URI not valid: {cmd.uri[:80]!r}"
            if isinstance(cmd, ch.DialConsult):
                self.send(ch.ConsultEnded(call_id=cmd.call_id, leg_id=cmd.leg_id, outcome="refused", reason=why,
                                          at=time.time()))
            else:
                self.send(ch.SeatFailed(call_id=cmd.call_id, leg_id=cmd.leg_id, code=0, local=True,
                                        reason=f"local_error: {why}", at=time.time()))
            return None
        update: dict[str, Any] = {}
        headers = {k: v for k, v in cmd.headers.items() if _safe_header(k, v)}
        identity_ok = cmd.from_uri is None or ep.utilVerifySipUri(cmd.from_uri) == 0
        pai = headers.get("P-Asserted-Identity")
        if pai is not None and not (pai.startswith("<") and pai.endswith(">")
                                    and ep.utilVerifySipUri(pai[1:-1]) == 0):
            identity_ok = False
        if not identity_ok:
            log.warning("seat_dial_identity_dropped", extra={"call_id": cmd.call_id,
                                                             "from_uri": (cmd.from_uri or "")[:80]})
            update["from_uri"] = None
            headers.pop("P-Asserted-Identity", None)
        if headers != cmd.headers:
            update["headers"] = headers
        return cmd.model_copy(update=update) if update else cmd

    # -- object lifetimes ----------------------------------------------------------------------
    def session_ended(self, session: HandoffSession) -> None:
        self.sessions.pop(session.call_id, None)
        self._raw_callers.pop(session.call_id, None)

    def orphan_seat(self, leg: SeatLeg | MonitorLeg) -> None:
        """A seat (or supervisor) leg whose caller left: end it, keep it referenced until DISCONNECTED."""
        self.orphans.add(leg)
        with contextlib.suppress(pj.Error):
            leg.hangup(pj.CallOpParam(True))

    def forget_orphan(self, leg: SeatLeg | MonitorLeg) -> None:
        self.orphans.discard(leg)

    def bury(self, obj: Any) -> None:
        """Destroy a media object after the current callback has returned."""
        self._graveyard.append(obj)
        if len(self._graveyard) == 1:
            self.rt.call_soon(self._graveyard.clear)

    def hangup_all(self) -> None:
        for session in list(self.sessions.values()):
            session.hangup()


def _safe_header(name: str, value: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9-]{1,64}", name)) and len(value) <= 512 and not _NOT_PRINTABLE.search(value)


def _status(code: int) -> pj.CallOpParam:
    prm = pj.CallOpParam(True)
    prm.statusCode = code
    return prm
