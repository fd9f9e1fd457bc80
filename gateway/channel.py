"""The control <-> media-worker channel: typed, versioned JSON lines over a Unix socket.

Why a process boundary at all: a pjsua2 build holds at most ``PJSUA_MAX_CALLS`` (4) calls per
process, so a node is a pool of worker processes.  The control process owns every decision (IVR,
routing); a worker only executes media commands and reports what happened on the wire.  Each
line is one message ``{"v": 1, "type": ..., ...}``; a peer that speaks another major version is
refused at ``hello`` instead of misreading fields later.

Workers generate the call id (``c-`` + 16 hex): it is ours, never PJSIP's recycled call index.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

PROTOCOL_VERSION = 1
#: the environment variable that carries a worker's per-start secret (never argv: ``ps`` shows argv)
SECRET_ENV = "HANDOFF_WORKER_SECRET"


class _Msg(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    v: int = PROTOCOL_VERSION


# --------------------------------------------------------------------------------------------
# worker -> control
# --------------------------------------------------------------------------------------------
class Hello(_Msg):
    """A worker's first line.  ``secret`` is the per-start secret the pool gave the worker in its
    environment: with the socket's peer credentials (same uid, a pid the pool spawned) it is how
    the control process knows the peer is its own worker and not any local process."""

    type: Literal["hello"] = "hello"
    worker_id: int
    pid: int
    sip_port: int
    max_calls: int
    secret: str = Field("", repr=False)


class CallStarted(_Msg):
    """A caller was answered (200 OK sent); recording has started unless ``recording_error``."""

    type: Literal["call_started"] = "call_started"
    call_id: str
    caller: str                      # normalised: digits with an optional leading +, or "anonymous"
    callee: str
    sip_call_id: str
    at: float
    recording_path: str | None = None
    recording_error: str | None = None
    caller_raw: str | None = None    # what the caller sent, truncated; for the record only, never dialled


class CallRejected(_Msg):
    type: Literal["call_rejected"] = "call_rejected"
    code: int
    reason: str
    callee: str
    caller: str = ""


class Dtmf(_Msg):
    type: Literal["dtmf"] = "dtmf"
    call_id: str
    digit: str
    method: Literal["rfc4733", "info", "other"]
    at: float


class PromptFinished(_Msg):
    type: Literal["prompt_finished"] = "prompt_finished"
    call_id: str
    token: int
    at: float


class SeatRinging(_Msg):
    type: Literal["seat_ringing"] = "seat_ringing"
    call_id: str
    leg_id: str
    at: float


class SeatAnswered(_Msg):
    """The seat's 200 OK arrived and the audio of both legs is bridged."""

    type: Literal["seat_answered"] = "seat_answered"
    call_id: str
    leg_id: str
    at: float
    answered_at: float


class SeatFailed(_Msg):
    """The seat leg ended before the bridge (declined, busy, unreachable, cancelled or hung up), or
    failed mid-conversation: a SIP failure, or ``reason`` ``seat_media_timeout: ...`` when no RTP
    came from the seat for ``DialSeat.media_timeout_s`` (the worker hung that leg up itself)."""

    type: Literal["seat_failed"] = "seat_failed"
    call_id: str
    leg_id: str
    code: int
    reason: str
    cancelled: bool = False  # we cancelled it (ring-no-answer or caller left)
    local: bool = False      # the gateway could not dial (PJSIP refused): never the seat's fault
    at: float


class CallEnded(_Msg):
    """Both legs are gone; the recording file is closed (header final) when this is sent."""

    type: Literal["call_ended"] = "call_ended"
    call_id: str
    ended_by: Literal["caller", "seat", "gateway", "error"]
    reason: str
    code: int = 0
    at: float
    bridged: bool = False
    recording_path: str | None = None
    recording_error: str | None = None


class SeatReferred(_Msg):
    """The seat's phone sent a REFER on its leg (its transfer key).  The worker refused to follow it
    (pjsua2 would dial the target itself); the control process decides what it means."""

    type: Literal["seat_referred"] = "seat_referred"
    call_id: str
    leg_id: str
    target: str        # the user part of Refer-To (a skill or a seat id, when it means anything)
    at: float


class MonitorAnswered(_Msg):
    """A supervisor's phone answered and is joined to the conversation in the bridge."""

    type: Literal["monitor_answered"] = "monitor_answered"
    call_id: str
    leg_id: str
    mode: str
    at: float


class MonitorEnded(_Msg):
    """A supervisor's leg ended (hung up, refused, no free call in the worker, caller gone)."""

    type: Literal["monitor_ended"] = "monitor_ended"
    call_id: str
    leg_id: str
    code: int
    reason: str
    answered: bool = False
    at: float


