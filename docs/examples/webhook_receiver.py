"""A receiver of careplan webhook subscriptions (docs/integration.md, "Webhooks").

Run it (``pip install standardwebhooks starlette uvicorn``)::

    CAREPLAN_WEBHOOK_SECRET=whsec_... python webhook_receiver.py 8080

then subscribe ``http://<this host>:8080/careplan`` (``POST /subscriptions``). It
verifies every request's signature over the raw body (Standard Webhooks), answers a
request it has seen before (same ``webhook-id``) without handling it again, and checks the
subscription's event numbers: the next one is handled, an older one is a repeat, a newer
one means events were missed (fetch them with ``GET /subscriptions/{id}/events``).
The test suite runs this file as a receiver (tests/integration/test_subscriptions.py).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class Receiver:
    def __init__(self, secret: str, handle: Callable[[int, dict[str, str], dict[str, Any]], None]) -> None:
        self.webhook = Webhook(secret)
        self.handle = handle
        #: The last event number handled (keep it in your database in production).
        self.last_number = 0
        self.missed: list[tuple[int, int]] = []

    async def receive(self, request: Request) -> Response:
        body = await request.body()  # the raw bytes: the signature covers exactly these
        headers = dict(request.headers)
        try:
            self.webhook.verify(body, headers, json_parse=False)
        except WebhookVerificationError:
            return Response(status_code=401)  # not from careplan (or tampered with): careplan will not retry a 401
        number = int(headers["ce-eventnumber"])
        if number <= self.last_number:
            return Response(status_code=204)  # a repeat (at-least-once delivery): already handled
        if number > self.last_number + 1:
            self.missed.append((self.last_number + 1, number - 1))  # fetch these by number, then go on
        self.handle(number, headers, json.loads(body))
        self.last_number = number
        return Response(status_code=204)  # any 2xx: delivered; 5xx, 408, 429: careplan retries


def create_app(secret: str, handle: Callable[[int, dict[str, str], dict[str, Any]], None]) -> Starlette:
    return Starlette(routes=[Route("/careplan", Receiver(secret, handle).receive, methods=["POST"])])


def show(number: int, headers: dict[str, str], event: dict[str, Any]) -> None:
    print(number, headers["ce-type"], headers["ce-subject"], event["originator_version"])


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(os.environ["CAREPLAN_WEBHOOK_SECRET"], show), host="0.0.0.0",
                port=int(sys.argv[1]) if len(sys.argv) > 1 else 8080)
