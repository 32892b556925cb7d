"""Subject and CloudEvents type naming, shared by the relay, the services and subscribers.

Subjects follow ``care.<context>.v<major>.<aggregate>.<aggregate_id>.<event>`` so that a
subscriber can filter by context, aggregate type, one aggregate, or event type with NATS
wildcards (``care.clinical.v1.care_plan.*.strategy_changed``).
"""

from __future__ import annotations

import re
import sys
from uuid import UUID

from domain.base import DomainEvent

ROOT = "care"
MAJOR_VERSION = 1
#: The bounded context of the care application's own aggregates.
CLINICAL_CONTEXT = "clinical"
CE_SOURCE_PREFIX = "urn:careplan"


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _declared(event_class: type[DomainEvent], name: str) -> str:
    """Each events module declares ``CONTEXT`` and ``AGGREGATE`` for its events."""
    value = getattr(sys.modules[event_class.__module__], name, None)
    if not isinstance(value, str):
        msg = f"{event_class.__name__} is not a public event: its module declares no {name}"
        raise ValueError(msg)
    return value


def context_of(event_class: type[DomainEvent]) -> str:
    return _declared(event_class, "CONTEXT")


def aggregate_token(event_class: type[DomainEvent]) -> str:
    return _declared(event_class, "AGGREGATE")


def event_token(event_class: type[DomainEvent]) -> str:
    return snake(event_class.__name__)


def subject_for(event_class: type[DomainEvent], aggregate_id: UUID | str) -> str:
    context = context_of(event_class)
    return f"{ROOT}.{context}.v{MAJOR_VERSION}.{aggregate_token(event_class)}.{aggregate_id}.{event_token(event_class)}"


def subject_pattern(event_class: type[DomainEvent]) -> str:
    """The AsyncAPI channel address, with the aggregate id as a parameter."""
    return subject_for(event_class, "{aggregate_id}")


def ce_type(event_class: type[DomainEvent]) -> str:
    context = context_of(event_class)
    return f"org.careplan.{context}.v{MAJOR_VERSION}.{aggregate_token(event_class)}.{event_token(event_class)}"


def dead_letter_subject(service: str) -> str:
    return f"{ROOT}.deadletter.{service}"


def ce_source(application: str) -> str:
    return f"{CE_SOURCE_PREFIX}:{application}"


def chain_subject(application: str) -> str:
    """Where an application's relay publishes its store's hash-chain head (audit anchors)."""
    return f"audit.careplan.v1.chain.{application.replace('-', '_')}"
