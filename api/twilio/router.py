"""The Twilio webhooks: ``POST /twilio/voice`` (the URL a centre sets on its number) and its steps.

| webhook | Twilio calls it | does |
|---|---|---|
| ``POST /twilio/voice`` | a call reaches the number | starts the call record, first IVR question |
| ``POST /twilio/gather?step=N`` | a ``<Gather>`` ended (key or silence) | next question, or queue + hold |
| ``POST /twilio/hold?step=N`` | a hold segment ended | next hold segment, or dial the reserved seat |
| ``POST /twilio/seat-status?step=N&seat=S`` | the seat answered | ``seat_answered`` |
| ``POST /twilio/dial-status?step=N&seat=S`` | the ``<Dial>`` ended | talk over, or RONA and back to hold |
| ``POST /twilio/status`` | the number's call status callback | caller hung up: abandon / complete |
| ``GET /twilio/prompts/{id}.wav`` | ``<Play>`` fetches | the flow's prompt audio (public, unsigned) |

Every POST is signed by Twilio (403 otherwise, nothing changes); webhooks run on the routing
service's loop (``TwilioContext.on_control``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response

from api.twilio.calls import StaleStep, TwilioCalls, UnknownTwilioCall
from api.twilio.context import TwilioContext
from api.twilio.signature import SignedForm, signed_form
from ivr.flow import DEFAULT_PROMPTS_DIR

TWIML_TYPE = "application/xml"
PROMPT_ID = re.compile(r"^[a-z0-9_]{1,64}$")
CALL_SID = re.compile(r"^[A-Za-z0-9]{2,40}$")


def _step(request: Request) -> int:
    raw = request.query_params.get("step", "")
    if not raw.isdigit():
        raise HTTPException(400, "missing or bad step")
    return int(raw)


def _seat(request: Request) -> str:
    seat = request.query_params.get("seat", "")
    if not seat:
        raise HTTPException(400, "missing seat")
    return seat


def _sid(form: SignedForm, name: str = "CallSid") -> str:
    sid = form.require(name)
    if not CALL_SID.match(sid):
        raise HTTPException(400, f"bad {name}")
    return sid


def _twiml(body: str) -> Response:
    return Response(body, media_type=TWIML_TYPE)


def twilio_router(ctx: TwilioContext, calls: TwilioCalls | None = None) -> APIRouter:
    """The webhooks over ``ctx``; builds the call registry (and subscribes it) unless one is given."""
    if calls is None:
        calls = TwilioCalls(ctx)
        calls.listen()
    registry = calls
    router = APIRouter(prefix="/twilio", tags=["twilio"])

    async def form_of(request: Request) -> SignedForm:
        return await signed_form(request, ctx.auth_token, ctx.public_base_url)

    async def run(fn: Callable[..., Awaitable[str]], *args: Any) -> Response:
        try:
            return _twiml(await ctx.on_control(fn, *args))
        except UnknownTwilioCall as e:
            raise HTTPException(404, f"unknown call {e}") from e
        except StaleStep as e:
            raise HTTPException(409, str(e)) from e

    @router.post("/voice")
    async def voice(request: Request) -> Response:
        form = await form_of(request)
        return await run(registry.voice, _sid(form), form.get("From"), form.get("To"))

    @router.post("/gather")
    async def gather(request: Request) -> Response:
        form = await form_of(request)
        step = _step(request)
        return await run(registry.gather_result, _sid(form), step, form.get("Digits"))

    @router.post("/hold")
    async def hold(request: Request) -> Response:
        form = await form_of(request)
        step = _step(request)
        return await run(registry.hold_poll, _sid(form), step)

    @router.post("/seat-status")
    async def seat_status(request: Request) -> Response:
        form = await form_of(request)
        step, seat = _step(request), _seat(request)
        # The <Sip> leg's callback is about the child call; the caller's call is its parent.
        sid = _sid(form, "ParentCallSid") if form.get("ParentCallSid") else _sid(form)
        return await run(registry.seat_status, sid, step, seat, form.require("CallStatus"))

    @router.post("/dial-status")
    async def dial_status(request: Request) -> Response:
        form = await form_of(request)
        step, seat = _step(request), _seat(request)
        return await run(registry.dial_result, _sid(form), step, seat, form.require("DialCallStatus"))

    @router.post("/status")
    async def status(request: Request) -> Response:
        form = await form_of(request)
        return await run(registry.call_status, _sid(form), form.require("CallStatus"))

    @router.get("/prompts/{prompt_id}.wav")
    async def prompt_audio(prompt_id: str) -> FileResponse:
        if not PROMPT_ID.match(prompt_id):
            raise HTTPException(404, "no such prompt")
        for directory in (Path(ctx.flow().prompts_dir), DEFAULT_PROMPTS_DIR):
            path = directory / f"{prompt_id}.wav"
            if path.is_file():
                return FileResponse(path, media_type="audio/wav")
        raise HTTPException(404, "no such prompt")

    return router
