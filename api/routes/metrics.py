"""``GET /metrics`` for Prometheus (no auth: scrapers live on the operator's network)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

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
    realtime = RealtimeCollector(queues, seats, ctx.node_id, gateway)
    if ctx.observed_metrics is None:
        body = exposition(realtime)
    else:  # the API process: the counters are the control process's, the snapshot is pushed
        snapshot = CollectorRegistry(auto_describe=False)
        snapshot.register(realtime)
        body = await ctx.observed_metrics() + generate_latest(snapshot)
    return Response(content=body, media_type=CONTENT_TYPE_LATEST)
