"""Subject and CloudEvents type naming, shared by the relay, the services and subscribers.

Subjects follow ``care.<context>.v<major>.<aggregate>.<aggregate_id>.<event>`` so that a
subscriber can filter by context, aggregate type, one aggregate, or event type with NATS
wildcards (``care.clinical.v1.care_plan.*.strategy_changed``).
"""

from __future__ import annotations

import re
from uuid import UUID

from domain.base import DomainEvent

ROOT = "care"
MAJOR_VERSION = 1
#: The bounded context of the care application's own aggregates.
CLINICAL_CONTEXT = "clinical"
CE_SOURCE_PREFIX = "urn:careplan"

_AGGREGATE_OF_MODULE = {
    "domain.events.care_plan": "care_plan",
    "domain.events.therapy_course": "therapy_course",
    "domain.events.inventory": "inventory",
}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def aggregate_token(event_class: type[DomainEvent]) -> str:
    try:
        return _AGGREGATE_OF_MODULE[event_class.__module__]
    except KeyError:
        msg = f"{event_class.__name__} is not a public event of an aggregate"
        raise ValueError(msg) from None


def event_token(event_class: type[DomainEvent]) -> str:
    return snake(event_class.__name__)


def subject_for(event_class: type[DomainEvent], aggregate_id: UUID | str, context: str = CLINICAL_CONTEXT) -> str:
    return f"{ROOT}.{context}.v{MAJOR_VERSION}.{aggregate_token(event_class)}.{aggregate_id}.{event_token(event_class)}"


def subject_pattern(event_class: type[DomainEvent], context: str = CLINICAL_CONTEXT) -> str:
    """The AsyncAPI channel address, with the aggregate id as a parameter."""
    return subject_for(event_class, "{aggregate_id}", context)


def ce_type(event_class: type[DomainEvent], context: str = CLINICAL_CONTEXT) -> str:
    return f"org.careplan.{context}.v{MAJOR_VERSION}.{aggregate_token(event_class)}.{event_token(event_class)}"


def ce_source(application: str) -> str:
    return f"{CE_SOURCE_PREFIX}:{application}"
