"""The control <-> media-worker channel: typed, versioned JSON lines over a Unix socket.

Why a process boundary at all: a pjsua2 build holds at most ``PJSUA_MAX_CALLS`` (4) calls per
process, so a node is a pool of worker processes.  The control process owns every decision (IVR,
routing); a worker only executes media commands and reports what happened on the wire.  Each
line is one message ``{"v": 1, "type": ..., ...}``; a peer that speaks another major version is
refused at ``hello`` instead of misreading fields later.

Workers generate the call id (``c-`` + 16 hex): it is ours, never PJSIP's recycled call index.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

PROTOCOL_VERSION = 1
#: the environment variable that carries a worker's per-start secret (never argv: ``ps`` shows argv)
SECRET_ENV = "HANDOFF_WORKER_SECRET"


def Field(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING, repr: bool = True,
          discriminator: str | None = None) -> Any:
    """A message field with a default (``Field(default_factory=dict)``, ``Field("", repr=False)``).

    The spelling of pydantic's ``Field`` on purpose, so messages read the same as before; the
    messages are stdlib dataclasses because a media worker imports this module, and pydantic (its
    import, its Rust core and the schemas of every message) cost each worker process ~18 MB of RSS,
    more than a third of it (docs/PERFORMANCE.md, "Memory per held caller").
    ``discriminator`` only documents the ``Annotated`` unions below.
    """
    if discriminator is not None:
        return discriminator
    return dataclasses.field(default=default, default_factory=default_factory, repr=repr)


class _Msg:
    """A message: a frozen, keyword-only dataclass whose fields are checked against their types
    when it is made (decoded from a line or built in code), like the pydantic models it replaces."""

    v: int = PROTOCOL_VERSION

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)

    def __post_init__(self) -> None:
        for name, check in _checks_of(type(self)):
            value = getattr(self, name)
            checked = check(value, name)
            if checked is not value:
                object.__setattr__(self, name, checked)

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Any:
        """A copy with some fields replaced (checked again), as pydantic's ``model_copy``."""
        return dataclasses.replace(self, **(update or {}))

    def as_dict(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.__dataclass_fields__}


def _plain(value: Any) -> Any:
    """A field's value as JSON data: a message inside a message (``Hello.calls``) becomes a dict."""
    if isinstance(value, _Msg):
        return value.as_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


Check = Callable[[Any, str], Any]
_CHECKS: dict[type, list[tuple[str, Check]]] = {}


def _checks_of(cls: type) -> list[tuple[str, Check]]:
    """The field checks of a message class, built once (when the whole module exists)."""
    checks = _CHECKS.get(cls)
    if checks is None:
        hints = typing.get_type_hints(cls)
        checks = _CHECKS[cls] = [(name, _checker(hints[name])) for name in cls.__dataclass_fields__]  # type: ignore[attr-defined]
    return checks


def _wrong(value: Any, name: str, wanted: str) -> ValueError:
    return ValueError(f"{name}: {value!r} is not {wanted}")


