"""OpenTelemetry tracing: one trace per care story, across the API, the relays and the services.

Off by default. :func:`configure` (once per process) installs a ``TracerProvider`` only when
the standard environment asks for one: ``OTEL_TRACES_EXPORTER`` set to ``otlp`` (HTTP/protobuf)
or ``console``, or an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` wins. The resource comes
from ``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES``, else the process's own name
(``careplan-api``, ``careplan-relay-care``, ``careplan-assessment``...). While off, every
helper here returns at its first line: no span, no attribute, no context.

How a story becomes one trace (docs/operations.md, Tracing):

- the API's server span (FastAPI instrumentation) is the root, or the child of the caller's
  ``traceparent``; the command span is its child, and a command's correlation id is the
  trace id (:func:`trace_uuid`), unless the caller named a story of its own;
- each event the command recorded gets a span whose id is the one its CloudEvent's
  ``traceparent`` names (the first 64 bits of the event id, see
  :func:`services.shared.cloudevents.traceparent`), so what follows the event on the wire has
  a parent in the trace: the relay's publish span and each service's handling span are
  children of the message's ``traceparent``;
- a service's decisions keep the inbound correlation id: their event spans, children of the
  handling span, continue the same trace.

Span attributes are names and positions only: classes, applications and services, subject
patterns with ``*`` for the aggregate id, notification ids and stream sequences, outcomes and
error classes. Never a client, an aggregate id or anything a person wrote; the exporter
(:class:`RedactingExporter`) also strips ids from URLs and the message of any recorded
exception, whatever instrumentation recorded them.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import os
import re
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from opentelemetry import trace
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from domain.errors import DomainError

log = logging.getLogger(__name__)

TRACER_NAME = "careplan"
#: The exporters :func:`configure` knows (``OTEL_TRACES_EXPORTER``, comma-separated).
EXPORTERS = ("otlp", "console")
#: The requests that are not traced (probes and scrapes).
EXCLUDED_URLS = "/healthz,/readyz,/metrics"

#: The tracer of the provider in use; None while tracing is off (the hot paths' only check).
_tracer: trace.Tracer | None = None
_provider: Any = None
_configured = False
#: (trace id or None, span id) the next span must have: an event's span, whose id its
#: CloudEvent's traceparent already names (see :class:`EventSpanIds`).
_forced_ids: contextvars.ContextVar[tuple[int | None, int] | None] = contextvars.ContextVar(
    "careplan_forced_span_ids", default=None
)
_PROPAGATOR = TraceContextTextMapPropagator()


# --------------------------------------------------------------------- setting up


def wanted(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[str]:
    """The exporters the environment asks for; empty: tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if named:
        return [e for e in named if e != "none"]
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


def configure(service_name: str) -> bool:
    """Tracing for this process, as the ``OTEL_*`` environment says (see the module); True
    when a provider was installed. Once per process: later calls change nothing. A provider
    installed before (``opentelemetry-instrument``) is used as it is."""
    global _configured
    if _configured:
        return _tracer is not None
    _configured = True
    existing = trace.get_tracer_provider()
    if not isinstance(existing, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        use(existing)
        return True
    exporters = wanted()
    if not exporters:
        return False
    made = []
    for name in exporters:
        exporter = _exporter(name)
        if exporter is not None:
            made.append(exporter)
    if not made:
        return False
    provider = tracer_provider(made, service_name=service_name)
    trace.set_tracer_provider(provider)
    use(provider)
    log.info("tracing on: %s as %s", ", ".join(exporters), provider.resource.attributes.get("service.name"))
    return True


def _exporter(name: str) -> SpanExporter | None:
    if name == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if protocol and protocol != "http/protobuf":
            log.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s: careplan exports traces over http/protobuf only", protocol)
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    log.warning("OTEL_TRACES_EXPORTER names %r: careplan knows %s; ignored", name, ", ".join(EXPORTERS))
    return None


def tracer_provider(exporters: Sequence[SpanExporter], *, service_name: str, batch: bool = True) -> TracerProvider:
    """A provider as careplan needs it: event spans keep their ids (:class:`EventSpanIds`),
    and what it exports is redacted (:class:`RedactingExporter`). ``batch=False``: each span
    is exported when it ends (tests)."""
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    provider = TracerProvider(resource=resource, id_generator=EventSpanIds())  # sampler: OTEL_TRACES_SAMPLER
    for exporter in exporters:
        redacted = RedactingExporter(exporter)
        provider.add_span_processor(BatchSpanProcessor(redacted) if batch else SimpleSpanProcessor(redacted))
    return provider


def use(provider: Any) -> None:
    """Traces with ``provider`` from now on (None: off). :func:`configure` calls it; a test
    passes its own provider without touching the global one."""
    global _tracer, _provider
    _provider = provider
    _tracer = provider.get_tracer(TRACER_NAME) if provider is not None else None


def enabled() -> bool:
    return _tracer is not None


def tracer() -> trace.Tracer | None:
    """careplan's tracer, or None while tracing is off."""
    return _tracer


def instrument_app(app: Any) -> None:
    """The FastAPI instrumentation on ``app``, while tracing is on: a server span per request,
    the child of the caller's ``traceparent`` when it sends one."""
    if _tracer is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=_provider, excluded_urls=EXCLUDED_URLS,
                                       exclude_spans=["receive", "send"])


