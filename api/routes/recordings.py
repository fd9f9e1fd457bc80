"""Recordings download (supervisors only), with HTTP range requests so players can seek.

Every download is written to the audit log (who, when, which recording, from where, which range)
before a byte is sent; a download that cannot be recorded is refused (503).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path as FsPath
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request
from fastapi.responses import Response, StreamingResponse

from api.audit import RECORDING_DOWNLOAD
from api.auth import client_ip, get_ctx, supervisor
from api.context import ApiContext
from api.tokens import Principal

router = APIRouter(prefix="/api/v1/recordings", tags=["recordings"])

CHUNK = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range as (first, last) inclusive, None for "the whole file".

    Multiple ranges are answered with the whole file (allowed by RFC 9110); a syntactically bad
    header is ignored like the RFC says; a range that starts past the end cannot be satisfied.
    """
    header = header.strip()
    if "," in header:
        return None
    m = _RANGE.match(header.replace(" ", ""))
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first_s, last_s = m.groups()
    if not first_s:  # suffix: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None
    if first >= size:
        raise RangeNotSatisfiable
    return first, min(last, size - 1)


def _field(row: Any, name: str) -> Any:
    return row.get(name) if isinstance(row, dict) else getattr(row, name, None)


async def _file_chunks(path: FsPath, first: int, length: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(first)
        left = length
        while left > 0:
            data = await f.read(min(CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data


async def _audit(ctx: ApiContext, request: Request, who: Principal, recording_id: str,
                 rng: tuple[int, int] | None, size: int) -> None:
    if ctx.audit is None:
        return
    detail: dict[str, Any] = {"bytes": size} if rng is None else {"range": [rng[0], rng[1]], "size": size}
    try:
        await ctx.on_control(ctx.audit.record, RECORDING_DOWNLOAD, who, recording_id, detail, client_ip(request))
    except Exception as e:
        raise HTTPException(503, detail="the download could not be audited; try again") from e


@router.get(
    "/{recording_id}",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}, "description": "the recording (WAV)"},
               206: {"content": {"audio/wav": {}}, "description": "the requested byte range"},
               404: {"description": "unknown or unfinished recording"},
               416: {"description": "range not satisfiable"},
               503: {"description": "the download could not be audited"}},
)
async def get_recording(request: Request, recording_id: str = Path(max_length=128),
                        range_: str | None = Header(None, alias="range"), who: Principal = Depends(supervisor),
                        ctx: ApiContext = Depends(get_ctx)) -> Response:
    if ctx.recordings is None:
        raise HTTPException(404, detail="recordings are not kept on this node")
    row = await ctx.on_control(ctx.recordings.get, recording_id)
    if row is None:
        raise HTTPException(404, detail=f"unknown recording {recording_id!r}")
    status = _field(row, "status")
    if status is not None and str(status) != "closed":  # recording, failed or purged: no sealed file
        raise HTTPException(404, detail=f"recording {recording_id!r} is {status}")
    file_of = getattr(ctx.recordings, "file_of", None)
    path = FsPath(file_of(row)) if file_of is not None else FsPath(str(_field(row, "path")))
    try:
        size = os.stat(path).st_size
    except OSError as e:
        raise HTTPException(404, detail=f"recording {recording_id!r} file is missing") from e
    headers = {"Accept-Ranges": "bytes", "Content-Disposition": f'inline; filename="{path.name}"'}
    sha = _field(row, "sha256")
    if sha:
        headers["ETag"] = f'"{sha}"'
    try:
        rng = parse_range(range_, size) if range_ else None
    except RangeNotSatisfiable:
        return Response(status_code=416, content=b'{"detail":"range not satisfiable"}', media_type="application/json",
                        headers={"Content-Range": f"bytes */{size}"})
    await _audit(ctx, request, who, recording_id, rng, size)
    if rng is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_file_chunks(path, 0, size), media_type="audio/wav", headers=headers)
    first, last = rng
    length = last - first + 1
    headers["Content-Range"] = f"bytes {first}-{last}/{size}"
    headers["Content-Length"] = str(length)
    return StreamingResponse(_file_chunks(path, first, length), status_code=206, media_type="audio/wav",
                             headers=headers)
