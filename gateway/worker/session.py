"""One caller's time in a media worker: the caller leg, at most one seat leg, prompts, recording.

Everything here runs on the PJSIP thread.  The session obeys the control process's commands and
reports wire events; the rules it enforces on its own are the product's promises: the caller leg
is only ever ended by the caller, by the seat's normal BYE after a conversation, or by shutdown,
and a failing seat leg never touches it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pjsua2 as pj

from gateway import channel as ch
from gateway.worker.legs import CallerLeg, MonitorLeg, SeatLeg, SeatLegState, active_audio, seat_leg_move
from gateway.worker.media import CallRecording, PromptPlayer
from gateway.worker.watchdog import SeatMediaWatchdog


def outgoing_call_params(headers: dict[str, str], from_uri: str | None = None) -> pj.CallOpParam:
    """An INVITE the worker sends (seat, consult and supervisor legs): audio only, with the
    gateway's ``X-Handoff-*`` headers and, for a seat, the caller's identity as From."""
    prm = pj.CallOpParam(True)
    prm.opt.audioCount = 1
    prm.opt.videoCount = 0
    for name, value in headers.items():
        h = pj.SipHeader()
        h.hName = name
        h.hValue = value
        prm.txOption.headers.append(h)
    if from_uri:
        prm.txOption.localUri = from_uri
    return prm


class Loop(Protocol):
    """The PJSIP thread's loop (``gateway.pjsip.PjsipRuntime``)."""

    def call_later(self, delay: float, fn: Callable[[], Any]) -> Any: ...
    def call_soon(self, fn: Callable[[], Any]) -> Any: ...


class SessionHost(Protocol):
    """What a session needs from its worker (``gateway.worker.service.WorkerService``)."""

    rt: Loop
    send: Callable[[Any], None]

    @property
    def account(self) -> pj.Account: ...
    def session_ended(self, session: HandoffSession) -> None: ...
    def orphan_seat(self, leg: SeatLeg | MonitorLeg) -> None: ...
    def forget_orphan(self, leg: SeatLeg | MonitorLeg) -> None: ...
    def bury(self, obj: Any) -> None: ...

log = logging.getLogger("gateway.worker.session")

PJ_ETOOMANY = 70010  # pj_status_t of "too many objects" (PJSUA_MAX_CALLS reached)