# --------------------------------------------------------------------- ids


def trace_uuid() -> UUID | None:
    """The current trace id as a correlation id, or None (tracing off, or no span)."""
    if _tracer is None:
        return None
    context = trace.get_current_span().get_span_context()
    return UUID(int=context.trace_id) if context.is_valid else None


def event_span_id(event_id: UUID | str) -> int:
    """The span id an event's traceparent names: the first 64 bits of its id."""
    return int(str(event_id).replace("-", "")[:16], 16)


class EventSpanIds(RandomIdGenerator):
    """Random ids, except for an event's span: its id is already named by the event's
    traceparent (derived from the event id), which the relay and the services take as parent."""

    def generate_span_id(self) -> int:
        forced = _forced_ids.get()
        return forced[1] if forced is not None else super().generate_span_id()

    def generate_trace_id(self) -> int:
        forced = _forced_ids.get()
        return forced[0] if forced is not None and forced[0] else super().generate_trace_id()


# --------------------------------------------------------------------- commands


def traced_command(handle: Callable[..., Any]) -> Callable[..., Any]:
    """``CommandHandling.handle`` with a span (``command <Class>``), then a span per recorded
    event. While tracing is off, one check."""

    @functools.wraps(handle)
    def traced(app: Any, command: Any, meta: Any) -> Any:
        if _tracer is None:
            return handle(app, command, meta)
        name = type(command).__name__
        with _tracer.start_as_current_span(f"command {name}", record_exception=False,
                                           set_status_on_exception=False) as span:
            if span.is_recording():
                span.set_attributes({"careplan.application": str(getattr(app, "name", "")), "careplan.command": name})
            try:
                result = handle(app, command, meta)
            except BaseException as e:
                failed(span, e)
                raise
            if span.is_recording():
                span.set_attributes({"careplan.outcome": "accepted", "careplan.event_types": list(result.event_types)})
                recorded(str(getattr(app, "name", "")),
                         [(event_id, kind, result.correlation_id) for event_id, kind in
                          zip(result.event_ids, result.event_types, strict=False)])
            return result

    return traced


def failed(span: Any, error: BaseException) -> None:
    """An error on a span: its class only (a message can quote what a person wrote)."""
    if not span.is_recording():
        return
    kind = type(error).__name__
    span.set_attributes({"careplan.outcome": "refused" if isinstance(error, DomainError) else "failed", "error.type": kind})
    span.set_status(Status(StatusCode.ERROR, kind))


def recorded(application: str, events: Sequence[tuple[UUID | str, str, UUID | str]], parent: Any = None) -> None:
    """A span per recorded event ``(event id, class name, correlation id)``, child of
    ``parent`` (default: the current span; it may have ended), with the id the event's
    traceparent names. An event of another story than the parent's trace (a supervisor's
    acknowledgement joins the crisis's story) starts its own story's trace, linked to it."""
    if _tracer is None:
        return
    parent = parent if parent is not None else trace.get_current_span()
    parent_context = parent.get_span_context()
    if not parent_context.is_valid or not parent_context.trace_flags.sampled:
        return
    in_parent = trace.set_span_in_context(parent)
    for event_id, kind, correlation in events:
        trace_id = UUID(str(correlation)).int
        own = trace_id == parent_context.trace_id
        token = _forced_ids.set((None if own else trace_id, event_span_id(event_id)))
        try:
            span = _tracer.start_span(
                f"event {kind}",
                context=in_parent if own else trace.set_span_in_context(trace.INVALID_SPAN),
                links=() if own else (Link(parent_context),),
                attributes={"careplan.application": application, "careplan.event_type": kind,
                            "careplan.event_id": str(event_id)},
            )
        finally:
            _forced_ids.reset(token)
        span.end()


# --------------------------------------------------------------------- relay


def class_name(ce_type: str) -> str:
    """The event class a CloudEvent type names (its last token is the class name in snake case)."""
    return "".join(part[:1].upper() + part[1:] for part in ce_type.rsplit(".", 1)[-1].split("_"))


def subject_pattern(subject: str, aggregate_id: str) -> str:
    """The subject with ``*`` for its aggregate id (the id stays out of spans)."""
    return subject.replace(f".{aggregate_id}.", ".*.", 1) if aggregate_id else subject


def publish_span(application: str, message: Any) -> Any:
    """The relay's span for one publish (``publish <subject pattern>``, PRODUCER), child of
    the event's traceparent; None while tracing is off or the trace is not sampled. End it
    with :func:`end_on_ack`."""
    if _tracer is None:
        return None
    headers = message.headers
    pattern = subject_pattern(message.subject, headers.get("ce-subject", ""))
    span = _tracer.start_span(f"publish {pattern}", context=_PROPAGATOR.extract(headers), kind=SpanKind.PRODUCER)
    if not span.is_recording():
        return None
    span.set_attributes({
        "messaging.system": "nats", "messaging.operation.type": "publish",
        "messaging.destination.template": pattern, "messaging.message.id": headers.get("Nats-Msg-Id", ""),
        "cloudevents.event_type": headers.get("ce-type", ""),
        "careplan.application": application, "careplan.event_type": class_name(headers.get("ce-type", "")),
        "careplan.notification_id": message.notification_id,
    })
    return span


