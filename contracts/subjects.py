"""Subject and CloudEvents type naming, shared by the relay, the services and subscribers.

Subjects follow ``care.<context>.v<major>.<aggregate>.<aggregate_id>.<event>`` so that a
subscriber can filter by context, aggregate type, one aggregate, or event type with NATS
wildcards (``care.clinical.v1.care_plan.*.strategy_changed``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from uuid import UUID

from domain.base import ANY_CONTEXT, DomainEvent

ROOT = "care"
MAJOR_VERSION = 1
#: The bounded context of the care application's own aggregates.
CLINICAL_CONTEXT = "clinical"
CE_SOURCE_PREFIX = "urn:careplan"

#: The context each application publishes in. A context has exactly one publisher, so the
#: subject of a message names the only application that may have sent it (and NATS
#: permissions give each application's user only its own context).
APPLICATION_CONTEXTS: dict[str, str] = {
    "care": CLINICAL_CONTEXT,
    "assessment": "assessment",
    "escalation": "escalation",
    "scheduling": "scheduling",
    "subscriptions": "subscriptions",
}
_APPLICATION_OF_CONTEXT = {context: application for application, context in APPLICATION_CONTEXTS.items()}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _declared(event_class: type[DomainEvent], name: str) -> str:
    """Each events module declares ``CONTEXT`` and ``AGGREGATE`` for its events."""
    value = getattr(sys.modules[event_class.__module__], name, None)
    if not isinstance(value, str):
        msg = f"{event_class.__name__} is not a public event: its module declares no {name}"
        raise ValueError(msg)
    return value


def context_of(event_class: type[DomainEvent], context: str | None = None) -> str:
    """The event's context: its module's ``CONTEXT``, or, for events every application
    records (a module declaring ``CONTEXT = ANY_CONTEXT``), the given one."""
    declared = _declared(event_class, "CONTEXT")
    if declared != ANY_CONTEXT:
        return declared
    if context is None:
        msg = f"{event_class.__name__} is published in the context of the application that records it; name it"
        raise ValueError(msg)
    return context


def context_of_application(application: str) -> str:
    try:
        return APPLICATION_CONTEXTS[application]
    except KeyError:
        msg = f"{application!r} is not a careplan application ({', '.join(APPLICATION_CONTEXTS)})"
        raise ValueError(msg) from None


def application_of_context(context: str) -> str | None:
    """The only application that publishes in ``context`` (None: no such context)."""
    return _APPLICATION_OF_CONTEXT.get(context)


def aggregate_token(event_class: type[DomainEvent]) -> str:
    return _declared(event_class, "AGGREGATE")


def event_token(event_class: type[DomainEvent]) -> str:
    return snake(event_class.__name__)


def subject_for(event_class: type[DomainEvent], aggregate_id: UUID | str, *, context: str | None = None) -> str:
    context = context_of(event_class, context)
    return f"{ROOT}.{context}.v{MAJOR_VERSION}.{aggregate_token(event_class)}.{aggregate_id}.{event_token(event_class)}"


def subject_filter(event_class: type[DomainEvent]) -> str:
    """The NATS filter for every event of this class (in every context, for events every
    application records)."""
    context = "*" if _declared(event_class, "CONTEXT") == ANY_CONTEXT else None
    return subject_for(event_class, "*", context=context)


def subject_pattern(event_class: type[DomainEvent]) -> str:
    """The AsyncAPI channel address, with the aggregate id (and, where it varies, the
    context) as parameters."""
    return subject_for(event_class, "{aggregate_id}", context=ANY_CONTEXT)


def ce_type(event_class: type[DomainEvent], *, context: str | None = None) -> str:
    context = context_of(event_class, context)
    return f"org.careplan.{context}.v{MAJOR_VERSION}.{aggregate_token(event_class)}.{event_token(event_class)}"


def ce_type_pattern(event_class: type[DomainEvent]) -> str:
    return ce_type(event_class, context=ANY_CONTEXT)


@dataclass(frozen=True)
class SubjectParts:
    """``care.<context>.v<major>.<aggregate>.<aggregate_id>.<event>``, taken apart."""

    context: str
    major: int
    aggregate: str
    aggregate_id: str
    event: str

    @property
    def application(self) -> str | None:
        return application_of_context(self.context)


_SUBJECT = re.compile(rf"{ROOT}\.([a-z_]+)\.v([0-9]{{1,3}})\.([a-z_]+)\.([A-Za-z0-9-]{{1,64}})\.([a-z_]+)\Z")


def parse_subject(subject: str) -> SubjectParts | None:
    """The parts of an event subject, or None when it is not one."""
    match = _SUBJECT.match(subject)
    if match is None:
        return None
    context, major, aggregate, aggregate_id, event = match.groups()
    return SubjectParts(context, int(major), aggregate, aggregate_id, event)


#: Relays' watermarks travel in the events' stream (so they are read in order with the
#: events) but outside ``care.>``, which subscribers take as "every event".
WATERMARK_ROOT = "careplan.watermark"


def watermark_subject(application: str) -> str:
    """Where an application's relay says how far it has published (see the relay)."""
    return f"{WATERMARK_ROOT}.{application}"


def ce_source(application: str) -> str:
    return f"{CE_SOURCE_PREFIX}:{application}"


def chain_subject(application: str) -> str:
    """Where an application's relay publishes its store's hash-chain head (audit anchors)."""
    return f"audit.careplan.v1.chain.{application.replace('-', '_')}"
