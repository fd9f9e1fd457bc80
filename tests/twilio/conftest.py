"""A Twilio ingress over the real routing service and event store, driven like Twilio drives it.

``TwilioPhone`` signs every webhook exactly as Twilio does (the library's ``RequestValidator`` with
the test auth token, over the public URL) and follows the TwiML it gets back: the action of a
``<Gather>``, a ``<Redirect>``, the ``<Dial>`` action and the ``<Sip>`` status callback.
"""

from __future__ import annotations

import logging
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from twilio.request_validator import RequestValidator

from api.twilio import TwilioCalls, TwilioContext, twilio_router
from gateway.settings import Settings
from ivr.flow import DEFAULT_FLOW_PATH, Flow
from ivr.loader import load_flow
from routing.acd import SeatSpec
from routing.service import RoutingService
from routing.status import SeatStatus
from routing.store.calls import CallRecords
from routing.store.database import create_schema
from routing.store.journeys import JourneyStore
from tests.api.scratch import scratch_engine

TOKEN = "test-twilio-auth-token"
#: What Twilio calls (a proxy in front of the node); the app itself is reached at http://testserver.
PUBLIC = "https://handoff.example.org/pbx"


def seat(seat_id: str, skills: list[str], status: SeatStatus = SeatStatus.AVAILABLE) -> SeatSpec:
    return SeatSpec(id=seat_id, contact=f"sip:{seat_id}@127.0.0.1:5091", skills=dict.fromkeys(skills, 0),
                    name=seat_id, status=status)


@dataclass
class Centre:
    routing: Any
    records: CallRecords
    twilio: TwilioCalls
    http: httpx.AsyncClient
    flow: Flow
    tables: AsyncExitStack

    async def flushed(self) -> None:
        """Wait until every event so far is in the database."""
        await self.routing.writer.flush()

    async def record(self, call_id: str) -> dict[str, Any]:
        await self.flushed()
        rec = await self.records.get(call_id)
        assert rec is not None, call_id
        return rec

    def queue(self, skill: str) -> dict[str, Any]:
        return next(q for q in self.routing.acd.queues_view(time.time()) if q["skill"] == skill)

    def phone(self, sid: str | None = None, caller: str = "+8613800000001") -> TwilioPhone:
        return TwilioPhone(self.http, sid or "CA" + uuid.uuid4().hex, caller)


def journey_of(rec: dict[str, Any]) -> list[str]:
    """The stages a call record's JOURNEY events walked, from the first stage on."""
    moves = [e["data"] for e in rec["events"] if e["kind"] == "JOURNEY"]
    return [moves[0]["from"], *(m["to"] for m in moves)] if moves else []


