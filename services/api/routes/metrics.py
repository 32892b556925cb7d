"""``/metrics``: the whole system's Prometheus metrics (services.api.metrics).

Public (no token), like the health probes: label values are names from the code (routes as
templates, classes, services, severities), never an id or anything a person wrote."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from services.api.dependencies import Api
from services.api.metrics import render


def include(router: APIRouter, api: Api) -> None:
    @router.get("/metrics", tags=["health"], summary="Prometheus metrics of the whole system (text format)",
                response_class=Response, responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    async def metrics_text() -> Response:
        figures = await api.metrics.families() if api.metrics is not None else []
        body = await asyncio.to_thread(render, figures)
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})
