"""Only Twilio drives a call (signed webhooks), bad input is a 400, and a replayed webhook is harmless."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.twilio.conftest import PUBLIC, TOKEN, Centre, sign

VOICE = {"CallSid": "CA" + "1" * 32, "From": "+8613800000009", "To": "+8653112200122", "CallStatus": "ringing"}


async def nothing_stored(centre: Centre) -> None:
    await centre.flushed()
    assert await centre.records.list(limit=10) == []
    assert centre.twilio.live == {} and not centre.twilio.ended
    assert all(q["waiting"] == 0 for q in centre.routing.acd.queues_view(0.0))


@pytest.mark.parametrize("case", ["forged", "missing", "stale_url", "other_host", "tampered_param"])
async def test_unsigned_webhooks_are_refused_and_change_nothing(centre: Centre, case: str) -> None:
    url = f"{PUBLIC}/twilio/voice"
    headers = {"X-Twilio-Signature": sign(url, VOICE)}
    params = dict(VOICE)
    if case == "forged":
        headers["X-Twilio-Signature"] = sign(url, VOICE, token="not-the-" + TOKEN)
    elif case == "missing":
        headers = {}
    elif case == "stale_url":  # a signature for another step's URL
        headers["X-Twilio-Signature"] = sign(f"{PUBLIC}/twilio/voice?step=1", VOICE)
    elif case == "other_host":  # signed for the address the app sees, not the public one
        headers["X-Twilio-Signature"] = sign("http://testserver/twilio/voice", VOICE)
    elif case == "tampered_param":
        params["From"] = "+8613900000000"
    r = await centre.http.post("/twilio/voice", data=params, headers=headers)
    assert r.status_code == 403, r.text
    assert "detail" in r.json()
    await nothing_stored(centre)


async def test_every_step_is_signed(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    r = await phone.post("/twilio/gather?step=1", {"CallSid": phone.sid, "Digits": "0"}, token="wrong")
    assert r.status_code == 403
    r = await phone.post("/twilio/gather?step=1", {"CallSid": phone.sid, "Digits": "0"},
                         url_signed=f"{PUBLIC}/twilio/gather?step=2")
    assert r.status_code == 403
    r = await phone.post("/twilio/status", {"CallSid": phone.sid, "CallStatus": "completed"}, token="wrong")
    assert r.status_code == 403
    assert centre.twilio.live[phone.sid].session.record.keys == []
    rec = await centre.record(phone.call_id)
    assert rec["ended_at"] is None
    assert [e["kind"] for e in rec["events"] if e["kind"] != "JOURNEY"] == ["CALLSTART"]


async def test_wrong_content_type_and_missing_parameters_are_400(centre: Centre) -> None:
    url = f"{PUBLIC}/twilio/voice"
    body = json.dumps(VOICE)
    r = await centre.http.post("/twilio/voice", content=body, headers={
        "Content-Type": "application/json", "X-Twilio-Signature": sign(url, {})})
    assert r.status_code == 400
    no_sid = {k: v for k, v in VOICE.items() if k != "CallSid"}
    r = await centre.http.post("/twilio/voice", data=no_sid, headers={"X-Twilio-Signature": sign(url, no_sid)})
    assert r.status_code == 400
    bad_sid = {**VOICE, "CallSid": "../etc"}
    r = await centre.http.post("/twilio/voice", data=bad_sid, headers={"X-Twilio-Signature": sign(url, bad_sid)})
    assert r.status_code == 400
    await nothing_stored(centre)

    phone = centre.phone()
    await phone.dial_in()
    r = await phone.post("/twilio/gather", {"CallSid": phone.sid, "Digits": "1"})  # no step
    assert r.status_code == 400
    r = await phone.post("/twilio/status", {"CallSid": phone.sid})  # no CallStatus
    assert r.status_code == 400
    r = await phone.post("/twilio/gather?step=1", {"CallSid": "CA" + uuid.uuid4().hex, "Digits": "1"})
    assert r.status_code == 404  # a call this node never saw


async def test_replayed_webhooks_answer_the_same_and_change_nothing(centre: Centre) -> None:
    phone = centre.phone()
    first = (await phone.post("/twilio/voice", dict(VOICE, CallSid=phone.sid))).text
    again = (await phone.post("/twilio/voice", dict(VOICE, CallSid=phone.sid))).text
    assert first == again
    await phone.step("/twilio/voice", From=VOICE["From"], To=VOICE["To"])
    await phone.press("1")
    answer = phone.docs[-1]
    r = await phone.post("/twilio/gather?step=1", {"CallSid": phone.sid, "AccountSid": "AC" + "0" * 32,
                                                   "Digits": "1"})
    assert r.text == answer
    # A replay carrying another key is still the answered step: same TwiML, the key is not taken.
    r = await phone.post("/twilio/gather?step=1", {"CallSid": phone.sid, "Digits": "0"})
    assert r.status_code == 200 and r.text == answer
    await phone.keys("2 2")  # -> rescue, s1 dialled
    dial_doc = phone.docs[-1]
    await phone.seat_answers()
    await phone.seat_answers()
    dial_action = phone.dial().attrib["action"][len(PUBLIC):]
    ended = await phone.dial_ends("completed", "5")
    r = await phone.post(dial_action, {"CallSid": phone.sid, "DialCallStatus": "completed"})
    assert r.text == phone.docs[-1] and ended.find("Hangup") is not None
    assert dial_doc != phone.docs[-1]

    rec = await centre.record(phone.call_id)
    kinds = [e["kind"] for e in rec["events"] if e["kind"] not in ("SEATSTATUS", "JOURNEY")]
    assert kinds == ["CALLSTART", "IVRDONE", "ENTERQUEUE", "OFFER", "CONNECT", "COMPLETE", "CALLEND"]
    assert [k["digit"] for k in rec["ivr"]["keys"]] == ["1", "2", "2"]
    q = centre.queue("rescue")
    assert (q["offered"], q["answered"]) == (1, 1)


async def test_a_step_never_issued_is_refused(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    r = await phone.post("/twilio/gather?step=7", {"CallSid": phone.sid, "Digits": "1"})
    assert r.status_code == 409
    r = await phone.post("/twilio/hold?step=1", {"CallSid": phone.sid})
    assert r.status_code == 409  # the caller is in the IVR, not holding
    assert centre.twilio.live[phone.sid].session.record.keys == []


async def test_no_auth_token_configured_refuses_everything(centre: Centre) -> None:
    centre.twilio.ctx.auth_token = None
    url = f"{PUBLIC}/twilio/voice"
    r = await centre.http.post("/twilio/voice", data=VOICE, headers={"X-Twilio-Signature": sign(url, VOICE)})
    assert r.status_code == 403
