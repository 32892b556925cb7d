"""docs/examples/fhir_receiver.py, run as documented on a free port, receives what the
``fhir-rest-hook`` kind makes, signed as Standard Webhooks: it verifies every signature
over the raw bytes, validates each Bundle with fhir.resources, drops a retried
notification and notices a gap in event numbers."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import uvicorn
from standardwebhooks import Webhook

from domain.base import Actor, Role
from domain.events.assessment import AssessmentScored
from services.shared.bus import free_port
from services.subscriptions.fhir import subscription as backport
from services.subscriptions.fhir.kind import FHIR_REST_HOOK
from services.subscriptions.fhir.topics import TOPIC_BASE
from services.subscriptions.kinds import Notification, NumberedEvent, Scope, StreamEvent, SubscriptionState

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "fhir_receiver.py"
SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
WHEN = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("fhir_receiver", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, Any]]:
    example = load_example()
    received = example.Received()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(example.make_app(SECRET, received), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/fhir-hook", received
    finally:
        server.should_exit = True
        await task


def scored_event(number: int) -> NumberedEvent:
    event = AssessmentScored(
        originator_id=uuid4(), originator_version=2, timestamp=WHEN, actor=Actor(id="svc", role=Role.SERVICE),
        correlation_id=uuid4(), submission_id=uuid4(), course_id=uuid4(), plan_id=uuid4(), client_id="c-1",
        instrument="PHQ-9", answered_at=WHEN, total=9, severity="mild", answered_items=9, prorated=False,
        suicide_item_positive=False)
    return NumberedEvent(number, StreamEvent(
        event_id=str(event.event_id), source="assessment", sequence=number, type="t",
        subject=f"care.assessment.v1.assessment_record.{event.originator_id}.assessment_scored",
        aggregate_id=str(event.originator_id), time=WHEN.isoformat(), dataschema="s", client_id="c-1",
        body=event.model_dump_json().encode()))


async def post(client: httpx.AsyncClient, endpoint: str, notification: Notification, *, tamper: bool = False) -> int:
    """As the delivery engine sends it: webhook-id, -timestamp, -signature over the raw body."""
    stamp = datetime.now(UTC)
    signature = Webhook(SECRET).sign(notification.message_id, stamp, notification.body.decode())
    # one more space: the same JSON, other bytes (a re-serialised body fails too)
    body = notification.body + b" " if tamper else notification.body
    answer = await client.post(endpoint, content=body, headers={
        "content-type": notification.content_type, "webhook-id": notification.message_id,
        "webhook-timestamp": str(int(stamp.timestamp())), "webhook-signature": signature})
    return answer.status_code


async def test_the_documented_receiver_verifies_validates_deduplicates_and_notices_a_gap(
        receiver: tuple[str, Any]) -> None:
    endpoint, received = receiver
    request = {
        "resourceType": "Subscription", "status": "requested", "reason": "in-basket", "criteria":
            TOPIC_BASE + "questionnaire-scored",
        "_criteria": {"extension": [{"url": backport.FILTER_CRITERIA, "valueString": "Observation?patient=Patient/c-1"}]},
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": backport.PAYLOAD_CONTENT, "valueCode": "full-resource"}]}},
    }
    accepted = FHIR_REST_HOOK.accept(request, Scope(("c-1",)))

    def state(status: str, since: int) -> SubscriptionState:
        return SubscriptionState(id="sub-1", kind=FHIR_REST_HOOK.name, endpoint=accepted.endpoint,
                                 clients=accepted.clients, spec=accepted.spec, status=status,
                                 events_since_start=since, created_at=WHEN)

    events = [scored_event(n) for n in (1, 2, 3, 4)]
    async with httpx.AsyncClient() as client:
        handshake = FHIR_REST_HOOK.handshake(state("requested", 0), WHEN)
        assert handshake is not None
        assert await post(client, endpoint, handshake) == 200
        first = FHIR_REST_HOOK.notification(state("active", 1), events[:1])
        assert await post(client, endpoint, first, tamper=True) == 401  # a changed byte fails the signature
        assert await post(client, endpoint, first) == 200
        assert await post(client, endpoint, first) == 200  # a retry: handled once
        assert await post(client, endpoint, FHIR_REST_HOOK.notification(state("active", 2), events[1:2])) == 200
        # number 3 never arrives; 4 does
        assert await post(client, endpoint, FHIR_REST_HOOK.notification(state("active", 4), events[3:])) == 200
        heartbeat = FHIR_REST_HOOK.heartbeat(state("active", 4), WHEN)
        assert heartbeat is not None
        assert await post(client, endpoint, heartbeat) == 200
    assert received.types == ["handshake", "event-notification", "event-notification", "event-notification",
                              "heartbeat"]
    assert received.numbers == [1, 2, 4]
    assert received.gaps == [(3, 3)]
    assert received.focus == [f"Observation/{e.event.event_id}" for e in (events[0], events[1], events[3])]
