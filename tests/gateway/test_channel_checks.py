"""The worker channel's messages check their fields like the pydantic models they replaced did:
a malformed line is a ``ProtocolError`` naming what is wrong, never a half-built command."""

from __future__ import annotations

import json

import pytest

from gateway import channel as ch


def test_a_line_with_a_field_of_the_wrong_type_is_refused_and_names_the_field() -> None:
    line = json.dumps({"v": 1, "type": "play", "call_id": "c-1", "files": ["a.wav", 7], "token": 1})
    with pytest.raises(ch.ProtocolError, match=r"files\[1\]"):
        ch.decode_command(line)
    with pytest.raises(ch.ProtocolError, match="token"):
        ch.decode_command(json.dumps({"v": 1, "type": "play", "call_id": "c-1", "files": []}))
    with pytest.raises(ch.ProtocolError, match="method"):
        ch.decode_event(json.dumps({"v": 1, "type": "dtmf", "call_id": "c", "digit": "1", "method": "smoke", "at": 1}))
    with pytest.raises(ch.ProtocolError, match="unknown message type"):
        ch.decode_command(json.dumps({"v": 1, "type": "seat_answered", "call_id": "c", "leg_id": "l", "at": 1,
                                      "answered_at": 1}))  # an event is not a command
    with pytest.raises(ch.ProtocolError, match="code"):
        ch.decode_command(json.dumps({"v": 1, "type": "hangup", "call_id": "c", "code": True}))


def test_unknown_fields_are_ignored_and_whole_numbers_are_accepted_as_times() -> None:
    msg = ch.decode_command(json.dumps({"v": 1, "type": "dial_seat", "call_id": "c-1", "leg_id": "c-1-1",
                                        "uri": "sip:s1@127.0.0.1", "timeout_s": 20, "newer_field": "x"}))
    assert msg == ch.DialSeat(call_id="c-1", leg_id="c-1-1", uri="sip:s1@127.0.0.1", timeout_s=20.0)
    assert isinstance(msg.timeout_s, float) and msg.headers == {}


def test_messages_built_in_code_are_checked_frozen_and_keep_the_secret_out_of_repr() -> None:
    with pytest.raises(ValueError, match="ended_by"):
        ch.CallEnded(call_id="c", ended_by="nobody", reason="x", at=1.0)  # type: ignore[arg-type]
    hello = ch.Hello(worker_id=1, pid=2, sip_port=3, max_calls=4, secret="s3cret")
    assert "s3cret" not in repr(hello) and ch.decode_event(ch.encode(hello)).secret == "s3cret"
    with pytest.raises(AttributeError):
        hello.pid = 5  # type: ignore[misc]
    seat = ch.DialSeat(call_id="c", leg_id="l", uri="sip:a@b", headers={"X-A": "1"})
    assert seat.model_copy(update={"headers": {}}).headers == {} and seat.headers == {"X-A": "1"}
    with pytest.raises(ValueError, match="headers"):
        seat.model_copy(update={"headers": {"X-A": 1}})


def test_a_message_inside_a_message_goes_over_the_wire_and_back() -> None:
    """A reconnecting worker's hello lists its live calls (``LiveCall`` messages): they must be
    encoded as objects and decoded back into messages, or a restarted control process cannot
    re-adopt them."""
    live = ch.LiveCall(call_id="c-0123456789abcdef", caller="13800000000", started_at=1.5, seat_id="s1",
                       was_bridged=True)
    hello = ch.Hello(worker_id=1, pid=4242, sip_port=5070, max_calls=4, secret="k", calls=[live])
    back = ch.decode_event(ch.encode(hello))
    assert back == hello and isinstance(back.calls[0], ch.LiveCall) and back.calls[0].seat_id == "s1"
    with pytest.raises(ch.ProtocolError):
        ch.decode_event(ch.encode(hello).replace(b'"was_bridged":true', b'"was_bridged":"yes"'))
