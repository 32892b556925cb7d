"""The subscription topics: one canonical URL per kind of change a hospital cares about.

Each topic names the contract events that trigger it (by class, so a renamed or removed
event breaks here and in the contract test, not silently at run time), the FHIR resource
that is the notification's focus, and the filters a Subscription may narrow it with.
Filters name the event's scope (client, care plan, course): the client as the service
resolved it for the event, the plan and course from the event's aggregate or its body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.subscriptiontopic import SubscriptionTopic

from contracts.subjects import parse_subject, subject_filter
from domain.base import DomainEvent
from domain.events import assessment, care_plan, escalation, therapy_course
from services.api.fhir import observations
from services.subscriptions.kinds import StreamEvent, subject_matches

#: Topics are identified by canonical URL only (the IG: "always referenced by canonical
#: URL"); the base is a name, not an address anyone has to reach.
TOPIC_BASE = "http://careplan.local/fhir/SubscriptionTopic/"
FHIR_TYPE_BASE = "http://hl7.org/fhir/StructureDefinition/"
EVENT_SYSTEM = "urn:careplan:nats-subject"


@dataclass(frozen=True)
class Scope:
    """Whose record an event belongs to; None where the event's aggregate is not known."""

    client_id: str | None = None
    plan_id: str | None = None
    course_id: str | None = None

    def value(self, key: str) -> str | None:
        return {"patient": self.client_id, "care-plan": self.plan_id, "course": self.course_id}[key]


@dataclass(frozen=True)
class Filter:
    """A filter a topic allows: its key in ``_criteria`` (``CarePlan?patient=Patient/x``)
    and the FHIR resource type a reference value may be written with."""

    key: str
    reference_type: str | None
    description: str

    def written(self, value: str) -> str:
        """The value as a filter criterion writes it (``Patient/<id>`` for a reference)."""
        return f"{self.reference_type}/{value}" if self.reference_type else value


PATIENT = Filter("patient", "Patient", "The client (pseudonymous id) the change is about")
CARE_PLAN = Filter("care-plan", "CarePlan", "The care plan the change belongs to")
COURSE = Filter("course", None, "The therapy course the change belongs to")


@dataclass(frozen=True)
class Topic:
    slug: str
    title: str
    description: str
    resource: str
    events: tuple[type[DomainEvent], ...]
    filters: tuple[Filter, ...]
    #: The focus resource's id for a triggering event (its contract JSON).
    focus_id: Callable[[Mapping[str, Any]], str]
    #: Whether the event made its focus resource (POST) rather than changed it (PUT).
    creates: Callable[[Mapping[str, Any]], bool]
    #: The focus resource made from the event alone (``full-resource`` content); None:
    #: the topic offers ``id-only`` and ``empty`` content only.
    resource_from_event: Callable[[Mapping[str, Any], str | None], dict[str, Any] | None] | None = None
    #: The focus resource is read from the care record at the event's version
    #: (services/subscriptions/fhir/focus.py) for ``full-resource`` content.
    resource_from_record: bool = False

    @property
    def full_resource(self) -> bool:
        return self.resource_from_event is not None or self.resource_from_record

    @property
    def url(self) -> str:
        return TOPIC_BASE + self.slug

    @property
    def subjects(self) -> tuple[str, ...]:
        """The NATS subject filters of its triggering events."""
        return tuple(subject_filter(event) for event in self.events)

    def triggered_by(self, event: StreamEvent) -> bool:
        return any(subject_matches(pattern, event.subject) for pattern in self.subjects)

    def filter_named(self, key: str) -> Filter | None:
        return next((f for f in self.filters if f.key == key), None)

    def focus(self, data: Mapping[str, Any]) -> str:
        """``<ResourceType>/<id>`` of the resource an event (its contract JSON) changed."""
        return f"{self.resource}/{self.focus_id(data)}"


def _originator(data: Mapping[str, Any]) -> str:
    return str(data["originator_id"])


def _always(data: Mapping[str, Any]) -> bool:
    return True


def _never(data: Mapping[str, Any]) -> bool:
    return False


def _first_version(data: Mapping[str, Any]) -> bool:
    return data.get("originator_version") == 1


def _observation(data: Mapping[str, Any], client_id: str | None) -> dict[str, Any] | None:
    """The Observation ``GET /fhir/Observation`` shows for this score (the same view)."""
    # the contract JSON carries the computed event_id; the event derives it again
    scored = assessment.AssessmentScored.model_validate({k: v for k, v in data.items() if k != "event_id"})
    made = observations(client_id or scored.client_id, [scored])
    return made[0].model_dump(mode="json", exclude_none=True) if made else None


def _risk_assessment(data: Mapping[str, Any]) -> str:
    # services.api.fhir.risk_assessment names the assessment after the plan version of the change.
    return f"{data['originator_id']}-v{data['originator_version']}"


