"""A FHIR R4 Backport subscription end to end, with real processes' parts: the care
application and its relay on a real NATS, the subscriptions service's consumer and
delivery engine, the HTTP API, and the documented receiver (docs/examples/fhir_receiver.py)
on a free port, verifying every signature and validating every Bundle with fhir.resources.

One test proves several things (CI time): a client-scoped token cannot subscribe to, see
or read another client's subscription; the handshake comes first and makes it active; the
client's session events arrive numbered 1, 2, 3 (the other client's never); a heartbeat
follows; ``$events`` over the range answers what was delivered; ``$status``; a
subscription whose endpoint answers 404 is in ``error`` with the reason; DELETE → off.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle

from domain.base import Role
from services.api.auth import add_token
from services.api.routes.fhir_subscriptions import SECRET_EXTENSION
from services.api.server import build
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.shared.bus import EmbeddedNats, free_port
from services.shared.runner import RunningService
from services.shared.settings import Settings
from services.subscriptions.fhir import subscription as backport
from services.subscriptions.fhir.topics import TOPIC_BASE
from services.subscriptions.service import SUBJECTS, SubscriptionsApplication
from tests.conftest import CLINICIAN
from tests.support.bus import InProcessRelay, with_streams

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "fhir_receiver.py"
META = CommandMeta(actor=CLINICIAN)
HEARTBEAT = 10  # seconds: the shortest a subscriber may ask


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


def subscription_body(endpoint: str, client_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Subscription", "status": "requested", "reason": "Sessions to the EHR",
        "criteria": TOPIC_BASE + "session-scheduled",
        "_criteria": {"extension": [{"url": backport.FILTER_CRITERIA,
                                     "valueString": f"Appointment?patient=Patient/{client_id}"}]},
        "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": "application/fhir+json",
                    "header": ["Authorization: Bearer ehr-side-token"],
                    "_payload": {"extension": [{"url": backport.PAYLOAD_CONTENT, "valueCode": "id-only"}]},
                    "extension": [{"url": backport.HEARTBEAT_PERIOD, "valueUnsignedInt": HEARTBEAT},
                                  {"url": backport.TIMEOUT, "valueUnsignedInt": 5}]},
    }


def schedule_sessions(app: CareApplication, client_id: str, count: int) -> None:
    plan = app.handle(c.DraftCarePlan(client_id=client_id, title="Mood", strategy="short_term_moderate",
                                      therapy_models=["emotional_calm"]), META).aggregate_id
    course = app.handle(c.StartCourse(plan_id=plan, modality="interpersonal", planned_sessions=12), META).aggregate_id
    start = datetime(2027, 1, 4, 9, tzinfo=UTC)
    for week in range(count):
        app.handle(c.ScheduleSession(course_id=course, scheduled_for=start + timedelta(weeks=week)), META)


def receiver_module() -> Any:
    spec = importlib.util.spec_from_file_location("fhir_receiver_e2e", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def until(condition: Any, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_a_fhir_subscription_is_handshaken_notified_heartbeaten_and_answers_its_events(
        backend_settings: Settings, nats_server: EmbeddedNats) -> None:
    settings = backend_settings.model_copy(update={"nats_url": nats_server.url, "subscription_backoff_seconds": 0.2})
    tokens = settings.tokens_path()
    own = {"Authorization": "Bearer " + add_token(tokens, actor_id="ehr-a", role=Role.INTEGRATION, clients=("client-a",))}
    other = {"Authorization": "Bearer " + add_token(tokens, actor_id="ehr-b", role=Role.INTEGRATION,
                                                    clients=("client-b",))}
    api, app = build(settings)
    client = TestClient(app)
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/fhir-hook"
    try:
        # outside the profile: an OperationOutcome naming the element, nothing stored
        websocket = subscription_body(endpoint, "client-a")
        websocket["channel"]["type"] = "websocket"
        invalid = client.post("/fhir/Subscription", json=websocket, headers=own)
        assert invalid.status_code == 422 and invalid.headers["content-type"].startswith("application/fhir+json")
        assert invalid.json()["issue"][0]["expression"] == ["Subscription.channel.type"]
        assert client.get("/fhir/Subscription", headers=own).json()["total"] == 0
        # another client's token cannot subscribe to client-a's events; nothing is stored
        refused = client.post("/fhir/Subscription", json=subscription_body(endpoint, "client-a"), headers=other)
        assert refused.status_code == 403, refused.text
        made = client.post("/fhir/Subscription", json=subscription_body(endpoint, "client-a"), headers=own)
        assert made.status_code == 201, made.text
        sid = made.json()["id"]
        secret = next(e["valueString"] for e in made.json()["extension"] if e["url"] == SECRET_EXTENSION)
        assert made.json()["status"] == "requested" and made.json()["channel"]["header"] == ["Authorization: ***"]
        # ... nor see or read it
        assert client.get(f"/fhir/Subscription/{sid}", headers=other).status_code == 404
        assert "entry" not in client.get("/fhir/Subscription", headers=other).json()
        assert client.get(f"/fhir/Subscription/{sid}/$events", headers=other).status_code == 404

        # one whose endpoint answers 404: its handshake fails, so it is in error at once
        wrong = client.post("/fhir/Subscription", json=subscription_body(endpoint.replace("fhir-hook", "nowhere"),
                                                                         "client-a"), headers=own)
        assert wrong.status_code == 201, wrong.text
        broken = wrong.json()["id"]

        schedule_sessions(api.care, "client-a", 3)
        schedule_sessions(api.care, "client-b", 2)  # never delivered to client-a's subscriber

        example = receiver_module()
        received = example.Received()
        server = uvicorn.Server(uvicorn.Config(example.make_app(secret, received), host="127.0.0.1", port=port,
                                               log_level="warning", access_log=False))
        serving = asyncio.create_task(server.serve())
        subscriptions = SubscriptionsApplication(settings)
        try:
            async with InProcessRelay(settings, nats_server.url), RunningService(
                    settings, subscriptions, SUBJECTS, background=subscriptions.run_background):
                await until(lambda: len(received.numbers) >= 3, 60, "three notifications")
                await until(lambda: "heartbeat" in received.types, HEARTBEAT + 20, "a heartbeat")
                await until(lambda: client.get(f"/fhir/Subscription/{broken}", headers=own).json()["status"] == "error",
                            20, "the failed handshake's error")
        finally:
            server.should_exit = True
            await serving
            subscriptions.close()

        assert received.types[0] == "handshake"
        assert received.types[1:4] == ["event-notification"] * 3
        assert received.numbers == [1, 2, 3] and received.gaps == []
        assert all(f.startswith("Appointment/") for f in received.focus) and len(set(received.focus)) == 3

        shown = client.get(f"/fhir/Subscription/{sid}", headers=own).json()
        assert shown["status"] == "active", shown
        answer = client.get(f"/fhir/Subscription/{sid}/$events", headers=own,
                            params={"eventsSinceNumber": 1, "eventsUntilNumber": 3})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/fhir+json")
        events = Bundle.model_validate_json(answer.content)
        status = example.status_of(events)
        assert status["type"] == ["query-event"]
        assert [int(e["event-number"].valueString) for e in status["notification-event"]] == received.numbers
        assert [e["focus"].valueReference.reference for e in status["notification-event"]] == received.focus
        backwards = client.get(f"/fhir/Subscription/{sid}/$events", headers=own,
                               params={"eventsSinceNumber": 3, "eventsUntilNumber": 1})
        assert backwards.status_code == 422, backwards.text
        assert client.get("/fhir/Subscription", params={"status": "on"}, headers=own).status_code == 422
        later = client.get(f"/fhir/Subscription/{sid}/$events", headers=own, params={"eventsSinceNumber": 2})
        assert [int(e["event-number"].valueString)
                for e in example.status_of(Bundle.model_validate_json(later.content))["notification-event"]] == [2, 3]
        state = example.status_of(Bundle.model_validate_json(
            client.get(f"/fhir/Subscription/{sid}/$status", headers=own).content))
        assert state["status"] == ["active"] and state["events-since-subscription-start"] == ["3"]
        assert client.get("/fhir/Subscription", params={"status": "active"}, headers=own).json()["total"] == 1
        # the failed one says why, on the resource and in $status
        failed = client.get(f"/fhir/Subscription/{broken}", headers=own).json()
        assert "404" in failed["error"], failed
        why = example.status_of(Bundle.model_validate_json(
            client.get(f"/fhir/Subscription/{broken}/$status", headers=own).content))
        assert why["status"] == ["error"] and why["type"] == ["query-status"]
        assert [p for p in Bundle.model_validate_json(client.get(
            f"/fhir/Subscription/{broken}/$status", headers=own).content).entry[0].resource.parameter
            if p.name == "error" and "404" in p.valueCodeableConcept.text]
        assert client.get("/fhir/Subscription", params={"status": "error"}, headers=own).json()["total"] == 1

        ended = client.delete(f"/fhir/Subscription/{sid}", headers=own)
        assert ended.status_code == 200 and ended.json()["status"] == "off"
        assert client.get(f"/fhir/Subscription/{sid}", headers=own).json()["status"] == "off"
    finally:
        for part in (api.care, api.escalation, api.assessment, api.dead_letters, api.readiness, api.subscriptions):
            part.close()
        api.access_log.close()
