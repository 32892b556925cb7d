"""The wire form of careplan's events, both ways: a stored event becomes a CloudEvent
(binary mode in NATS headers, the event's contract JSON as body) for the relay, and a
consumed message becomes an :class:`Inbound` for a service, or is refused as malformed.

A consumer trusts no header to say where a message comes from: the subject's context
names the only application that publishes there, and ``ce-source`` must agree with it.
So a message cannot move the position of a source other than the one its subject (and,
through NATS permissions, its publisher) allows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from uuid import UUID

import orjson
from eventsourcing.persistence import Notification

from contracts.generate import SCHEMA_BASE_URI, schema_path
from contracts.subjects import (
    CE_SOURCE_PREFIX,
    WATERMARK_ROOT,
    SubjectParts,
    ce_type,
    context_of_application,
    parse_subject,
    subject_for,
    watermark_subject,
)
from services.shared.persistence import PublicEvent

#: The largest position a header may name (a notification id is a signed 64-bit integer).
MAX_POSITION = 2**63 - 1


class MalformedMessageError(ValueError):
    """A message on the stream is not a careplan event its subject allows; it cannot be
    retried into shape. Its message names no content."""


# --------------------------------------------------------------------- encoding


class OutboundMessage(NamedTuple):
    notification_id: int
    subject: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class WireForm:
    """What every event of one class shares on the wire (computed once per class and context)."""

    subject_prefix: str
    subject_suffix: str
    ce_type: str
    dataschema: str


@lru_cache(maxsize=1024)
def wire_form(event_class: type[Any], context: str) -> WireForm:
    prefix, suffix = subject_for(event_class, "\0", context=context).split("\0")
    return WireForm(prefix, suffix, ce_type(event_class, context=context), f"{SCHEMA_BASE_URI}/{schema_path(event_class)}")


def cloudevent(application: str, notification: Notification, event: PublicEvent, previous: int) -> OutboundMessage:
    """The wire form of one stored event of ``application``."""
    return cloudevent_of(application, notification.id, str(notification.originator_id), event, previous)


def cloudevent_of(application: str, position: int, aggregate_id: str, event: PublicEvent, previous: int) -> OutboundMessage:
    """:func:`cloudevent` from the parts of a log row (the relay's read; ``aggregate_id`` as
    ``str(UUID)`` writes it)."""
    form = wire_form(event.event_class, context_of_application(application))
    event_id = event.event_id
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": f"{CE_SOURCE_PREFIX}:{application}",
        "ce-type": form.ce_type,
        "ce-time": event.timestamp,
        "ce-subject": aggregate_id,
        "ce-sequence": str(position),
        # The log may skip ids (a rolled-back insert); naming the previous one makes a real gap detectable.
        "ce-previoussequence": str(previous),
        "ce-dataschema": form.dataschema,
        "traceparent": traceparent(event.correlation_id, event_id),
        "content-type": "application/json",
        "Nats-Msg-Id": f"{application}:{position}",
    }
    return OutboundMessage(position, f"{form.subject_prefix}{aggregate_id}{form.subject_suffix}", headers, event.body)


def traceparent(correlation_id: str, event_id: str) -> str:
    """W3C Trace Context for an event: the story (correlation id, 128 bits) is the trace,
    the event is a span (the first 64 bits of its id). Derived, so every copy of an event
    (a re-publish, a replay) carries the same one, and a tracing system groups a whole care
    story — command, services' decisions, policies — into one trace."""
    return f"00-{correlation_id.replace('-', '')}-{event_id.replace('-', '')[:16]}-01"


