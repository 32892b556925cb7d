"""Tracing (issue 12): one trace from a PHQ-9 submission over HTTP, through the relay, the
scoring, the escalation and the care policies' reaction, on a real nats-server; nothing
of a person in any span; and no tracing at all unless the OTEL_* environment asks for it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from domain.base import Role
from services.api.app import Api, create_app
from services.api.auth import TokenRegistry, add_token
from services.assessment.service import SUBJECTS as ASSESSMENT_SUBJECTS
from services.assessment.service import AssessmentApplication
from services.care import policies
from services.care.application import CareApplication
from services.escalation.service import SUBJECTS as ESCALATION_SUBJECTS
from services.escalation.service import EscalationApplication
from services.shared import tracing
from services.shared.bus import EmbeddedNats
from services.shared.runner import RunningService
from services.shared.settings import Settings
from tests.support.bus import InProcessRelay, with_streams

CLIENT = "client-7731"
TITLE = "Low mood after the move to Leeds"
#: Item 9 (thoughts of self-harm) above 0: scored, then escalated, then the plan's reaction.
ITEM_9 = [1, 2, 1, 2, 1, 0, 1, 1, 2]
ACK_REASON = "Phoned her sister, who is with her tonight"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Every span, exported as it ends, through careplan's own provider (its id generator and
    redaction); the global provider is left alone."""
    spans = InMemorySpanExporter()
    tracing.use(tracing.tracer_provider([spans], service_name="careplan-test", batch=False))
    yield spans
    tracing.use(None)


@dataclass
class System:
    client: httpx.AsyncClient
    token: str
    supervisor: str
    spans: InMemorySpanExporter

    async def post(self, path: str, body: dict[str, Any], token: str | None = None, **headers: str) -> dict[str, Any]:
        answer = await self.client.post(path, json=body,
                                        headers={"Authorization": f"Bearer {token or self.token}", **headers})
        assert answer.status_code in (200, 201), answer.text
        return answer.json()

    async def get(self, path: str, token: str) -> Any:
        answer = await self.client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        return answer.json()

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    async def until(self, found: Callable[[list[ReadableSpan]], bool], what: str, timeout: float = 60) -> list[ReadableSpan]:
        deadline = time.monotonic() + timeout
        while not found(spans := self.finished()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {sorted({s.name for s in spans})}"
            await asyncio.sleep(0.1)
        return spans


@asynccontextmanager
async def running(tmp_path: Path, url: str, spans: InMemorySpanExporter) -> AsyncIterator[System]:
    """The API in-process, the care relay, and the assessment, escalation and care-policies
    services, each on the real nats-server."""
    settings = Settings(data_dir=tmp_path / "data", nats_url=url, relay_check_interval=0.5)
    token = add_token(tmp_path / "tokens.json", actor_id="clinician-1", role=Role.CLINICIAN, clients=(CLIENT,))
    supervisor = add_token(tmp_path / "tokens.json", actor_id="supervisor-1", role=Role.SUPERVISOR, clients=("*",))
    escalation = EscalationApplication(settings)
    care = CareApplication(settings, crises=escalation.crisis_held_open)
    assessment = AssessmentApplication(settings)
    app = create_app(Api(care, TokenRegistry.load(tmp_path / "tokens.json"), escalation, assessment))
    escalating = EscalationApplication(settings)
    try:
        async with (
            InProcessRelay(settings, url),
            RunningService(settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS),
            RunningService(settings, escalating, ESCALATION_SUBJECTS, tick=escalating.fire_due_timers, tick_interval=0.2),
            RunningService(settings, CareApplication(settings), policies.SUBJECTS, name=policies.NAME, with_relay=False),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://careplan.test") as client,
        ):
            yield System(client, token, supervisor, spans)
    finally:
        for application in (care, escalation, assessment):
            application.close()


async def course_of(system: System) -> tuple[str, str]:
    plan = (await system.post("/plans", {"client_id": CLIENT, "title": TITLE, "strategy": "short_term_moderate",
                                         "therapy_models": ["steady_progress"]}))["aggregate_id"]
    course = (await system.post("/courses", {"plan_id": plan, "modality": "interpersonal",
                                             "planned_sessions": 12}))["aggregate_id"]
    return plan, course


def submission(answers: list[int]) -> dict[str, Any]:
    return {"instrument": "PHQ-9", "answers": answers, "answered_at": "2026-05-04T09:00:00Z"}


def in_trace(spans: list[ReadableSpan], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context.trace_id == trace_id]


def processed(spans: list[ReadableSpan], service: str, event_type: str) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.CONSUMER and s.attributes.get("careplan.service") == service
            and s.attributes.get("careplan.event_type") == event_type]


