"""services/shared/tracing.py without a bus: the helpers while off, event span ids, names
from the wire, and what the exporter lets out."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID, uuid4

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from contracts.subjects import event_token
from domain.events import public_event_classes
from services.shared import tracing
from services.shared.cloudevents import OutboundMessage, traceparent


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.use(tracing.tracer_provider([exporter], service_name="careplan-test", batch=False))
    yield exporter
    tracing.use(None)


def test_while_off_every_helper_does_nothing() -> None:
    assert not tracing.enabled()
    assert tracing.trace_uuid() is None
    assert tracing.decisions("assessment", "assessment") is None
    message = OutboundMessage(1, "care.clinical.v1.care_plan.x.plan_drafted", {}, b"{}")
    assert tracing.publish_span("care", message) is None


def test_an_event_span_has_the_id_its_traceparent_names(spans: InMemorySpanExporter) -> None:
    event_id = uuid4()
    tracer = tracing.tracer()
    assert tracer is not None
    other_story = uuid4()
    with tracer.start_as_current_span("command Y") as command:
        own = UUID(int=command.get_span_context().trace_id)
        tracing.recorded("care", [(event_id, "PlanDrafted", own), (uuid4(), "CrisisAcknowledged", other_story)])
    finished = {s.name: s for s in spans.get_finished_spans()}
    drafted, acknowledged = finished["event PlanDrafted"], finished["event CrisisAcknowledged"]
    wire = traceparent(str(own), str(event_id)).split("-")
    assert f"{drafted.context.trace_id:032x}" == wire[1] and f"{drafted.context.span_id:016x}" == wire[2]
    assert drafted.parent.span_id == command.get_span_context().span_id
    # an event of another story starts that story's trace, linked to the command
    assert acknowledged.context.trace_id == other_story.int and acknowledged.parent is None
    assert acknowledged.links[0].context.span_id == command.get_span_context().span_id


def test_the_exporter_strips_ids_queries_and_exception_messages(spans: InMemorySpanExporter) -> None:
    plan = uuid4()
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("POST /plans/{plan_id}/add-goal") as span:
        span.set_attributes({"http.target": f"/plans/{plan}/add-goal?note=Ms+Smith", "url.path": f"/plans/{plan}",
                             "url.query": "note=Ms+Smith", "http.route": "/plans/{plan_id}/add-goal"})
        span.record_exception(ValueError("Ms Smith said she would harm herself"))
        span.set_status(StatusCode.ERROR, "ValueError: Ms Smith said she would harm herself")
    (exported,) = spans.get_finished_spans()
    assert exported.attributes["http.target"] == "/plans/{id}/add-goal"
    assert exported.attributes["url.path"] == "/plans/{id}"
    assert "url.query" not in exported.attributes
    assert exported.status.description == "ValueError"
    (event,) = exported.events
    assert dict(event.attributes) == {"exception.type": "ValueError", "exception.escaped": "False"}


def test_subject_patterns_and_class_names_come_from_the_wire() -> None:
    aggregate = str(uuid4())
    subject = f"care.clinical.v1.therapy_course.{aggregate}.questionnaire_submitted"
    assert tracing.subject_pattern(subject, aggregate) == "care.clinical.v1.therapy_course.*.questionnaire_submitted"
    classes = [cls for group in public_event_classes().values() for cls in group]
    assert classes
    for cls in classes:
        assert tracing.class_name(f"org.careplan.x.v1.y.{event_token(cls)}") == cls.__name__
