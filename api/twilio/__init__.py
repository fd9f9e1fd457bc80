"""Twilio ingress: calls that reach the centre through Twilio get the same IVR, routing and records."""

from __future__ import annotations

from api.twilio.calls import TwilioCalls
from api.twilio.context import TwilioContext
from api.twilio.router import twilio_router

__all__ = ["TwilioCalls", "TwilioContext", "twilio_router"]