# --------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class Inbound:
    """A consumed event: its source (from the subject) and position there, its stream
    position, and its body."""

    source: str
    sequence: int
    event_id: str
    type: str
    subject: str
    aggregate_id: str
    body: dict[str, Any]
    stream_sequence: int = 0
    #: The message's W3C trace context (its ``traceparent`` header), for the consumer's span.
    traceparent: str = ""
    #: The body exactly as published (a subscriber's signature covers these bytes), and the
    #: ``ce-time`` and ``ce-dataschema`` headers, for those who pass the event on.
    data: bytes = b""
    time: str = ""
    dataschema: str = ""

    @property
    def event_name(self) -> str:
        return self.type.rsplit(".", 1)[-1]

    @property
    def correlation_id(self) -> UUID:
        return UUID(str(self.body["correlation_id"]))


@dataclass(frozen=True)
class Watermark:
    """A relay's word that every event its application committed before ``at`` has been
    published ahead of this message (see :meth:`Relay._publish_watermark`)."""

    source: str
    position: int
    at: datetime
    stream_sequence: int = 0


def parse_inbound(subject: str, headers: dict[str, str] | None, data: bytes, stream_sequence: int = 0) -> Inbound | Watermark:
    """The event (or watermark) a message carries, checked against its subject; a message
    that is neither raises :class:`MalformedMessageError`."""
    headers = headers or {}
    if subject.startswith(f"{WATERMARK_ROOT}."):
        return _watermark(subject, data, stream_sequence)
    parts = parse_subject(subject)
    if parts is None:
        raise MalformedMessageError("the subject is not an event subject")
    source = _source(parts, headers.get("ce-source"))
    if headers.get("ce-subject") != parts.aggregate_id:
        raise MalformedMessageError("ce-subject differs from the subject's aggregate id")
    expected_type = f"org.careplan.{parts.context}.v{parts.major}.{parts.aggregate}.{parts.event}"
    if headers.get("ce-type") != expected_type:
        raise MalformedMessageError("ce-type differs from the subject")
    sequence = _position(headers.get("ce-sequence"))
    event_id = headers.get("ce-id") or ""
    if not 1 <= len(event_id) <= 64:
        raise MalformedMessageError("ce-id is missing or too long")
    try:
        body = orjson.loads(data)  # the decode on every consumed message: orjson's, several times json's speed
    except ValueError:  # orjson.JSONDecodeError is one, also for an integer beyond 64 bits, which JSON allows
        try:  # and an older version stored (a huge answer): the standard library reads it, scoring rejects it
            body = json.loads(data)
        except ValueError as e:
            raise MalformedMessageError("the body is not JSON") from e
    if not isinstance(body, dict):
        raise MalformedMessageError("the body is not a JSON object")
    return Inbound(
        source=source, sequence=sequence, event_id=event_id, type=expected_type, subject=subject,
        aggregate_id=parts.aggregate_id, body=body, stream_sequence=stream_sequence,
        traceparent=headers.get("traceparent", ""), data=data,
        time=headers.get("ce-time", "")[:64], dataschema=headers.get("ce-dataschema", "")[:500],
    )


def _source(parts: SubjectParts, ce_source: str | None) -> str:
    application = parts.application
    if application is None:
        raise MalformedMessageError("no careplan application publishes in the subject's context")
    if ce_source != f"{CE_SOURCE_PREFIX}:{application}":
        raise MalformedMessageError("ce-source is not the application that publishes on this subject")
    return application


def _position(value: str | None) -> int:
    if value is None or not value.isdigit() or len(value) > 19:
        raise MalformedMessageError("ce-sequence is not a position")
    position = int(value)
    if not 1 <= position <= MAX_POSITION:
        raise MalformedMessageError("ce-sequence is not a position")
    return position


def _watermark(subject: str, data: bytes, stream_sequence: int) -> Watermark:
    application = subject.removeprefix(f"{WATERMARK_ROOT}.")
    if subject != watermark_subject(application):
        raise MalformedMessageError("not a watermark subject")
    try:
        body = json.loads(data)
        if body.get("source") != application:
            raise MalformedMessageError("the watermark names another source")
        return Watermark(application, int(body["position"]), datetime.fromisoformat(body["at"]), stream_sequence)
    except MalformedMessageError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise MalformedMessageError("the watermark's body is not one") from e
