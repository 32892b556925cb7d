"""The request body's size, bounded before anything reads it.

A pure ASGI middleware, outside routing and authentication: a ``Content-Length`` above the
limit is refused at once, and a chunked body is counted as it arrives, so the application
never holds more than the limit and one chunk. Refused bodies answer 413 as a problem
detail (``/problems/payload-too-large``)."""

from __future__ import annotations

import json
from typing import Any

from services.api.problems import MEDIA_TYPE

Scope = dict[str, Any]
Message = dict[str, Any]


def _problem(limit: int, path: str) -> tuple[Message, Message]:
    body = json.dumps({
        "type": "/problems/payload-too-large", "title": "Payload too large", "status": 413,
        "detail": f"The request body is larger than {limit} bytes; nothing was read or written.", "instance": path,
    }).encode()
    start = {"type": "http.response.start", "status": 413,
             "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}


class BodyLimit:
    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        # a malformed length is the server's to refuse (400); a digit string past 18 digits is over any limit
        if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > self.limit):
            for message in _problem(self.limit, scope.get("path", "")):
                await send(message)
            return
        state = {"read": 0, "refused": False, "started": False}

        async def counted_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message: Message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.limit:
                    state["refused"] = True
                    if not state["started"]:
                        for refusal in _problem(self.limit, scope.get("path", "")):
                            await send(refusal)
                    return {"type": "http.disconnect"}  # the application stops reading
            return message

        async def guarded_send(message: Message) -> None:
            if state["refused"]:
                return  # the 413 is the answer; whatever the application makes of the disconnect is dropped
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["refused"]:
                raise