def published(spans: list[ReadableSpan], event_type: str) -> list[ReadableSpan]:
    return [s for s in spans if s.kind is SpanKind.PRODUCER and s.attributes.get("careplan.event_type") == event_type]


def reaction_recorded(trace_id: int) -> Callable[[list[ReadableSpan]], bool]:
    """The care policies decided EscalationRaised, and the relay published what they recorded."""
    def found(spans: list[ReadableSpan]) -> bool:
        story = in_trace(spans, trace_id)
        reactions = [s for s in processed(story, policies.NAME, "EscalationRaised")
                     if s.attributes.get("careplan.event_types")]
        return bool(reactions) and all(published(story, kind) for kind in reactions[0].attributes["careplan.event_types"])
    return found


async def test_a_phq9_submission_is_one_trace_from_the_request_to_the_care_policies_reaction(
    tmp_path: Path, nats_server: EmbeddedNats, exporter: InMemorySpanExporter
) -> None:
    async with running(tmp_path, nats_server.url, exporter) as system:
        plan, course = await course_of(system)
        result = await system.post(f"/courses/{course}/submit-questionnaire", submission(ITEM_9))
        trace_id = UUID(result["correlation_id"]).int  # the story's correlation id is the request's trace
        spans = await system.until(reaction_recorded(trace_id), "the care policies' reaction in the story's trace")

        # A supervisor's acknowledgement is its own request, but joins the crisis's story.
        (crisis,) = await system.get("/escalations", system.supervisor)
        await system.post(f"/escalations/{crisis['id']}/acknowledge", {"reason": ACK_REASON}, system.supervisor)
        spans = await system.until(lambda found: bool(published(in_trace(found, trace_id), "EscalationAcknowledged")),
                                   "the acknowledgement's publish in the story's trace")

    acknowledging = [s for s in spans if s.name == "command AcknowledgeEscalation"]
    (acknowledged,) = [s for s in spans if s.name == "event EscalationAcknowledged"]
    assert len(acknowledging) == 1 and acknowledging[0].context.trace_id != trace_id
    assert acknowledged.context.trace_id == trace_id and acknowledged.parent is None
    assert acknowledged.links[0].context.span_id == acknowledging[0].context.span_id
    assert published(in_trace(spans, trace_id), "EscalationAcknowledged")[0].parent.span_id == acknowledged.context.span_id

    story = in_trace(spans, trace_id)
    by_id = {s.context.span_id: s for s in story}
    server = [s for s in story if s.kind is SpanKind.SERVER]
    assert [s.name for s in server] == ["POST /courses/{course_id}/submit-questionnaire"]
    assert server[0].parent is None  # no traceparent from the caller: the request is the root
    command = [s for s in story if s.name == "command SubmitQuestionnaire"]
    assert len(command) == 1 and command[0].parent.span_id == server[0].context.span_id
    submitted = [s for s in story if s.name == "event QuestionnaireSubmitted"]
    assert len(submitted) == 1 and submitted[0].parent.span_id == command[0].context.span_id
    assert submitted[0].context.span_id == tracing.event_span_id(result["event_ids"][0])

    # The relay's publish and the services' handling hang off the events they carry.
    assert published(story, "QuestionnaireSubmitted")[0].parent.span_id == submitted[0].context.span_id
    scoring = processed(story, "assessment", "QuestionnaireSubmitted")
    assert scoring and scoring[0].parent.span_id == submitted[0].context.span_id
    scored = [s for s in story if s.name == "event AssessmentScored"]
    assert scored and scored[0].parent.span_id == scoring[0].context.span_id
    assert published(story, "AssessmentScored")[0].parent.span_id == scored[0].context.span_id
    escalating = processed(story, "escalation", "AssessmentScored")
    assert escalating and escalating[0].parent.span_id == scored[0].context.span_id
    raised = [s for s in story if s.name == "event EscalationRaised"]
    assert raised and raised[0].parent.span_id == escalating[0].context.span_id
    reacting = processed(story, policies.NAME, "EscalationRaised")
    assert reacting and reacting[0].parent.span_id == raised[0].context.span_id
    assert reacting[0].attributes["careplan.event_types"]

    # One trace: every span of the story has its parent in it, except the request's.
    orphans = [s.name for s in story if s.parent is not None and s.parent.span_id not in by_id]
    assert orphans == []
    assert {s.name for s in story if s.parent is None} == {server[0].name, "event EscalationAcknowledged"}
    assert {s.parent.trace_id for s in story if s.parent is not None} == {trace_id}

    assert_nothing_personal(spans, [plan, course, crisis["id"], CLIENT, TITLE, "Leeds", ACK_REASON, "clinician-1",
                                    "supervisor-1", "Bearer"])