class WorkerStats(_Msg):
    type: Literal["stats"] = "stats"
    calls: int
    callers: int
    at: float
    players: int = 0
    recorders: int = 0


class CommandFailed(_Msg):
    type: Literal["command_failed"] = "command_failed"
    call_id: str | None = None
    command: str
    error: str


WorkerEvent = Annotated[
    Hello | CallStarted | CallRejected | Dtmf | PromptFinished | SeatRinging | SeatAnswered | SeatFailed
    | CallEnded | SeatReferred | MonitorAnswered | MonitorEnded | WorkerStats | CommandFailed,
    Field(discriminator="type"),
]


# --------------------------------------------------------------------------------------------
# control -> worker
# --------------------------------------------------------------------------------------------
class Play(_Msg):
    """Play WAV files one after another to the caller (and into the recording).

    Replaces whatever was playing.  ``prompt_finished`` with ``token`` follows the last file,
    unless another play/stop replaced it first.
    """

    type: Literal["play"] = "play"
    call_id: str
    files: list[str]
    token: int


class StopPlayback(_Msg):
    type: Literal["stop_playback"] = "stop_playback"
    call_id: str


class DialSeat(_Msg):
    """Open the seat leg of a hand-off; the caller's leg is never touched by it."""

    type: Literal["dial_seat"] = "dial_seat"
    call_id: str
    leg_id: str
    uri: str
    headers: dict[str, str] = Field(default_factory=dict)
    from_uri: str | None = None
    timeout_s: float = 30.0  # the worker's own safety net; the ACD normally cancels first
    #: once bridged, no RTP from the seat for this long = the seat's network is gone (0: not watched)
    media_timeout_s: float = 0.0


class CancelSeat(_Msg):
    type: Literal["cancel_seat"] = "cancel_seat"
    call_id: str
    leg_id: str
    reason: str = "ring_no_answer"


class ReleaseSeat(_Msg):
    """End the bridged seat leg of a call and keep the caller (a transfer): the caller's leg and
    recording go on; the control process plays hold audio next and dials the next seat."""

    type: Literal["release_seat"] = "release_seat"
    call_id: str
    leg_id: str
    reason: str = "transfer"


class HoldSeat(_Msg):
    """Hold (``on``) or resume a bridged conversation: on hold the caller hears ``files`` (hold
    audio, ``prompt_finished`` with ``token`` at its end) and the seat hears nothing; on resume
    the two hear each other again.  No SIP re-INVITE on either leg: it happens in the bridge."""

    type: Literal["hold_seat"] = "hold_seat"
    call_id: str
    leg_id: str
    on: bool
    files: list[str] = Field(default_factory=list)
    token: int = 0


class DialMonitor(_Msg):
    """Call a supervisor's phone and join it to the conversation: ``listen`` hears caller and seat,
    heard by no one; ``whisper`` is also heard by the seat; ``barge`` by both (three-way)."""

    type: Literal["dial_monitor"] = "dial_monitor"
    call_id: str
    leg_id: str
    uri: str
    mode: Literal["listen", "whisper", "barge"]
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = 30.0


class EndMonitor(_Msg):
    type: Literal["end_monitor"] = "end_monitor"
    call_id: str
    leg_id: str


class Hangup(_Msg):
    """End a call (both legs).  Only for shutdown and for calls the control process lost track of."""

    type: Literal["hangup"] = "hangup"
    call_id: str
    code: int = 0
    reason: str = ""


class Shutdown(_Msg):
    type: Literal["shutdown"] = "shutdown"


WorkerCommand = Annotated[
    Play | StopPlayback | DialSeat | CancelSeat | ReleaseSeat | HoldSeat | DialMonitor | EndMonitor | Hangup
    | Shutdown, Field(discriminator="type")
]

_event_adapter: TypeAdapter[Any] = TypeAdapter(WorkerEvent)
_command_adapter: TypeAdapter[Any] = TypeAdapter(WorkerCommand)


class ProtocolError(ValueError):
    pass


def encode(msg: _Msg) -> bytes:
    return (msg.model_dump_json() + "\n").encode()


def _decode(line: bytes | str, adapter: TypeAdapter[Any]) -> Any:
    try:
        data = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ProtocolError("not an object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {data.get('v')!r}, expected {PROTOCOL_VERSION}")
    try:
        return adapter.validate_python(data)
    except Exception as e:
        raise ProtocolError(str(e).splitlines()[0]) from e


def decode_event(line: bytes | str) -> Any:
    return _decode(line, _event_adapter)


def decode_command(line: bytes | str) -> Any:
    return _decode(line, _command_adapter)