def sign(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


def local(url: str) -> str:
    assert url.startswith(PUBLIC + "/twilio/"), url
    return url[len(PUBLIC):]


@dataclass
class TwilioPhone:
    """One caller's Twilio call: posts what Twilio would post, keeps the last TwiML."""

    http: httpx.AsyncClient
    sid: str
    caller: str
    doc: ET.Element | None = None
    docs: list[str] = field(default_factory=list)

    @property
    def call_id(self) -> str:
        return f"t-{self.sid}"

    async def post(self, path: str, params: dict[str, str], token: str = TOKEN,
                   url_signed: str | None = None) -> httpx.Response:
        signature = sign(url_signed or PUBLIC + path, params, token)
        return await self.http.post(path, data=params, headers={"X-Twilio-Signature": signature})

    async def step(self, path: str, **params: str) -> ET.Element:
        r = await self.post(path, {"CallSid": self.sid, "AccountSid": "AC" + "0" * 32, **params})
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/xml")
        self.docs.append(r.text)
        self.doc = ET.fromstring(r.text)
        return self.doc

    async def dial_in(self) -> ET.Element:
        return await self.step("/twilio/voice", From=self.caller, To="+8653112200122", CallStatus="ringing",
                               Direction="inbound")

    def gather(self) -> ET.Element:
        assert self.doc is not None
        g = self.doc.find("Gather")
        assert g is not None, ET.tostring(self.doc)
        return g

    async def press(self, digit: str) -> ET.Element:
        return await self.step(local(self.gather().attrib["action"]), Digits=digit)

    async def silence(self) -> ET.Element:
        return await self.step(local(self.gather().attrib["action"]), Digits="")

    async def keys(self, keys: str) -> ET.Element:
        for k in keys.split():
            await self.press(k)
        assert self.doc is not None
        return self.doc

    async def hold_poll(self) -> ET.Element:
        assert self.doc is not None
        redirect = self.doc.find("Redirect")
        assert redirect is not None, ET.tostring(self.doc)
        return await self.step(local(redirect.text or ""))

    async def hold_until_dial(self, polls: int = 6) -> ET.Element:
        """Follow hold redirects until the call is dialled to a seat."""
        for _ in range(polls):
            assert self.doc is not None
            dial = self.doc.find("Dial")
            if dial is not None:
                return dial
            redirect = self.doc.find("Redirect")
            assert redirect is not None, ET.tostring(self.doc)
            await self.step(local(redirect.text or ""))
        raise AssertionError("never dialled a seat")

    def dial(self) -> ET.Element:
        assert self.doc is not None
        d = self.doc.find("Dial")
        assert d is not None, ET.tostring(self.doc)
        return d

    async def seat_answers(self) -> None:
        sip = self.dial().find("Sip")
        assert sip is not None
        r = await self.post(local(sip.attrib["statusCallback"]), {
            "CallSid": "CA" + uuid.uuid4().hex, "ParentCallSid": self.sid, "CallStatus": "in-progress",
            "AccountSid": "AC" + "0" * 32})
        assert r.status_code == 200, r.text

    async def dial_ends(self, status: str, duration: str = "0") -> ET.Element:
        return await self.step(local(self.dial().attrib["action"]), DialCallStatus=status,
                               DialCallDuration=duration, DialCallSid="CA" + uuid.uuid4().hex)

    async def hang_up(self, status: str = "completed") -> None:
        r = await self.post("/twilio/status", {"CallSid": self.sid, "CallStatus": status, "CallDuration": "12"})
        assert r.status_code == 200, r.text


async def start_centre(db_url: str, tmp_path: Path, seats: list[SeatSpec],
                       flow: Flow | None = None, clock: Callable[[], float] | None = None,
                       keep_journeys: bool = False) -> Centre:
    tables = AsyncExitStack()
    engine = await tables.enter_async_context(scratch_engine(db_url))
    await create_schema(engine)
    settings = Settings(data_dir=tmp_path, db_url=db_url, ring_timeout=20.0)
    routing = RoutingService.from_settings(settings, engine, node_id="test-node")
    await routing.start(seats)
    flow = flow or load_flow(DEFAULT_FLOW_PATH)
    ctx = TwilioContext(routing=routing, flow=lambda: flow, auth_token=TOKEN, public_base_url=PUBLIC,
                        node_id="test-node", journeys=JourneyStore(engine) if keep_journeys else None,
                        **({"clock": clock} if clock else {}))
    calls = TwilioCalls(ctx)
    calls.listen()
    app = FastAPI()
    app.include_router(twilio_router(ctx, calls))
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    return Centre(routing=routing, records=CallRecords(engine), twilio=calls, http=http, flow=flow, tables=tables)


async def stop_centre(centre: Centre) -> None:
    await centre.http.aclose()
    await centre.routing.stop()
    await centre.tables.aclose()


SEATS = [seat("s1", ["rescue", "online_determination"]), seat("s2", ["police_dispatch"])]


@pytest.fixture
async def centre(sqlite_url: str, tmp_path: Path) -> AsyncIterator[Centre]:
    c = await start_centre(sqlite_url, tmp_path, SEATS)
    try:
        yield c
    finally:
        await stop_centre(c)


@pytest.fixture(autouse=True)
def no_unexpected_journey_event(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every Twilio test fails if a call's journey met an event it did not expect in its stage."""
    with caplog.at_level(logging.INFO, logger="journey"):
        yield
    unexpected = [r for r in caplog.records if r.getMessage() == "journey_unexpected_event"]
    assert not unexpected, [(getattr(r, "call_id", None), getattr(r, "stage", None), getattr(r, "cause", None))
                            for r in unexpected]