def end_on_ack(span: Any, future: Any) -> None:
    """Ends a publish span when its PubAck (or the failure) arrives."""
    future.add_done_callback(functools.partial(_acked, span))


def _acked(span: Any, future: Any) -> None:
    if future.cancelled():
        span.set_attribute("careplan.outcome", "cancelled")
    elif (error := future.exception()) is not None:
        failed(span, error)
    elif span.is_recording():
        ack = future.result()
        span.set_attributes({"careplan.outcome": "duplicate" if ack.duplicate else "published",
                             "careplan.stream_sequence": int(ack.seq or 0)})
    span.end()


# --------------------------------------------------------------------- services


class Decisions:
    """The spans of one run of a service's decisions: ``process <subject pattern>``
    (CONSUMER) around each message's decision, the child of its traceparent; after the
    run's transaction, a span per event it recorded (:meth:`recorded`). A run that fails
    records no event span: its messages are decided again."""

    def __init__(self, service: str, application: str) -> None:
        self.service = service
        self.application = application
        self._done: list[tuple[Any, list[tuple[UUID, str, UUID]]]] = []

    def wrap(self, handle: Callable[[Any], Sequence[Any]]) -> Callable[[Any], Sequence[Any]]:
        def traced(inbound: Any) -> Sequence[Any]:
            assert _tracer is not None
            carrier = {"traceparent": inbound.traceparent} if getattr(inbound, "traceparent", "") else {}
            pattern = subject_pattern(inbound.subject, inbound.aggregate_id)
            with _tracer.start_as_current_span(
                f"process {pattern}", context=_PROPAGATOR.extract(carrier), kind=SpanKind.CONSUMER,
                record_exception=False, set_status_on_exception=False,
            ) as span:
                recording = span.is_recording()
                if recording:
                    span.set_attributes({
                        "messaging.system": "nats", "messaging.operation.type": "process",
                        "messaging.destination.template": pattern, "messaging.consumer.group.name": self.service,
                        "messaging.message.id": inbound.event_id, "careplan.service": self.service,
                        "cloudevents.event_type": inbound.type, "careplan.event_type": class_name(inbound.type),
                        "careplan.stream_sequence": inbound.stream_sequence,
                        "careplan.source": inbound.source, "careplan.source_sequence": inbound.sequence,
                    })
                try:
                    decided = handle(inbound)
                except BaseException as e:
                    failed(span, e)
                    raise
                if recording:
                    events = [
                        (e.event_id, type(e).__name__, e.correlation_id)
                        for aggregate in decided for e in aggregate.pending_events
                        if e.causation_id == inbound.event_id
                    ]
                    span.set_attributes({"careplan.outcome": "decided",
                                         "careplan.event_types": [kind for _, kind, _ in events]})
                    self._done.append((span, events))
                return decided

        return traced

    def recorded(self) -> None:
        """After the run's transaction committed: the spans of the events it recorded."""
        for span, events in self._done:
            recorded(self.application, events, span)
        self._done.clear()


def decisions(service: str, application: str) -> Decisions | None:
    """The spans of a run of decisions, or None while tracing is off."""
    return Decisions(service, application) if _tracer is not None else None


# --------------------------------------------------------------------- exporting


_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
#: Attributes that hold a URL or path (HTTP instrumentations, old and new conventions).
_URL_KEYS = frozenset({"http.url", "http.target", "url.full", "url.path", "http.request.original_url"})
_DROP_KEYS = frozenset({"url.query", "exception.message", "exception.stacktrace"})


def redact_url(value: str) -> str:
    """A URL or path without its query and with ``{id}`` for every id in it."""
    return _UUID.sub("{id}", value.split("?", 1)[0])


class RedactingExporter(SpanExporter):
    """Exports spans without what could name a person: URLs and paths lose their query and
    ids, recorded exceptions their message and stack trace, error statuses their
    description beyond the error's class."""

    def __init__(self, exporter: SpanExporter) -> None:
        self.exporter = exporter

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.exporter.export([self._redacted(span) for span in spans])

    def shutdown(self) -> None:
        self.exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    @staticmethod
    def _clean(attributes: Any) -> dict[str, Any]:
        return {
            key: redact_url(value) if key in _URL_KEYS and isinstance(value, str) else value
            for key, value in (attributes or {}).items() if key not in _DROP_KEYS
        }

    def _redacted(self, span: ReadableSpan) -> ReadableSpan:
        status = span.status
        if status.description:
            status = Status(status.status_code, status.description.split(":", 1)[0])
        return ReadableSpan(
            name=span.name, context=span.context, parent=span.parent, resource=span.resource,
            attributes=self._clean(span.attributes),
            events=[Event(e.name, self._clean(e.attributes), e.timestamp) for e in span.events],
            links=span.links, kind=span.kind, status=status, start_time=span.start_time, end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope,
        )
