"""A FHIR R4 Backport subscription receiver (docs/integration.md, "FHIR subscriptions").

It checks every request's Standard Webhooks signature over the raw body, validates the
notification Bundle with ``fhir.resources``, drops a notification it has already handled
(same ``webhook-id``), and notices a gap in event numbers: then it asks careplan's
``$events`` for exactly the numbers it missed.

Run it:  CAREPLAN_WEBHOOK_SECRET=whsec_... uvicorn fhir_receiver:app --port 8085
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import httpx
from fhir.resources.R4B.bundle import Bundle
from standardwebhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

STATUS_PROFILE = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"


@dataclass
class Received:
    """What the receiver has handled: notification ids, event numbers, focus references."""

    ids: set[str] = field(default_factory=set)
    types: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    focus: list[str] = field(default_factory=list)
    gaps: list[tuple[int, int]] = field(default_factory=list)


def status_of(bundle: Bundle) -> dict[str, list]:
    """The subscription-status Parameters (first entry), parameter name -> values."""
    status = bundle.entry[0].resource
    assert status.get_resource_type() == "Parameters" and STATUS_PROFILE in status.meta.profile
    found: dict[str, list] = {}
    for p in status.parameter:
        if p.name == "notification-event":
            found.setdefault(p.name, []).append({part.name: part for part in p.part})
        else:
            found.setdefault(p.name, []).append(p.valueString or p.valueCode or p.valueCanonical or p.valueReference)
    return found


def make_app(secret: str, received: Received, careplan: str | None = None, token: str | None = None) -> Starlette:
    webhook = Webhook(secret)

    async def notify(request: Request) -> Response:
        body = await request.body()
        try:
            webhook.verify(body, dict(request.headers), json_parse=False)  # the raw bytes, as sent
        except WebhookVerificationError:
            return Response(status_code=401)
        if request.headers["webhook-id"] in received.ids:
            return Response(status_code=200)  # a retry of what we already have
        bundle = Bundle.model_validate_json(body)
        assert bundle.type == "history"
        status = status_of(bundle)
        received.types.append(status["type"][0])
        for event in status.get("notification-event", []):
            number = int(event["event-number"].valueString)
            last = max(received.numbers, default=0)
            if number > last + 1:
                received.gaps.append((last + 1, number - 1))
            if number > last + 1 and careplan:
                await fetch_missed(careplan, token, status["subscription"][0].reference, last + 1, number - 1,
                                   received)
            received.numbers.append(number)
            if "focus" in event:
                received.focus.append(event["focus"].valueReference.reference)
        received.ids.add(request.headers["webhook-id"])
        return Response(status_code=200)

    return Starlette(routes=[Route("/fhir-hook", notify, methods=["POST"])])


async def fetch_missed(careplan: str, token: str | None, subscription: str, first: int, last: int,
                       received: Received) -> None:
    """Ask careplan for exactly the events we missed (any range since the start)."""
    async with httpx.AsyncClient(base_url=careplan, headers={"Authorization": f"Bearer {token}"}) as client:
        answer = await client.get(f"/fhir/{subscription}/$events",
                                  params={"eventsSinceNumber": first, "eventsUntilNumber": last})
        answer.raise_for_status()
    for event in status_of(Bundle.model_validate_json(answer.content)).get("notification-event", []):
        received.numbers.append(int(event["event-number"].valueString))


app = make_app(os.environ.get("CAREPLAN_WEBHOOK_SECRET", "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZg=="), Received(),
               os.environ.get("CAREPLAN_URL"), os.environ.get("CAREPLAN_TOKEN"))
