"""The request body's size, bounded before anything reads it.

Part of the one pure ASGI middleware every request passes (:mod:`services.api.door`),
outside routing and authentication: a ``Content-Length`` above the
limit is refused at once, and a chunked body is counted as it arrives, so the application
never holds more than the limit and one chunk. Refused bodies answer 413 as a problem
detail (``/problems/payload-too-large``)."""

from __future__ import annotations

import json
from typing import Any

from services.api.problems import MEDIA_TYPE

Message = dict[str, Any]


def refusal(limit: int, path: str) -> tuple[Message, Message]:
    body = json.dumps({
        "type": "/problems/payload-too-large", "title": "Payload too large", "status": 413,
        "detail": f"The request body is larger than {limit} bytes; nothing was read or written.", "instance": path,
    }).encode()
    start = {"type": "http.response.start", "status": 413,
             "headers": [(b"content-type", MEDIA_TYPE.encode()), (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]}
    return start, {"type": "http.response.body", "body": body}
