"""A Twilio ingress that lost its memory (the node restarted) continues each call from the journey
it saved before answering the last webhook (``api.twilio.store``).

The routing service and the event store are real and keep running; the ingress is replaced by a
fresh one with nothing in memory, as after a restart.  Its callers' next webhooks must continue
where they were: the IVR with the keys already pressed, the queue with the seat the ACD offered
while nobody followed the call.  No transition is emitted twice.
"""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi import FastAPI

from api.twilio import TwilioCalls, twilio_router
from api.twilio.store import VERSION
from routing.status import SeatStatus
from tests.twilio.conftest import journey_of, seat, start_centre, stop_centre

WALKED = ["answered", "in_ivr", "queued", "offered", "ringing_seat", "talking", "wrap_up", "ended"]


async def test_a_restarted_ingress_continues_each_call_from_its_saved_journey(sqlite_url: str,
                                                                           tmp_path: Path) -> None:
    centre = await start_centre(sqlite_url, tmp_path, [seat("s1", ["rescue"], SeatStatus.NOT_READY)],
                                keep_journeys=True)
    try:
        in_ivr = centre.phone(caller="+8613800000011")
        waiting = centre.phone(caller="+8613800000012")
        await in_ivr.dial_in()
        await in_ivr.press("1")                      # new accident: now asked about injuries
        await waiting.dial_in()
        await waiting.keys("1 2 2")                  # immobile -> rescue, whose only seat is not ready
        await waiting.hold_poll()
        assert centre.queue("rescue")["waiting"] == 1
        saved = await centre.twilio.journeys.load(waiting.call_id)
        assert saved is not None and saved["v"] == VERSION and saved["stage"] == "queued", saved

        # the ingress restarts with nothing in memory; the old one hears nothing any more
        centre.twilio.live.clear()
        centre.twilio._by_call_id.clear()
        fresh = TwilioCalls(centre.twilio.ctx)
        fresh.listen()
        app = FastAPI()
        app.include_router(twilio_router(fresh.ctx, fresh))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
            in_ivr.http = waiting.http = http
            # the ACD offers s1 to the waiting caller while no journey follows the call
            centre.routing.set_status("s1", SeatStatus.AVAILABLE)
            assert centre.routing.acd.call_view(waiting.call_id)["state"] == "ringing"

            dial = await waiting.hold_until_dial()   # adopted: the offer is followed, the seat dialled
            sip = dial.find("Sip")
            assert sip is not None and "s1" in (sip.text or ""), sip
            await waiting.seat_answers()
            await waiting.dial_ends("completed", "30")
            done = await centre.record(waiting.call_id)
            assert done["end_reason"] == "completed" and done["seat_id"] == "s1", done
            assert journey_of(done) == WALKED        # every move once, none replayed by the restore

            doc = await in_ivr.keys("2 1 2 2 2 1")   # the rest of the questions -> online_determination
            assert doc.find("Redirect") is not None  # holding: the key before the restart counted
            entry = centre.routing.acd.call_view(in_ivr.call_id)
            assert entry is not None and entry["skill"] == "online_determination", entry
            assert entry["caller"] == "+8613800000011"
            rec = await centre.record(in_ivr.call_id)
            assert journey_of(rec) == WALKED[:3]
            ivr_done = next(e["data"] for e in rec["events"] if e["kind"] == "IVRDONE")
            assert [a["digit"] for a in ivr_done["record"]["answers"]] == list("1212221")
    finally:
        await stop_centre(centre)
