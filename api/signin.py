"""The first sign-in of a new node: a one-time link printed on the terminal, as notebook servers do.

A newcomer who runs ``handoff122 serve`` for the first time has no token and should not need to
read the docs to open the dashboard.  While the node has no token at all, it makes a one-time
code (kept only as a hash, in memory) and prints ``/signin?code=...``.  The first visit mints a
supervisor token, hands it to the browser (stored like a pasted token) and burns the code: a
second visit, or a visit after a restart, gets a page that says how to make a token instead.
The token is minted at the visit, not at start, so no plaintext token ever waits in memory.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import secrets
import time
from typing import Protocol

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

#: A link left unused this long stops working (the node prints a new one at its next start).
CODE_TTL_S = 24 * 3600


class TokenMinter(Protocol):
    async def create(self, role: str, seat_id: str | None = None, label: str | None = None,
                     now: float | None = None) -> str: ...

    async def list(self) -> list[dict[str, object]]: ...


class OneTimeSignIn:
    """One code, good for one sign-in."""

    def __init__(self, tokens: TokenMinter, code: str | None = None, now: float | None = None) -> None:
        self.tokens = tokens
        self.code = code or secrets.token_urlsafe(24)
        self._digest: str | None = hashlib.sha256(self.code.encode()).hexdigest()
        self._expires = (time.time() if now is None else now) + CODE_TTL_S

    async def redeem(self, code: str, now: float | None = None) -> str | None:
        """A fresh supervisor token for the right, unused, unexpired code; None otherwise."""
        digest = self._digest
        now = time.time() if now is None else now
        if digest is None or now > self._expires or len(code) > 200:
            return None
        if not hmac.compare_digest(digest, hashlib.sha256(code.encode()).hexdigest()):
            return None
        self._digest = None  # burnt before the await: two racing visits cannot both win
        return await self.tokens.create("supervisor", label="first sign-in link")

    @property
    def used(self) -> bool:
        return self._digest is None


async def first_sign_in(tokens: TokenMinter) -> OneTimeSignIn | None:
    """A one-time sign-in when the node has no token yet (its very first start), else None."""
    return None if await tokens.list() else OneTimeSignIn(tokens)


_SIGNED_IN = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>122</title></head>
<body><p>已登录 · Signed in</p><script>
localStorage.setItem("h122.supervisorToken", {token});
location.replace("/");
</script></body></html>"""

_REFUSED = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>122</title>
<link rel="stylesheet" href="/static/style.css"></head><body><main class="notice">
<h1>登录链接已失效 · This sign-in link no longer works</h1>
<p>一次性登录链接只能使用一次。请在节点所在机器上创建令牌：</p>
<p>A one-time sign-in link works once. Make a token on the node's machine:</p>
<pre>{command}</pre><p><a href="/">→ /</a></p></main></body></html>"""


def signin_router(signin: OneTimeSignIn | None, token_command: str) -> APIRouter:
    router = APIRouter()

    @router.get("/signin", include_in_schema=False)
    async def sign_in(request: Request) -> HTMLResponse:
        code = request.query_params.get("code", "")
        token = await signin.redeem(code) if signin is not None and code else None
        if token is None:
            return HTMLResponse(_REFUSED.format(command=html.escape(token_command)), status_code=410,
                                headers={"Cache-Control": "no-store"})
        # json.dumps makes the token a JS string literal; the page is never cached.
        return HTMLResponse(_SIGNED_IN.format(token=json.dumps(token)),
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    return router
