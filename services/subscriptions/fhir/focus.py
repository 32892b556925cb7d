"""The focus resources a ``full-resource`` notification carries, read from the care record
at the event's version with the same views ``GET /fhir/...`` uses (services/api/fhir.py):
a CarePlan at that version, the RiskAssessment of that risk change, the Appointment of that
session in the course at that version.

The kinds do no I/O; the subscriptions service reads these (the delivery engine in its
worker thread, the API for ``$events``) and hands them to the kind with the numbered event.
The version is the event's own, so a retry or a resend carries the same resource, byte for
byte. An aggregate the record does not hold (a store restored to before it) gives no
resource: the entry then carries its reference only, as ``id-only`` would.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from services.api import fhir
from services.shared.errors import AggregateMissingError
from services.subscriptions.fhir.topics import topic_at

log = logging.getLogger(__name__)


def focus_resource(care: Any, topic_url: str, data: Mapping[str, Any]) -> dict[str, Any] | None:
    """The focus of an event (its contract JSON) as ``GET /fhir/...`` shows it at the
    event's version; None: not a topic read from the record, or not in the record."""
    topic = topic_at(topic_url)
    if not topic.resource_from_record:
        return None
    try:
        aggregate_id, version = UUID(str(data["originator_id"])), int(data["originator_version"])
        if topic.resource == "CarePlan":
            made: Any = fhir.care_plan(care.get_plan(aggregate_id, version=version))
        elif topic.resource == "RiskAssessment":
            history = [e for e in care.history(aggregate_id) if e.originator_version <= version]
            made = fhir.risk_assessment(care.get_plan(aggregate_id, version=version), history)
        elif topic.resource == "Appointment":
            course = care.get_course(aggregate_id, version=version)
            made = next((a for a in fhir.appointments(course) if a.id == str(data["session_id"])), None)
        else:
            return None
    except (AggregateMissingError, KeyError, ValueError) as e:
        log.warning("subscriptions: a focus resource is not in the care record (%s): sent without it",
                    type(e).__name__)
        return None
    return made.model_dump(mode="json", exclude_none=True) if made is not None else None
