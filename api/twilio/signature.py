"""Only Twilio may drive a call: every webhook is checked against ``X-Twilio-Signature``.

The signature covers the full URL Twilio requested, so it is computed over the configured public
base URL plus the path and query this app received, never over the Host header (behind a proxy
or a tunnel that is the proxy's address, and checking it would let a forged Host through).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from fastapi import HTTPException, Request
from starlette.datastructures import FormData
from twilio.request_validator import RequestValidator

FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class SignedForm:
    """The parameters of a webhook whose signature checked out."""

    form: FormData

    def get(self, name: str) -> str:
        value = self.form.get(name)
        return value if isinstance(value, str) else ""

    def require(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise HTTPException(400, f"missing parameter {name}")
        return value


def public_url(request: Request, public_base_url: str) -> str:
    query = request.url.query
    return public_base_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


async def signed_form(request: Request, auth_token: str | None, public_base_url: str) -> SignedForm:
    """The webhook's form parameters, or 403 (not from Twilio) / 400 (not a Twilio form post)."""
    signature = request.headers.get("x-twilio-signature")
    if not auth_token or not signature:
        raise HTTPException(403, "missing Twilio signature")
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != FORM_TYPE:
        raise HTTPException(400, f"expected {FORM_TYPE}")
    try:
        # Parsed here rather than by request.form(): that needs python-multipart for a plain form.
        form = FormData(urllib.parse.parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True,
                                               strict_parsing=False, max_num_fields=200))
    except (UnicodeDecodeError, ValueError) as e:
        raise HTTPException(400, "unreadable form body") from e
    if not RequestValidator(auth_token).validate(public_url(request, public_base_url), form, signature):
        raise HTTPException(403, "invalid Twilio signature")
    return SignedForm(form)
