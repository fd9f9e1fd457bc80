"""After the IVR: the routing service's queue, the seat dialled over <Sip>, RONA, abandon, completion."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs

from routing.status import SeatStatus
from tests.twilio.conftest import PUBLIC, Centre, journey_of, seat, start_centre, stop_centre


def sip_target(dial) -> tuple[str, dict[str, list[str]]]:  # type: ignore[no-untyped-def]
    sip = dial.find("Sip")
    assert sip is not None
    uri, _, headers = (sip.text or "").partition("?")
    return uri, parse_qs(headers)


async def test_seat_free_dials_it_and_the_conversation_is_in_the_call_record(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    await phone.keys("1 2 2")  # vehicle cannot move -> rescue; s1 is free
    dial = await phone.hold_until_dial()
    assert dial.attrib["answerOnBridge"] == "true"
    assert dial.attrib["timeout"] == "18"  # Twilio gives up just before the ACD's 20 s ring timer
    assert dial.attrib["action"].startswith(f"{PUBLIC}/twilio/dial-status?")
    uri, headers = sip_target(dial)
    assert uri == "sip:s1@127.0.0.1:5091"
    assert headers == {"X-Handoff-Call-Id": [phone.call_id], "X-Handoff-Skill": ["rescue"]}
    sip = dial.find("Sip")
    assert sip is not None and sip.attrib["statusCallbackEvent"] == "answered"
    assert centre.routing.acd.seat_view("s1", 0.0)["status"] == SeatStatus.RESERVED.value

    await phone.seat_answers()
    assert centre.routing.acd.seat_view("s1", 0.0)["status"] == SeatStatus.ON_CALL.value
    doc = await phone.dial_ends("completed", "42")
    assert doc.find("Hangup") is not None
    await phone.hang_up()  # the number's status callback after the Dial: already closed, changes nothing

    rec = await centre.record(phone.call_id)
    assert rec["seat_id"] == "s1" and rec["seat_answered_at"] is not None
    assert (rec["end_reason"], rec["ended_by"]) == ("completed", "seat")
    kinds = [e["kind"] for e in rec["events"]]
    assert [k for k in kinds if k not in ("SEATSTATUS", "JOURNEY")] == [
        "CALLSTART", "IVRDONE", "ENTERQUEUE", "OFFER", "CONNECT", "COMPLETE", "CALLEND"]
    # the journey walked its stages in order, each one persisted with the call
    assert journey_of(rec) == ["answered", "in_ivr", "queued", "offered", "ringing_seat", "talking", "wrap_up",
                               "ended"]
    q = centre.queue("rescue")
    assert (q["offered"], q["answered"], q["abandoned"]) == (1, 1, 0)


async def test_caller_hangs_up_while_talking(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    await phone.keys("1 1")  # injury -> police_dispatch, s2
    await phone.hold_until_dial()
    await phone.seat_answers()
    await phone.hang_up()
    await phone.dial_ends("completed", "10")  # Twilio's late Dial action: the call is closed already
    rec = await centre.record(phone.call_id)
    assert (rec["seat_id"], rec["end_reason"], rec["ended_by"]) == ("s2", "completed", "caller")
    assert [e["kind"] for e in rec["events"]].count("COMPLETE") == 1


async def test_answered_callback_lost_still_counts_the_talk(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    await phone.keys("1 1")
    await phone.hold_until_dial()
    await phone.dial_ends("completed", "30")
    rec = await centre.record(phone.call_id)
    assert (rec["seat_id"], rec["end_reason"]) == ("s2", "completed")
    assert centre.queue("police_dispatch")["answered"] == 1


async def test_no_answer_is_rona_back_to_the_head_and_next_poll_dials_the_next_seat(
        tmp_path: Path, sqlite_url: str) -> None:
    centre = await start_centre(sqlite_url, tmp_path, [seat("s1", ["rescue"])])
    try:
        first, second = centre.phone(), centre.phone(caller="+8613800000002")
        for p in (first, second):
            await p.dial_in()
            await p.keys("1 2 2")
        dial = await first.hold_until_dial()
        assert sip_target(dial)[0] == "sip:s1@127.0.0.1:5091"
        assert second.doc is not None and second.doc.find("Redirect") is not None  # waiting behind

        doc = await first.dial_ends("no-answer")
        assert doc.find("Dial") is None and doc.find("Redirect") is not None  # back on hold
        acd = centre.routing.acd
        assert acd.seat_view("s1", 0.0)["status"] == SeatStatus.NOT_READY.value
        assert acd.queue_position(first.call_id) == 1 and acd.queue_position(second.call_id) == 2
        assert centre.queue("rescue")["rona"] == 1

        await centre.routing.add_seat(seat("s9", ["rescue"]))
        dial = await first.hold_until_dial()  # the caller at the head gets the new seat
        assert sip_target(dial)[0] == "sip:s9@127.0.0.1:5091"
        assert acd.queue_position(second.call_id) == 1
        rec = await centre.record(first.call_id)
        offers = [e["seat_id"] for e in rec["events"] if e["kind"] == "OFFER"]
        assert offers == ["s1", "s9"]
        assert "RINGNOANSWER" in [e["kind"] for e in rec["events"]]
    finally:
        await stop_centre(centre)


async def test_busy_and_failed_seats_hand_the_call_on_at_once(tmp_path: Path, sqlite_url: str) -> None:
    seats = [seat("s1", ["online_review"]), seat("s2", ["online_review"]), seat("s3", ["online_review"])]
    centre = await start_centre(sqlite_url, tmp_path, seats)
    try:
        phone = centre.phone()
        await phone.dial_in()
        await phone.keys("1 2 1 2 2 1")  # road facilities damaged -> online_review
        tried = [sip_target(await phone.hold_until_dial())[0]]
        await phone.dial_ends("busy")
        tried.append(sip_target(phone.dial())[0])  # the next free seat is dialled in the same answer
        await phone.dial_ends("failed")
        tried.append(sip_target(phone.dial())[0])
        assert sorted(tried) == [f"sip:{s}@127.0.0.1:5091" for s in ("s1", "s2", "s3")]
        acd = centre.routing.acd
        failed_seat = tried[1].split(":")[1].split("@")[0]
        assert acd.seat_view(failed_seat, 0.0)["status"] == SeatStatus.NOT_READY.value  # unreachable
        reasons = [e["data"]["reason"] for e in (await centre.record(phone.call_id))["events"]
                   if e["kind"] == "SEATFAILED"]
        assert reasons == ["busy", "unreachable"]
    finally:
        await stop_centre(centre)


async def test_abandon_while_holding_counts_in_the_metrics(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    await phone.press("3")  # insurance_claim: nobody has it, the caller holds
    await phone.hold_poll()
    await phone.hold_poll()
    await phone.hang_up()
    await phone.hang_up()  # a repeated status callback changes nothing
    q = centre.queue("insurance_claim")
    assert (q["waiting"], q["abandoned"], q["answered"]) == (0, 1, 0)
    rec = await centre.record(phone.call_id)
    assert (rec["end_reason"], rec["ended_by"]) == ("abandoned", "caller")
    assert [e["kind"] for e in rec["events"]].count("CALLEND") == 1


async def test_abandon_while_the_seat_rings_frees_the_seat(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    await phone.keys("1 1")
    await phone.hold_until_dial()
    await phone.hang_up("canceled")
    assert centre.routing.acd.seat_view("s2", 0.0)["status"] == SeatStatus.AVAILABLE.value
    assert centre.queue("police_dispatch")["abandoned"] == 1


async def test_hang_up_in_the_ivr_closes_the_record(centre: Centre) -> None:
    phone = centre.phone()
    await phone.dial_in()
    await phone.press("1")
    await phone.hang_up()
    rec = await centre.record(phone.call_id)
    assert rec["end_reason"] == "caller_hangup_in_ivr" and rec["skill"] is None
    assert [a["digit"] for a in rec["ivr"]["answers"]] == ["1"]
    assert all(q["waiting"] == 0 and q["abandoned"] == 0 for q in centre.routing.acd.queues_view(0.0))


async def test_whole_call_on_both_databases(db_url: str, tmp_path: Path) -> None:
    centre = await start_centre(db_url, tmp_path, [seat("s1", ["intake_guidance"])])
    try:
        phone = centre.phone()
        await phone.dial_in()
        await phone.keys("1 2 1 2 2 2 2")
        await phone.hold_until_dial()
        await phone.seat_answers()
        await phone.hang_up()
        rec = await centre.record(phone.call_id)
        assert rec["ivr"]["outcome"]["skill"] == "intake_guidance" and rec["ivr"]["outcome"]["priority"] == 4
        assert [a["digit"] for a in rec["ivr"]["answers"]] == ["1", "2", "1", "2", "2", "2", "2"]
        assert (rec["ingress"], rec["seat_id"], rec["end_reason"], rec["ended_by"]) == (
            "twilio", "s1", "completed", "caller")
        listed = await centre.records.list(limit=5)
        assert [c["id"] for c in listed] == [phone.call_id]
    finally:
        await stop_centre(centre)