def _checker(tp: Any) -> Check:
    """A function that returns a value as a field of type ``tp`` (ints widen to floats, str
    subclasses become str) or raises ``ValueError`` naming the field."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return lambda value, name: value
    if origin in (typing.Union, types.UnionType):
        options = [(o, _checker(o)) for o in typing.get_args(tp)]

        def union(value: Any, name: str) -> Any:
            if value is None and type(None) in typing.get_args(tp):
                return None
            for option, check in options:
                if option is not type(None):
                    try:
                        return check(value, name)
                    except ValueError:
                        continue
            raise _wrong(value, name, str(tp))
        return union
    if tp is type(None):
        def none(value: Any, name: str) -> Any:
            if value is None:
                return value
            raise _wrong(value, name, "None")
        return none
    if origin is Literal:
        allowed = {a: a for a in typing.get_args(tp)}
        wanted = " | ".join(map(repr, allowed))

        def literal(value: Any, name: str) -> Any:
            if isinstance(value, str | int) and not isinstance(value, bool) and value in allowed:
                return allowed[value]  # the literal itself, also for a str subclass
            raise _wrong(value, name, wanted)
        return literal
    if tp is bool:
        def boolean(value: Any, name: str) -> Any:
            if isinstance(value, bool):
                return value
            raise _wrong(value, name, "bool")
        return boolean
    if tp is int:
        def integer(value: Any, name: str) -> Any:
            if type(value) is int:
                return value
            if isinstance(value, int) and not isinstance(value, bool):
                return int(value)
            raise _wrong(value, name, "int")
        return integer
    if tp is float:
        def real(value: Any, name: str) -> Any:
            if type(value) is float:
                return value
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            raise _wrong(value, name, "float")
        return real
    if tp is str:
        def text(value: Any, name: str) -> Any:
            if type(value) is str:
                return value
            if isinstance(value, str):
                return "" + value  # a plain str from a str subclass
            raise _wrong(value, name, "str")
        return text
    if origin is list:
        item = _checker(typing.get_args(tp)[0])

        def items(value: Any, name: str) -> Any:
            if isinstance(value, list | tuple):
                return [item(x, f"{name}[{i}]") for i, x in enumerate(value)]
            raise _wrong(value, name, "a list")
        return items
    if origin is dict:
        key_check, value_check = (_checker(a) for a in typing.get_args(tp))

        def mapping(value: Any, name: str) -> Any:
            if isinstance(value, dict):
                return {key_check(k, f"{name} key"): value_check(x, f"{name}[{k!r}]") for k, x in value.items()}
            raise _wrong(value, name, "an object")
        return mapping
    if isinstance(tp, type) and issubclass(tp, _Msg):
        fields = tp.__dataclass_fields__  # type: ignore[attr-defined]

        def message(value: Any, name: str) -> Any:
            if isinstance(value, tp):
                return value
            if isinstance(value, dict):  # decoded from a line: unknown fields are ignored
                try:
                    return tp(**{k: v for k, v in value.items() if k in fields})
                except TypeError as e:
                    raise _wrong(value, name, tp.__name__) from e
            raise _wrong(value, name, tp.__name__)
        return message
    raise TypeError(f"field type {tp} has no check in gateway.channel")


dataclasses.dataclass(frozen=True, kw_only=True)(_Msg)


# --------------------------------------------------------------------------------------------
# worker -> control
# --------------------------------------------------------------------------------------------
class LiveCall(_Msg):
    """A call a worker holds when it (re)connects: what a restarted control process needs to take
    it over.  ``seat_state`` is the seat leg's state (``gateway.worker.legs.SeatLegState``), None
    without a seat leg; ``seat_id`` is the seat that leg dials (from ``DialSeat.seat_id``)."""

    call_id: str
    caller: str
    callee: str = ""
    sip_call_id: str = ""
    started_at: float
    recording_path: str | None = None
    recording_error: str | None = None
    seat_leg_id: str | None = None
    seat_state: str | None = None
    seat_id: str | None = None
    on_hold: bool = False
    was_bridged: bool = False
    #: the last seat / consult leg the worker dialled for this call (the next one gets a new id, so
    #: a late event of an old leg can never be taken for the new one's)
    last_seat_leg: str | None = None
    last_consult_leg: str | None = None
    #: the call ended while no control process was connected; its end follows the hello
    #: (``gateway.worker.gap``): the call is taken over as it was, then closed with that end
    ended: bool = False


class Hello(_Msg):
    """A worker's first line on every connection.  ``secret`` is the per-start secret the node's
    supervisor gave the worker in its environment: with the socket's peer credentials (same uid, a
    child of this node's supervisor) it is how the control process knows the peer is its own worker
    and not any local process.  ``calls`` are the calls the worker carries: empty for a new
    worker; when a worker reconnects to a restarted control process, its calls as they were when
    the previous one went away (those ended since flagged ``ended``), their events since following
    the hello."""

    type: Literal["hello"] = "hello"
    worker_id: int
    pid: int
    sip_port: int
    max_calls: int
    secret: str = Field("", repr=False)
    calls: list[LiveCall] = Field(default_factory=list)
    #: events of the calls above that happened while no control process was connected; they follow
    #: this hello on the channel, in order (``gateway.worker.gap``)
    replayed: int = 0


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


class ConsultDialing(_Msg):
    """A warm transfer's consult leg is being dialled; the caller is on hold (hold audio)."""

    type: Literal["consult_dialing"] = "consult_dialing"
    call_id: str
    leg_id: str
    at: float


