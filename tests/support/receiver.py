"""A local webhook receiver for the subscriptions tests: a Starlette app under uvicorn on a
free port of the test's own event loop, that verifies every request with
``standardwebhooks`` and records it; it can be stopped and started again on its port, and
told to answer with a status (410, 429 with ``Retry-After``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Self

import uvicorn
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from services.shared.bus import free_port


@dataclass(frozen=True)
class Received:
    path: str
    webhook_id: str
    number: int
    body: bytes
    headers: dict[str, str]
    at: float


@dataclass
class Endpoint:
    """One path's secret and answer."""

    secret: str | None = None
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)


class LocalReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoints: dict[str, Endpoint] = {}
        self.received: list[Received] = []
        #: Requests whose signature did not verify (every one must).
        self.unverified: list[str] = []
        self.mounts: dict[str, Any] = {}
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def of(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def _receive(self, request: Request) -> Response:
        path = request.url.path
        endpoint = self.endpoints.get(path)
        if endpoint is None:
            return Response(status_code=404)
        body = await request.body()
        headers = dict(request.headers)
        try:
            assert endpoint.secret is not None
            Webhook(endpoint.secret).verify(body, headers, json_parse=False)
        except (WebhookVerificationError, AssertionError):
            self.unverified.append(path)
            return Response(status_code=401)
        self.received.append(Received(path, headers["webhook-id"], int(headers.get("ce-eventnumber", "0")), body,
                                      headers, time.monotonic()))
        return Response(status_code=endpoint.status, headers=endpoint.headers)

    def app(self) -> Starlette:
        routes: list[Any] = [Mount(path, app) for path, app in self.mounts.items()]
        routes.append(Route("/{path:path}", self._receive, methods=["POST"]))
        return Starlette(routes=routes)

    async def start(self) -> None:
        config = uvicorn.Config(self.app(), host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            assert not self._task.done(), "the receiver did not start"
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 30)
            self._server = self._task = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()
