"""``/healthz`` and ``/readyz``: for load balancers, orchestrators and `careplan status`.

Public (no token): they say nothing of clients or events, only which part of the system
works (:mod:`services.api.health`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.api.dependencies import Api
from services.shared.health import OK


def include(router: APIRouter, api: Api) -> None:
    @router.get("/healthz", tags=["health"], summary="The API process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if api.readiness is None:
        return
    readiness = api.readiness

    @router.get("/readyz", tags=["health"], summary="Every part the system needs works (200), or not (503)",
                responses={503: {"description": "A component is degraded or down; the body names it"}})
    async def readyz() -> Any:
        body = await readiness.report()
        return JSONResponse(body, status_code=200 if body["status"] == OK else 503,
                            headers={"Cache-Control": "no-store"})