class HandoffSession:
    def __init__(self, service: SessionHost, call_id: str, caller_index: int) -> None:
        self.service = service
        self.call_id = call_id
        self.caller: CallerLeg | None = CallerLeg(service.account, caller_index, self)
        self.seat: SeatLeg | None = None
        self.player: PromptPlayer | None = None
        self.pending_play: tuple[list[str], int] | None = None
        self.recording: CallRecording | None = None
        self.recording_path: Path | None = None
        self.recording_error: str | None = None
        self.seat_state: SeatLegState | None = None  # the current seat leg's state (None: no leg)
        self.seat_leg_id: str | None = None
        self.was_bridged = False  # a seat talked to this caller at some point (for CallEnded)
        self.ended = False
        self.ended_by: str | None = None
        self.pending_answer: tuple[str, str, str] | None = None  # ringing, not yet answered
        self.announced = False  # the control process knows this call (CallStarted sent)
        self.monitor: MonitorLeg | None = None  # a supervisor listening, whispering or barging
        self.on_hold = False  # the seat put the caller on hold: no audio between them, hold audio to the caller
        self.consult: SeatLeg | None = None  # warm transfer: the leg to seat 2 (a third leg of this call)
        self.consult_answered = False
        self.seat_id: str | None = None  # the seat the current leg dials (told by the control process)
        self.identity: tuple[str, str, str, float] | None = None  # caller, callee, SIP Call-ID, answered at
        self.playing: tuple[list[str], int] | None = None  # what the caller hears, replayed while no control
        self.seat_media_timeout_s = 0.0  # the current seat leg's media watchdog (DialSeat.media_timeout_s)
        self.last_seat_leg: str | None = None     # the last seat leg dialled (``LiveCall.last_seat_leg``)
        self.last_consult_leg: str | None = None  # the last consult leg dialled

    # -- the seat leg's states -------------------------------------------------------------------
    @property
    def bridged(self) -> bool:
        return self.seat_state is SeatLegState.BRIDGED

    def _seat_to(self, state: SeatLegState, leg_id: str) -> bool:
        if not seat_leg_move(self.call_id, leg_id, self.seat_state, state):
            return False
        self.seat_state = None if state is SeatLegState.ENDED else state
        self.seat_leg_id = None if state is SeatLegState.ENDED else leg_id
        if state is SeatLegState.BRIDGED:
            self.was_bridged = True
        return True

    # -- set-up --------------------------------------------------------------------------------
    def start_recording(self, path: Path) -> None:
        try:
            self.recording = CallRecording(path)
            self.recording_path = path
        except (pj.Error, OSError) as e:
            # Disk full or unwritable: the call goes on without a recording; it is flagged.
            self.recording = None
            self.recording_error = e.info() if isinstance(e, pj.Error) else str(e)
            log.error("recording_failed", extra={"call_id": self.call_id, "error": self.recording_error})

    # -- caller leg ----------------------------------------------------------------------------
    def caller_media_changed(self) -> None:
        if self.caller is None:
            return
        am = active_audio(self.caller)
        if am is None:
            return  # on hold: the bridge ports come back when media is active again
        if self.recording is not None:
            self.recording.feed(am)
        if self.pending_play is not None:
            files, token = self.pending_play
            self.pending_play = None
            self.play(files, token)
        elif self.player is not None:
            self.player.startTransmit(am)
        if self.bridged and self.seat is not None and not self.on_hold:
            self._connect_seat(self.seat)

    def digit(self, digit: str, method: str) -> None:
        # Only report: for SIP INFO the callback runs before the INFO's 200 OK is sent, so any
        # action is taken later by the control process.
        self.service.send(ch.Dtmf(call_id=self.call_id, digit=digit, method=method, at=time.time()))

    def caller_disconnected(self, code: int, reason: str) -> None:
        if self.ended:
            return
        self.ended = True
        ended_by = self.ended_by or "caller"
        self.caller = None  # drop the Call object inside its DISCONNECTED callback
        if self.seat is not None:
            self.service.orphan_seat(self.seat)
            self.seat = None
        if self.consult is not None:
            consult, self.consult = self.consult, None
            consult.cancelled = "caller gone"
            self.service.orphan_seat(consult)
        if self.monitor is not None:
            self.monitor.ending = "caller gone"
            self.service.orphan_seat(self.monitor)
            self.monitor = None
        self._drop_player()
        recording = self.recording
        if recording is not None:
            recording.close()
            self.recording = None
        self.service.session_ended(self)
        if not self.announced:
            # Cancelled while ringing: the control process never heard of this call.
            self.service.send(ch.CallRejected(code=487, reason="cancelled before answer", callee="", caller=""))
            return
        ended = ch.CallEnded(
            call_id=self.call_id, ended_by=ended_by, reason=reason, code=code, at=time.time(),
            bridged=self.was_bridged, recording_path=str(self.recording_path) if self.recording_path else None,
            recording_error=self.recording_error,
        )
        self._announce_end(ended, recording, deadline=time.monotonic() + 1.0)

    def _announce_end(self, ended: ch.CallEnded, recording: CallRecording | None, deadline: float) -> None:
        """Report the end once the recording's header is final, so the control process seals a
        complete file (the WAV writer closes one media frame after its release)."""
        if recording is None or recording.header_final() or time.monotonic() > deadline:
            self.service.send(ended)
            return
        self.service.rt.call_later(0.02, lambda: self._announce_end(ended, recording, deadline))

    # -- prompts -------------------------------------------------------------------------------
    def play(self, files: list[str], token: int) -> None:
        self._drop_player()
        self.playing = (files, token)
        am = active_audio(self.caller) if self.caller is not None else None
        if am is None:
            self.pending_play = (files, token)
            return
        try:
            player = PromptPlayer(files, token, self._prompt_ended)
        except pj.Error as e:
            self.service.send(ch.CommandFailed(call_id=self.call_id, command="play", error=e.info()))
            self.service.send(ch.PromptFinished(call_id=self.call_id, token=token, at=time.time()))
            return
        self.player = player
        player.startTransmit(am)
        if self.recording is not None:
            self.recording.feed(player)

    def _prompt_ended(self, token: int) -> None:
        # Called from the player's media callback: defer everything to the loop.
        self.service.rt.call_soon(lambda: self._finish_prompt(token))

    def _finish_prompt(self, token: int) -> None:
        if self.player is not None and self.player.token == token and not self.ended:
            self._drop_player()
            if not getattr(self.service, "control_up", True) and self.playing is not None:
                # no control process to say what comes next (it is restarting): the caller hears
                # the same prompt again (hold audio), never silence, until it is back
                self.play(*self.playing)
                return
            self.service.send(ch.PromptFinished(call_id=self.call_id, token=token, at=time.time()))

    def stop_playback(self) -> None:
        self.pending_play = None
        self._drop_player()

    def _drop_player(self) -> None:
        if self.player is not None:
            self.service.bury(self.player)
            self.player = None

    # -- seat leg ------------------------------------------------------------------------------
    def dial_seat(self, cmd: ch.DialSeat, deadline: float | None = None) -> None:
        if self.ended or self.caller is None:
            self.service.send(ch.SeatFailed(call_id=self.call_id, leg_id=cmd.leg_id, code=0,
                                            reason="caller gone", cancelled=True, at=time.time()))
            return
        if self.seat is not None or (self.seat_state is not None and self.seat_state is not SeatLegState.RETRYING):
            self.service.send(ch.CommandFailed(call_id=self.call_id, command="dial_seat",
                                               error="a seat leg already exists"))
            return
        self.last_seat_leg = cmd.leg_id
        leg = SeatLeg(self.service.account, self, cmd.leg_id)
        prm = outgoing_call_params(cmd.headers, cmd.from_uri)
        try:
            leg.makeCall(cmd.uri, prm)
        except pj.Error as e:
            until = deadline if deadline is not None else time.monotonic() + 5.0
            if e.status == PJ_ETOOMANY and time.monotonic() < until:
                # Every PJSIP call is taken for a moment (a caller admitted while another's BYE
                # was in flight): not the seat's fault, try again shortly unless cancelled.
                self._seat_to(SeatLegState.RETRYING, cmd.leg_id)
                self.service.rt.call_later(0.1, lambda: self._retry_dial(cmd, until))
                return
            # PJSIP refused to dial: the gateway's own fault, never the seat's (journey.failures)
            if self.seat_state is not None:
                self._seat_to(SeatLegState.ENDED, cmd.leg_id)
            self.service.send(ch.SeatFailed(call_id=self.call_id, leg_id=cmd.leg_id, code=0, local=True,
                                            reason=f"local_error: dial failed: {e.info()}", at=time.time()))
            return
        self._seat_to(SeatLegState.DIALING, cmd.leg_id)
        self.seat = leg
        self.seat_id = cmd.seat_id
        self.seat_media_timeout_s = cmd.media_timeout_s
        leg_id = cmd.leg_id
        self.service.rt.call_later(cmd.timeout_s, lambda: self.cancel_seat(leg_id, "worker ring timeout"))

    def _retry_dial(self, cmd: ch.DialSeat, deadline: float) -> None:
        if self.seat_state is SeatLegState.RETRYING and self.seat_leg_id == cmd.leg_id:
            self.dial_seat(cmd, deadline)

    def cancel_seat(self, leg_id: str, reason: str) -> None:
        if self.seat_state is SeatLegState.RETRYING and self.seat_leg_id == leg_id:
            self._seat_to(SeatLegState.ENDED, leg_id)
            self.service.send(ch.SeatFailed(call_id=self.call_id, leg_id=leg_id, code=0, reason=reason,
                                            cancelled=True, at=time.time()))
            return
        seat = self.seat
        if seat is None or seat.leg_id != leg_id or self.seat_state not in (SeatLegState.DIALING,
                                                                             SeatLegState.RINGING):
            return  # already bridged, cancelling or gone: a late timer or a repeated command
        self._seat_to(SeatLegState.CANCELLING, leg_id)
        seat.cancelled = reason
        with contextlib.suppress(pj.Error):
            seat.hangup(pj.CallOpParam(True))

    def release_seat(self, leg_id: str, reason: str) -> None:
        """A transfer: end the bridged seat leg, keep the caller.  The leg is hung up as an orphan
        (its DISCONNECTED is not this session's business any more), so the seat's BYE answer can
        never be mistaken for the end of the conversation; the caller's leg and recording are not
        touched, and the next ``play`` gives the caller hold audio."""
        seat = self.seat
        if seat is None or seat.leg_id != leg_id or not self.bridged:
            self.service.send(ch.CommandFailed(call_id=self.call_id, command="release_seat",
                                               error=f"no bridged seat leg {leg_id}"))
            return
        self._seat_to(SeatLegState.ENDED, leg_id)
        self.seat = None
        self.on_hold = False
        seat.cancelled = reason
        self.service.orphan_seat(seat)

    # -- supervisor monitoring -------------------------------------------------------------------
    def dial_monitor(self, cmd: ch.DialMonitor) -> None:
        now = time.time()
        if self.ended or self.caller is None or self.monitor is not None:
            why = "a supervisor is already on this call" if self.monitor is not None else "caller gone"
            self.service.send(ch.MonitorEnded(call_id=self.call_id, leg_id=cmd.leg_id, code=0, reason=why, at=now))
            return
        leg = MonitorLeg(self.service.account, self, cmd.leg_id, cmd.mode)
        prm = outgoing_call_params(cmd.headers)
        try:
            leg.makeCall(cmd.uri, prm)
        except pj.Error as e:
            why = "no free call in this worker" if e.status == PJ_ETOOMANY else f"dial failed: {e.info()}"
            self.service.send(ch.MonitorEnded(call_id=self.call_id, leg_id=cmd.leg_id, code=0, reason=why, at=now))
            return
        self.monitor = leg
        self.service.rt.call_later(cmd.timeout_s, lambda: self._monitor_unanswered(leg))

    def _monitor_unanswered(self, leg: MonitorLeg) -> None:
        if leg is self.monitor and not leg.answered:
            self.end_monitor(leg.leg_id, "no answer")

    def end_monitor(self, leg_id: str, why: str = "ended by the gateway") -> None:
        leg = self.monitor
        if leg is None or leg.leg_id != leg_id:
            return
        leg.ending = why
        with contextlib.suppress(pj.Error):
            leg.hangup(pj.CallOpParam(True))

    def monitor_media_changed(self, leg: MonitorLeg) -> None:
        if leg is not self.monitor or self.ended:
            return
        if self._connect_monitor(leg) and not leg.answered:
            leg.answered = True
            self.service.send(ch.MonitorAnswered(call_id=self.call_id, leg_id=leg.leg_id, mode=leg.mode,
                                                 at=time.time()))

    def _connect_monitor(self, leg: MonitorLeg) -> bool:
        """Who hears whom: the supervisor hears caller and seat; whisper adds supervisor -> seat,
        barge supervisor -> seat and caller.  What the supervisor says is recorded when heard."""
        mon = active_audio(leg)
        caller_am = active_audio(self.caller) if self.caller is not None else None
        if mon is None or caller_am is None:
            return False
        seat_am = active_audio(self.seat) if self.seat is not None and self.bridged else None
        caller_am.startTransmit(mon)
        if seat_am is not None:
            seat_am.startTransmit(mon)
            if leg.mode in ("whisper", "barge"):
                mon.startTransmit(seat_am)
        if leg.mode == "barge":
            mon.startTransmit(caller_am)
        if leg.mode != "listen" and self.recording is not None:
            self.recording.feed(mon)
        return True

    def monitor_disconnected(self, leg: MonitorLeg, code: int, reason: str) -> None:
        if leg is not self.monitor:
            self.service.forget_orphan(leg)
            if leg.ending == "caller gone":
                self.service.send(ch.MonitorEnded(call_id=self.call_id, leg_id=leg.leg_id, code=code,
                                                  reason=leg.ending, answered=leg.answered, at=time.time()))
            return
        self.monitor = None  # drop inside DISCONNECTED
        self.service.send(ch.MonitorEnded(call_id=self.call_id, leg_id=leg.leg_id, code=code,
                                          reason=leg.ending or reason, answered=leg.answered, at=time.time()))

    def hold_seat(self, leg_id: str, on: bool, files: list[str], token: int) -> None:
        """Hold or resume in the bridge (see ``ch.HoldSeat``)."""
        seat = self.seat
        if seat is None or seat.leg_id != leg_id or not self.bridged:
            self.service.send(ch.CommandFailed(call_id=self.call_id, command="hold_seat",
                                               error=f"no bridged seat leg {leg_id}"))
            return
        seat_am = active_audio(seat)
        caller_am = active_audio(self.caller) if self.caller is not None else None
        if on:
            self.on_hold = True
            for a, b in ((seat_am, caller_am), (caller_am, seat_am)):
                if a is not None and b is not None:
                    with contextlib.suppress(pj.Error):
                        a.stopTransmit(b)
            self.play(files, token)
        else:
            self.on_hold = False
            self.stop_playback()
            self._connect_seat(seat)

    def seat_referred(self, leg: SeatLeg, refer_to: str) -> None:
        if leg is not self.seat or not self.bridged or self.ended:
            return
        target = refer_to.strip("<>").split(":", 1)[-1].split("@", 1)[0].split(";", 1)[0]
        self.service.send(ch.SeatReferred(call_id=self.call_id, leg_id=leg.leg_id, target=target[:64],
                                          at=time.time()))

    def seat_ringing(self, leg: SeatLeg) -> None:
        if leg is self.seat and not self.ended and self.seat_state is SeatLegState.DIALING \
                and self._seat_to(SeatLegState.RINGING, leg.leg_id):
            self.service.send(ch.SeatRinging(call_id=self.call_id, leg_id=leg.leg_id, at=time.time()))

    def seat_media_changed(self, leg: SeatLeg) -> None:
        if leg is self.consult:
            self._consult_media_changed(leg)
            return
        if leg is not self.seat or self.ended or self.seat_state is SeatLegState.CANCELLING:
            return  # a seat answering a leg we are hanging up is not bridged
        if self.on_hold:
            return  # the seat's media changed while the caller is on hold: they stay apart
        if not self._connect_seat(leg):
            return
        if not self.bridged and self._seat_to(SeatLegState.BRIDGED, leg.leg_id):
            now = time.time()
            self.service.send(ch.SeatAnswered(call_id=self.call_id, leg_id=leg.leg_id, at=now,
                                              answered_at=leg.answered_at or now))
            self._watch_seat_media(leg)

    # -- the seat's network vanished (gateway.worker.watchdog) -------------------------------------
    def _watch_seat_media(self, leg: SeatLeg) -> None:
        if self.seat_media_timeout_s <= 0:
            return
        SeatMediaWatchdog(self.service.rt, leg, self.seat_media_timeout_s,
                          on_lost=lambda silent_s: self.seat_media_lost(leg, silent_s),
                          watching=lambda: leg is self.seat and self.bridged and not self.ended).start()

    def seat_media_lost(self, leg: SeatLeg, silent_s: float) -> None:
        """No RTP from the bridged seat for ``silent_s``: the leg is released as in a transfer (BYE,
        best effort, as an orphan: a vanished phone never answers it, and its DISCONNECTED is not
        this session's business), the caller's leg and recording are not touched, and the control
        process hears ``seat_media_timeout`` at once (it re-queues the caller and plays hold audio)."""
        if leg is not self.seat or not self.bridged or self.ended:
            return
        reason = f"seat_media_timeout: no RTP from the seat for {silent_s:.1f} s"
        log.warning("seat_media_timeout", extra={"call_id": self.call_id, "leg_id": leg.leg_id,
                                                 "silent_s": round(silent_s, 1)})
        self._seat_to(SeatLegState.ENDED, leg.leg_id)
        self.seat = None
        self.on_hold = False
        leg.cancelled = "seat_media_timeout"
        self.service.orphan_seat(leg)
        self.service.send(ch.SeatFailed(call_id=self.call_id, leg_id=leg.leg_id, code=0, reason=reason,
                                        at=time.time()))

    def _connect_seat(self, leg: SeatLeg) -> bool:
        seat_am = active_audio(leg)
        caller_am = active_audio(self.caller) if self.caller is not None else None
        if seat_am is None or caller_am is None:
            return False
        self.pending_play = None
        self._drop_player()
        seat_am.startTransmit(caller_am)
        caller_am.startTransmit(seat_am)
        if self.recording is not None:
            self.recording.feed(seat_am)
        if self.monitor is not None:
            self._connect_monitor(self.monitor)
        return True

    def seat_disconnected(self, leg: SeatLeg, code: int, reason: str) -> None:
        if leg is self.consult:
            self._consult_disconnected(leg, code, reason)
            return
        if leg is not self.seat:
            self.service.forget_orphan(leg)
            return
        self.seat = None  # drop inside DISCONNECTED
        self.on_hold = False
        was_bridged = self.bridged
        self._seat_to(SeatLegState.ENDED, leg.leg_id)
        if self.ended:
            return
        now = time.time()
        if was_bridged and self.consult is not None:
            self._seat_left_consult(code, reason)
            return
        if was_bridged and (code in (0, 200) or 200 <= code < 300):
            # The seat's normal BYE after the conversation ends the call for both sides.
            self.ended_by = "seat"
            if self.caller is not None:
                with contextlib.suppress(pj.Error):
                    self.caller.hangup(pj.CallOpParam(True))
            return
        # Otherwise the seat leg failed (before the bridge, or mid-call: the caller stays and the
        # control process re-queues).
        cancelled = leg.cancelled
        self.service.send(ch.SeatFailed(call_id=self.call_id, leg_id=leg.leg_id, code=code,
                                        reason=cancelled or reason, cancelled=bool(cancelled), at=now))

    # -- warm transfer: the consult leg (docs/SEATS.md) ------------------------------------------
    def dial_consult(self, cmd: ch.DialConsult) -> None:
        """Seat 2 as a third leg of this call: the caller is put on hold (hold audio, as ``hold_seat``;
        no re-INVITE) only once PJSIP has taken the INVITE, so a refusal changes nothing."""
        why = None
        if self.ended or self.caller is None:
            why = "caller gone"
        elif self.seat is None or not self.bridged:
            why = "no seat is talking to the caller"
        elif self.consult is not None:
            why = "a consult is already under way"
        self.last_consult_leg = cmd.leg_id
        if why is None:
            leg = SeatLeg(self.service.account, self, cmd.leg_id)
            prm = outgoing_call_params(cmd.headers, cmd.from_uri)
            try:
                leg.makeCall(cmd.uri, prm)
            except pj.Error as e:
                why = "no free call in this worker" if e.status == PJ_ETOOMANY else f"dial failed: {e.info()}"
        if why is not None:
            self.service.send(ch.ConsultEnded(call_id=self.call_id, leg_id=cmd.leg_id, outcome="refused",
                                              reason=why, at=time.time()))
            return
        self.consult, self.consult_answered = leg, False
        self._hold_caller(cmd.files, cmd.token)
        log.info("consult_dialing", extra={"call_id": self.call_id, "leg_id": cmd.leg_id})
        self.service.send(ch.ConsultDialing(call_id=self.call_id, leg_id=cmd.leg_id, at=time.time()))
        self.service.rt.call_later(cmd.timeout_s, lambda: self._consult_unanswered(leg))

    def _hold_caller(self, files: list[str], token: int) -> None:
        seat_am = active_audio(self.seat) if self.seat is not None else None
        caller_am = active_audio(self.caller) if self.caller is not None else None
        self.on_hold = True
        for a, b in ((seat_am, caller_am), (caller_am, seat_am)):
            if a is not None and b is not None:
                with contextlib.suppress(pj.Error):
                    a.stopTransmit(b)
        self.play(files, token)

    def _back_to_seat(self) -> None:
        """The consult is over without a hand-over: caller and seat 1 hear each other again."""
        self.on_hold = False
        self.stop_playback()
        if self.seat is not None and self.bridged:
            self._connect_seat(self.seat)

    def _consult_unanswered(self, leg: SeatLeg) -> None:
        if leg is self.consult and not self.consult_answered:
            leg.cancelled = "no answer"
            with contextlib.suppress(pj.Error):
                leg.hangup(pj.CallOpParam(True))

    def _consult_media_changed(self, leg: SeatLeg) -> None:
        if self.ended or leg.cancelled:
            return
        am = active_audio(leg)
        seat_am = active_audio(self.seat) if self.seat is not None else None
        if am is None or seat_am is None:
            return
        am.startTransmit(seat_am)
        seat_am.startTransmit(am)
        if self.recording is not None:
            self.recording.feed(am)
        if not self.consult_answered:
            self.consult_answered = True
            log.info("consult_answered", extra={"call_id": self.call_id, "leg_id": leg.leg_id})
            self.service.send(ch.ConsultAnswered(call_id=self.call_id, leg_id=leg.leg_id, at=time.time()))

    def _consult_disconnected(self, leg: SeatLeg, code: int, reason: str) -> None:
        """Seat 2 did not answer, refused or hung up: the caller is back with seat 1."""
        answered = self.consult_answered
        self.consult, self.consult_answered = None, False  # drop inside DISCONNECTED
        if self.ended:
            return
        self._back_to_seat()
        self.service.send(ch.ConsultEnded(call_id=self.call_id, leg_id=leg.leg_id, outcome="failed", code=code,
                                          reason=leg.cancelled or reason, answered=answered, at=time.time()))

    def end_consult(self, cmd: ch.EndConsult) -> None:
        leg = self.consult
        if leg is None or leg.leg_id != cmd.leg_id:
            self.service.send(ch.CommandFailed(call_id=self.call_id, command="end_consult",
                                               error=f"no consult leg {cmd.leg_id}"))
            return
        if cmd.complete:
            if not self.consult_answered or self.seat is None:
                self.service.send(ch.CommandFailed(call_id=self.call_id, command="end_consult",
                                                   error="seat 2 has not answered"))
                return
            self._hand_over(cmd.reason or "completed")
            return
        answered = self.consult_answered
        self.consult, self.consult_answered = None, False
        leg.cancelled = cmd.reason or "cancelled"
        self.service.orphan_seat(leg)
        self._back_to_seat()
        self.service.send(ch.ConsultEnded(call_id=self.call_id, leg_id=leg.leg_id, outcome="cancelled",
                                          reason=leg.cancelled, answered=answered, at=time.time()))

    def drop_consult(self, reason: str) -> bool:
        """No control process (it died): a warm transfer under way is cancelled at once.  Seat 2's
        leg is ended (CANCEL if ringing, BYE if answered), the caller is back with seat 1.  Nobody
        could complete it (the agents' complete/cancel go through the control process), and the
        caller must not wait on hold for a control process that may take seconds to come back.
        The control process hears nothing of it (it is gone): its successor finds the call talking
        to seat 1 and releases seat 2's reservation (``routing.service``)."""
        leg = self.consult
        if leg is None:
            return False
        self.consult, self.consult_answered = None, False
        leg.cancelled = reason
        self.service.orphan_seat(leg)
        self._back_to_seat()
        log.warning("consult_dropped", extra={"call_id": self.call_id, "leg_id": leg.leg_id, "reason": reason})
        return True

    def _hand_over(self, reason: str) -> None:
        """Seat 2 takes the caller: seat 1's leg (if still there) is released with a BYE as an orphan,
        the consult leg becomes the seat leg, caller and seat 2 are bridged.  The caller's leg and
        the recording are not touched."""
        new, old = self.consult, self.seat
        assert new is not None
        self.consult, self.consult_answered = None, False
        # seat 2 is the seat leg *before* seat 1's hang-up: PJSIP may report its DISCONNECTED at
        # once, and it must find an orphan there, not the end of the conversation
        self.seat = new
        self.seat_state, self.seat_leg_id = SeatLegState.BRIDGED, new.leg_id
        if old is not None:
            old_am, new_am = active_audio(old), active_audio(new)
            if old_am is not None and new_am is not None:  # seat 1 hears nothing more while its BYE goes out
                for a, b in ((old_am, new_am), (new_am, old_am)):
                    with contextlib.suppress(pj.Error):
                        a.stopTransmit(b)
            old.cancelled = "transfer"
            self.service.orphan_seat(old)
        log.info("consult_handed_over", extra={"call_id": self.call_id, "leg_id": new.leg_id, "reason": reason})
        self.on_hold = False
        self.stop_playback()
        self._connect_seat(new)
        self.service.send(ch.ConsultEnded(call_id=self.call_id, leg_id=new.leg_id, outcome="completed",
                                          reason=reason, answered=True, at=time.time()))

    def _seat_left_consult(self, code: int, reason: str) -> None:
        """Seat 1 hung up during a consult: seat 2 takes the caller if it answered (as Asterisk does);
        otherwise its leg is cancelled and the control process sends the caller on (hold audio goes on)."""
        leg = self.consult
        assert leg is not None
        if self.consult_answered:
            self._hand_over("seat 1 hung up")
            return
        self.consult = None
        leg.cancelled = "seat 1 left"
        self.service.orphan_seat(leg)
        self.service.send(ch.ConsultEnded(call_id=self.call_id, leg_id=leg.leg_id, outcome="seat_left", code=code,
                                          reason=reason, at=time.time()))

    # -- shutdown / forced end -----------------------------------------------------------------
    def hangup(self, code: int = 0) -> None:
        self.ended_by = self.ended_by or "gateway"
        if self.caller is not None:
            prm = pj.CallOpParam(True)
            if code:
                prm.statusCode = code
            with contextlib.suppress(pj.Error):
                self.caller.hangup(prm)