async def test_a_callers_traceparent_makes_its_trace_the_story(
    tmp_path: Path, nats_server: EmbeddedNats, exporter: InMemorySpanExporter
) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with running(tmp_path, nats_server.url, exporter) as system:
        _, course = await course_of(system)
        result = await system.post(f"/courses/{course}/submit-questionnaire", submission(ITEM_9),
                                   traceparent=f"00-{caller_trace}-{caller_span}-01")
        assert UUID(result["correlation_id"]) == UUID(caller_trace)
        trace_id = int(caller_trace, 16)
        spans = await system.until(reaction_recorded(trace_id), "the care policies' reaction in the caller's trace")
    story = in_trace(spans, trace_id)
    server = [s for s in story if s.kind is SpanKind.SERVER]
    assert len(server) == 1 and server[0].parent.span_id == int(caller_span, 16) and server[0].parent.is_remote
    assert processed(story, "assessment", "QuestionnaireSubmitted")
    assert processed(story, "escalation", "AssessmentScored")


def assert_nothing_personal(spans: list[ReadableSpan], forbidden: list[str]) -> None:
    """No attribute, event attribute or status of any span names a client, a plan or
    course, or carries text a person wrote."""
    seen = 0
    for span in spans:
        values = [*span.attributes.values(), span.status.description or "", span.name]
        values += [v for event in span.events for v in event.attributes.values()]
        for value in values:
            text = json.dumps(value) if not isinstance(value, str) else value
            seen += 1
            for word in forbidden:
                assert word.lower() not in text.lower(), f"{span.name}: {word!r} in {text!r}"
    assert seen


def test_without_otel_variables_no_provider_is_installed() -> None:
    """configure() in a process without OTEL_* installs nothing: the global provider stays the
    API's proxy, and careplan's helpers stay off."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    code = (
        "from opentelemetry import trace\n"
        "from services.shared import tracing\n"
        "assert tracing.configure('careplan-api') is False\n"
        "print(type(trace.get_tracer_provider()).__name__, tracing.enabled(), tracing.trace_uuid())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["ProxyTracerProvider", "False", "None"]
    for disabled in ({"OTEL_TRACES_EXPORTER": "none"}, {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}):
        assert tracing.wanted(disabled) == []
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) == ["otlp"]
    assert tracing.wanted({"OTEL_TRACES_EXPORTER": "console"}) == ["console"]


def test_with_an_exporter_configured_the_process_has_its_own_service_name() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(PYTHONPATH=str(ROOT), OTEL_TRACES_EXPORTER="console")
    code = (
        "from opentelemetry import trace\n"
        "from services.shared import tracing\n"
        "assert tracing.configure('careplan-assessment') is True\n"
        "print(trace.get_tracer_provider().resource.attributes['service.name'])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["careplan-assessment"]
    env["OTEL_SERVICE_NAME"] = "scoring-eu"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["scoring-eu"]