_CARE_PLAN_EVENTS = tuple(c for c in vars(care_plan).values()
                          if isinstance(c, type) and issubclass(c, DomainEvent) and c.__module__ == care_plan.__name__)

TOPICS: tuple[Topic, ...] = (
    Topic("care-plan-changed", "Care plan changed",
          "Any recorded change to a care plan (status, goals, strategy, risk, crisis support, ...).",
          "CarePlan", _CARE_PLAN_EVENTS, (PATIENT, CARE_PLAN), _originator, _first_version, resource_from_record=True),
    Topic("risk-level-changed", "Risk level changed",
          "A care plan's risk level was raised (by escalation) or lowered (by a clinician).",
          "RiskAssessment", (care_plan.RiskLevelRaised, care_plan.RiskLevelLowered), (PATIENT, CARE_PLAN),
          _risk_assessment, _always, resource_from_record=True),
    Topic("crisis-raised", "Crisis raised", "A crisis was escalated for a client.",
          "Flag", (escalation.EscalationRaised,), (PATIENT, CARE_PLAN), _originator, _always),
    Topic("crisis-acknowledged", "Crisis acknowledged", "Someone on the escalation policy acknowledged a crisis.",
          "Flag", (escalation.EscalationAcknowledged,), (PATIENT, CARE_PLAN), _originator, _never),
    Topic("crisis-resolved", "Crisis resolved", "A crisis was resolved with an outcome.",
          "Flag", (escalation.CrisisResolved,), (PATIENT, CARE_PLAN), _originator, _never),
    Topic("questionnaire-scored", "Questionnaire scored",
          "A questionnaire response was scored (PHQ-9, GAD-7, ...): the total as an Observation.",
          "Observation", (assessment.AssessmentScored,), (PATIENT, CARE_PLAN, COURSE),
          lambda data: str(data["event_id"]), _always, _observation),
    Topic("session-scheduled", "Session scheduled", "A therapy session was scheduled (an Appointment booked).",
          "Appointment", (therapy_course.SessionScheduled,), (PATIENT, CARE_PLAN, COURSE),
          lambda data: str(data["session_id"]), _always, resource_from_record=True),
    Topic("session-missed", "Session missed", "A therapy session was recorded as missed (an Appointment no-show).",
          "Appointment", (therapy_course.SessionMissed,), (PATIENT, CARE_PLAN, COURSE),
          lambda data: str(data["session_id"]), _never, resource_from_record=True),
)

_BY_URL = {topic.url: topic for topic in TOPICS}


class UnknownTopicError(LookupError):
    """A Subscription named a topic this server does not offer."""


def topic_at(url: str) -> Topic:
    try:
        return _BY_URL[url]
    except KeyError:
        msg = f"{url!r} is not a topic of this server; GET /fhir/SubscriptionTopic lists them"
        raise UnknownTopicError(msg) from None


def topics_triggered_by(event: StreamEvent) -> list[Topic]:
    return [topic for topic in TOPICS if topic.triggered_by(event)]


def scope_of(event: StreamEvent, data: Mapping[str, Any]) -> Scope:
    """Where an event of the stream belongs: its client as the service resolved it, its plan
    and course from its aggregate (a care plan's or a course's own events) or its body."""
    parts = parse_subject(event.subject)
    aggregate = parts.aggregate if parts else None
    plan = event.aggregate_id if aggregate == "care_plan" else data.get("plan_id")
    course = event.aggregate_id if aggregate == "therapy_course" else data.get("course_id")
    return Scope(event.client_id, str(plan) if plan else None, str(course) if course else None)


def matches(filters: tuple[tuple[str, str], ...], scope: Scope) -> bool:
    """Every filter holds (the IG: several filters are a logical AND). An event whose scope
    is unknown matches no filter: never a client's event to a subscriber of another."""
    return all(scope.value(key) == value for key, value in filters)


def subscription_topic(topic: Topic) -> SubscriptionTopic:
    """The topic as an R4B ``SubscriptionTopic`` (what ``GET /fhir/SubscriptionTopic`` lists)."""
    return SubscriptionTopic.model_validate({
        "resourceType": "SubscriptionTopic",
        "id": topic.slug,
        "url": topic.url,
        "title": topic.title,
        "status": "active",
        "description": topic.description,
        "eventTrigger": [{
            "description": f"{event.__name__} recorded",
            "event": {"coding": [{"system": EVENT_SYSTEM, "code": subject_filter(event), "display": event.__name__}]},
            "resource": FHIR_TYPE_BASE + topic.resource,
        } for event in topic.events],
        "canFilterBy": [{
            "description": f.description,
            "resource": topic.resource,
            "filterParameter": f.key,
        } for f in topic.filters],
        "notificationShape": [{"resource": topic.resource}],
    })