class ConsultAnswered(_Msg):
    """Seat 2 answered the consult leg: seat 1 and seat 2 hear each other, the caller hold audio."""

    type: Literal["consult_answered"] = "consult_answered"
    call_id: str
    leg_id: str
    at: float


class ConsultEnded(_Msg):
    """The consult is over.  ``outcome``: ``completed`` (seat 2 has the caller, seat 1's leg released),
    ``cancelled`` (asked; caller back with seat 1), ``failed`` (seat 2 did not answer or left; caller
    back with seat 1), ``refused`` (never dialled, e.g. no free call in this worker; nothing changed),
    ``seat_left`` (seat 1 hung up before seat 2 answered; the consult leg is cancelled, the caller
    keeps hearing hold audio and the control process decides)."""

    type: Literal["consult_ended"] = "consult_ended"
    call_id: str
    leg_id: str
    outcome: Literal["completed", "cancelled", "failed", "refused", "seat_left"]
    code: int = 0
    reason: str = ""
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
    | CallEnded | SeatReferred | MonitorAnswered | MonitorEnded | ConsultDialing | ConsultAnswered | ConsultEnded
    | WorkerStats | CommandFailed,
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
    seat_id: str | None = None  # reported back in ``Hello.calls`` (a restarted control's re-adoption)
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


class DialConsult(_Msg):
    """Warm transfer: put the caller on hold (``files`` as hold audio, ``prompt_finished`` with
    ``token``) and dial seat 2 as a third leg of this call in the worker's bridge; when it answers,
    seat 1 and seat 2 hear each other.  The caller's leg is never re-INVITEd, REFERred or hung up."""

    type: Literal["dial_consult"] = "dial_consult"
    call_id: str
    leg_id: str
    uri: str
    headers: dict[str, str] = Field(default_factory=dict)
    from_uri: str | None = None
    timeout_s: float = 30.0
    files: list[str] = Field(default_factory=list)
    token: int = 0


class EndConsult(_Msg):
    """``complete``: release seat 1's leg (BYE to seat 1 only) and bridge the caller with seat 2;
    otherwise end the consult leg and bridge the caller with seat 1 again."""

    type: Literal["end_consult"] = "end_consult"
    call_id: str
    leg_id: str
    complete: bool
    reason: str = ""


class Hangup(_Msg):
    """End a call (both legs).  Only for shutdown and for calls the control process lost track of."""

    type: Literal["hangup"] = "hangup"
    call_id: str
    code: int = 0
    reason: str = ""


class Shutdown(_Msg):
    type: Literal["shutdown"] = "shutdown"


WorkerCommand = Annotated[
    Play | StopPlayback | DialSeat | CancelSeat | ReleaseSeat | HoldSeat | DialMonitor | EndMonitor | DialConsult
    | EndConsult | Hangup | Shutdown, Field(discriminator="type")
]

def _by_type(union: Any) -> dict[str, type[_Msg]]:
    """``type`` tag -> message class, for one of the ``Annotated`` unions above."""
    members = typing.get_args(typing.get_args(union)[0])
    return {m.__dataclass_fields__["type"].default: m for m in members}


_events = _by_type(WorkerEvent)
_commands = _by_type(WorkerCommand)


class ProtocolError(ValueError):
    pass


def encode(msg: _Msg) -> bytes:
    return (json.dumps(msg.as_dict(), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _decode(line: bytes | str, kinds: dict[str, type[_Msg]]) -> Any:
    try:
        data = json.loads(line)
    except ValueError as e:
        raise ProtocolError(f"not JSON: {e}") from e
    if not isinstance(data, dict):
        raise ProtocolError("not an object")
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {data.get('v')!r}, expected {PROTOCOL_VERSION}")
    kind = kinds.get(data.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise ProtocolError(f"unknown message type {data.get('type')!r}, expected one of {sorted(kinds)}")
    known = kind.__dataclass_fields__
    try:
        return kind(**{k: v for k, v in data.items() if k in known})  # unknown fields are ignored
    except (TypeError, ValueError) as e:  # a required field missing, or a field of the wrong type
        raise ProtocolError(f"{data.get('type')}: {str(e).splitlines()[0]}") from e


def decode_event(line: bytes | str) -> Any:
    return _decode(line, _events)


def decode_command(line: bytes | str) -> Any:
    return _decode(line, _commands)
