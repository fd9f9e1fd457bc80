"""``GET /metrics`` for Prometheus (no auth: scrapers live on the operator's network)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.auth import get_ctx
from api.context import ApiContext
from journey.metrics import RealtimeCollector, exposition

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics(ctx: ApiContext = Depends(get_ctx)) -> Response:
    now = ctx.clock()

    def snapshot() -> tuple[list, list]:
        return ctx.routing.acd.queues_view(now), ctx.routing.acd.seats_view(now)

    queues, seats = await ctx.read_control(snapshot)
    gateway = ctx.gateway_stats() if ctx.gateway_stats else None
    body = exposition(RealtimeCollector(queues, seats, ctx.node_id, gateway))
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
