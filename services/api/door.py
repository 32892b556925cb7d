"""What every request passes on its way in and out, as one pure ASGI middleware.

From the outside in: the access log line (every request, refused ones too, a 413 included),
the body limit (before routing and authentication: :mod:`services.api.body_limit`), the HTTP
figures (:class:`services.api.metrics.HttpMetrics`). These were three middlewares, one of
them Starlette's ``BaseHTTPMiddleware`` (a task group and two memory streams per request);
as one they cost one wrapped ``send`` and one wrapped ``receive`` per request (issue 17:
the profile of the command path).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from services.api import access_log as access
from services.api.body_limit import refusal
from services.api.metrics import HttpMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Door:
    """``log``: an :class:`services.api.access_log.AccessLog`, or None (no access log)."""

    def __init__(
        self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, limit: int, log: access.AccessLog | None
    ) -> None:
        self.app, self.limit, self.log = app, limit, log
        self.figures = HttpMetrics(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at, started = time.time(), time.perf_counter()
        # The request as it came in (a mounted application changes the scope's root path);
        # the state is the one request.state shares, where authentication names the caller.
        path, query = scope.get("path", ""), scope.get("query_string", b"")
        state = scope.setdefault("state", {})
        root = str(scope.get("root_path", ""))
        # sent: the status the client got (None: nothing yet); app: the status the application
        # answered (a refused body's 413 was not the application's, nor counted in its figures)
        sent: list[int | None] = [None]
        app_status = 500
        limit = self.limit
        read = 0
        refused = False

        async def answer_413() -> None:
            for message in refusal(limit, path):
                await send(message)
            sent[0] = 413

        declared = _content_length(scope)
        # a malformed length is the server's to refuse (400); a digit string past 18 digits is over any limit
        if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            await answer_413()
            self._logged(state, scope, path, query, started_at, sent[0])
            return

        async def counted_receive() -> Message:
            nonlocal read, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > limit:
                    refused = True
                    if sent[0] is None:
                        await answer_413()
                    return {"type": "http.disconnect"}  # the application stops reading
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal app_status
            if message["type"] == "http.response.start":
                app_status = int(message["status"])
            if refused:
                return  # the 413 is the answer; whatever the application makes of the disconnect is dropped
            if message["type"] == "http.response.start":
                sent[0] = app_status
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not refused:
                raise
        finally:
            elapsed = time.perf_counter() - started
            self.figures.observe(scope, app_status, elapsed, root)
            # an exception on its way out is answered 500 by the server-error middleware outside
            self._logged(state, scope, path, query, started_at, sent[0] if sent[0] is not None else 500)

    def _logged(self, state: Any, scope: Scope, path: str, query: bytes, started_at: float, status: int | None) -> None:
        if self.log is not None:
            self.log.write(state.get("principal"), str(scope.get("method", "")), path, query, status or 500, started_at)


def _content_length(scope: Scope) -> bytes | None:
    found: bytes | None = dict(scope.get("headers") or ()).get(b"content-length")
    return found
