"""Errors raised by the routes, shaped like FastAPI's own so the OpenAPI schema stays true."""

from __future__ import annotations

from fastapi import HTTPException


def unprocessable(loc: tuple[str, ...], msg: str) -> HTTPException:
    """A 422 whose ``detail`` is a list of validation errors, like request-validation failures."""
    return HTTPException(422, detail=[{"loc": list(loc), "msg": msg, "type": "value_error"}])
