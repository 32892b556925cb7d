"""The FHIR R4 Backport kind's pure parts: topics, the backport Subscription read into its
stored form, and notification Bundles, every one validated with ``fhir.resources``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.subscription import Subscription
from fhir.resources.R4B.subscriptiontopic import SubscriptionTopic

from contracts.subjects import parse_subject, subject_for
from domain.base import Actor, DomainEvent, Role
from domain.catalogues.risk import RiskLevel
from domain.events.assessment import AssessmentScored
from domain.events.care_plan import RiskLevelRaised
from domain.events.therapy_course import SessionScheduled
from services.subscriptions.fhir import subscription as backport
from services.subscriptions.fhir.kind import FHIR_REST_HOOK, events_response, status_response
from services.subscriptions.fhir.notifications import EventEntry, notification_bundle, status_bundle, status_parameters
from services.subscriptions.fhir.subscription import parse_subscription, subscription_resource
from services.subscriptions.fhir.topics import TOPIC_BASE, TOPICS, subscription_topic
from services.subscriptions.kinds import (
    KINDS,
    NumberedEvent,
    Scope,
    StreamEvent,
    SubscriptionRequestError,
    SubscriptionState,
)

SCORED = TOPIC_BASE + "questionnaire-scored"
RISK = TOPIC_BASE + "risk-level-changed"
WHEN = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)
ACTOR = Actor(id="svc-assessment", role=Role.SERVICE)


def backport_subscription(topic: str = SCORED, *, criteria: list[str] | None = None, content: str = "id-only",
                          **channel: Any) -> dict[str, Any]:
    """A Subscription as a HAPI/Medplum client posts it (the IG's admission example, our topic)."""
    return {
        "resourceType": "Subscription",
        "meta": {"profile": [backport.PROFILE]},
        "status": "requested",
        "reason": "EHR in-basket feed",
        "criteria": topic,
        "_criteria": {"extension": [{"url": backport.FILTER_CRITERIA, "valueString": c}
                                    for c in (criteria if criteria is not None else ["Observation?patient=Patient/c-1"])]},
        "channel": {
            "type": "rest-hook",
            "endpoint": "https://ehr.example.org/fhir-hook",
            "header": ["Authorization: Bearer secret-token"],
            "payload": "application/fhir+json",
            "_payload": {"extension": [{"url": backport.PAYLOAD_CONTENT, "valueCode": content}]},
            "extension": [{"url": backport.HEARTBEAT_PERIOD, "valueUnsignedInt": 60},
                          {"url": backport.TIMEOUT, "valueUnsignedInt": 20},
                          {"url": backport.MAX_COUNT, "valuePositiveInt": 5}],
            **channel,
        },
    }


def stream_event(event: DomainEvent, client_id: str | None) -> StreamEvent:
    subject = subject_for(type(event), event.originator_id)
    parts = parse_subject(subject)
    assert parts is not None
    return StreamEvent(event_id=str(event.event_id), source=parts.application or "", sequence=1, type="t",
                       subject=subject, aggregate_id=str(event.originator_id), time=event.timestamp.isoformat(),
                       dataschema="s", client_id=client_id, body=event.model_dump_json().encode())


def scored(client_id: str = "c-1", plan_id: UUID | None = None, course_id: UUID | None = None) -> AssessmentScored:
    return AssessmentScored(
        originator_id=uuid4(), originator_version=2, timestamp=WHEN, actor=ACTOR, correlation_id=uuid4(),
        submission_id=uuid4(), course_id=course_id or uuid4(), plan_id=plan_id or uuid4(), client_id=client_id,
        instrument="PHQ-9", answered_at=WHEN, total=12, severity="moderate", answered_items=9, prorated=False,
        suicide_item_positive=False)


def state(spec: dict[str, Any], *, status: str = "active", since: int = 0, error: str | None = None) -> SubscriptionState:
    return SubscriptionState(id="sub-1", kind="fhir-rest-hook", endpoint=spec["endpoint"], clients=("c-1",),
                             spec=spec, status=status, events_since_start=since, created_at=WHEN, error=error)


def status_of(bundle: Bundle) -> dict[str, Any]:
    """The subscription-status Parameters (first entry) as name → value or parts."""
    first = bundle.entry[0].resource
    assert isinstance(first, Parameters)
    assert first.meta.profile == [
        "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4"]
    found: dict[str, Any] = {}
    for p in first.parameter:
        value = p.part if p.part else next(v for k, v in p.model_dump(exclude_none=True).items() if k.startswith("value"))
        found.setdefault(p.name, []).append(value)
    return found


def sent(notification: Any) -> Bundle:
    """What a receiver gets, parsed back and validated as a receiver would."""
    return Bundle.model_validate_json(notification.body)


# ---------------------------------------------------------------- topics


def test_every_topic_is_a_valid_r4b_subscription_topic_with_its_filters() -> None:
    slugs = {t.slug for t in TOPICS}
    assert {"care-plan-changed", "risk-level-changed", "crisis-raised", "crisis-acknowledged", "crisis-resolved",
            "questionnaire-scored", "session-scheduled", "session-missed"} <= slugs
    assert len({t.url for t in TOPICS}) == len(TOPICS)
    for topic in TOPICS:
        made = SubscriptionTopic.model_validate_json(subscription_topic(topic).model_dump_json(exclude_none=True))
        assert made.url == topic.url and made.status == "active"
        assert {f.filterParameter for f in made.canFilterBy} >= {"patient", "care-plan"}
        for trigger in made.eventTrigger:
            # each trigger names the contract subject it listens to
            assert trigger.event.coding[0].code.startswith("care.")
    assert {f.filterParameter for f in subscription_topic(TOPICS[-1]).canFilterBy} == {"patient", "care-plan", "course"}


# ---------------------------------------------------------------- the Subscription resource


def test_a_backport_subscription_is_read_into_its_stored_form_and_shown_back_without_header_values() -> None:
    body = backport_subscription(criteria=["Observation?patient=Patient/c-1&care-plan=CarePlan/" + str(UUID(int=7))])
    request = parse_subscription(body)
    assert request.topic_url == SCORED
    assert request.filters == (("patient", "c-1"), ("care-plan", str(UUID(int=7))))
    assert request.headers == (("Authorization", "Bearer secret-token"),)
    assert (request.content, request.heartbeat_seconds, request.timeout_seconds, request.max_count) == (
        "id-only", 60, 20, 5)
    shown = subscription_resource(backport.FhirSubscriptionRequest.from_spec(request.spec()),
                                  subscription_id="sub-1", status="active")
    again = Subscription.model_validate_json(shown.model_dump_json(exclude_none=True))
    assert again.criteria == SCORED and again.status == "active"
    assert again.channel.header == ["Authorization: ***"]
    assert "secret-token" not in shown.model_dump_json()
    # what is shown reads back into the same request (but the header values)
    reread = parse_subscription({**json.loads(shown.model_dump_json(exclude_none=True)), "status": "requested"})
    assert (reread.filters, reread.content, reread.max_count) == (request.filters, request.content, request.max_count)


@pytest.mark.parametrize(("change", "element"), [
    ({"criteria": "http://example.org/topic/admission"}, "Subscription.criteria"),
    ({"status": "off"}, "Subscription.status"),
    ({"_criteria": {"extension": [{"url": backport.FILTER_CRITERIA, "valueString": "Encounter?patient=Patient/c-1"}]}},
     "Subscription.criteria.extension"),
    ({"_criteria": {"extension": [{"url": backport.FILTER_CRITERIA, "valueString": "Observation?code=44261-6"}]}},
     "Subscription.criteria.extension"),
    ({"_criteria": {"extension": [{"url": backport.FILTER_CRITERIA,
                                   "valueString": "Observation?patient=Patient/a&patient=Patient/b"}]}},
     "Subscription.criteria.extension"),
    ({"_criteria": {"extension": [{"url": backport.FILTER_CRITERIA, "valueString": "Observation?care-plan=nope"}]}},
     "Subscription.criteria.extension"),
    ({"channel": {"type": "websocket", "payload": "application/fhir+json"}}, "Subscription.channel.type"),
    ({"reason": None}, "Subscription.reason"),
])
def test_a_subscription_outside_the_profile_is_refused_naming_the_element(change: dict[str, Any], element: str) -> None:
    body = {**backport_subscription(), **change}
    with pytest.raises(SubscriptionRequestError) as refused:
        parse_subscription(body)
    assert refused.value.field == element
    assert "secret-token" not in str(refused.value)


@pytest.mark.parametrize(("channel", "element"), [
    ({"payload": "application/xml"}, "Subscription.channel.payload"),
    ({"_payload": {"extension": [{"url": backport.PAYLOAD_CONTENT, "valueCode": "everything"}]}},
     "Subscription.channel.payload.extension"),
    ({"_payload": {"extension": [{"url": "http://example.org/other", "valueCode": "id-only"}]}},
     "Subscription.channel.payload.extension"),
    ({"extension": [{"url": backport.HEARTBEAT_PERIOD, "valueUnsignedInt": 1}]}, "Subscription.channel.extension"),
    ({"extension": [{"url": backport.TIMEOUT, "valueUnsignedInt": 3600}]}, "Subscription.channel.extension"),
    ({"header": ["webhook-signature: v1,forged"]}, "Subscription.channel.header"),
    ({"header": ["no colon here"]}, "Subscription.channel.header"),
    ({"endpoint": "https://user:pw@ehr.example.org/hook"}, "Subscription.channel.endpoint"),
    ({"endpoint": "ftp://ehr.example.org/hook"}, "Subscription.channel.endpoint"),
])
def test_a_channel_outside_the_profile_is_refused(channel: dict[str, Any], element: str) -> None:
    with pytest.raises(SubscriptionRequestError) as refused:
        parse_subscription(backport_subscription(**channel))
    assert refused.value.field == element


# ---------------------------------------------------------------- the kind: accept and match


def test_the_kind_is_registered_and_keeps_a_client_scoped_token_to_its_clients() -> None:
    assert KINDS["fhir-rest-hook"] is FHIR_REST_HOOK
    accepted = FHIR_REST_HOOK.accept(backport_subscription(), Scope(("c-1", "c-2")))
    assert accepted.clients == ("c-1",) and accepted.handshake and accepted.heartbeat_seconds == 60
    assert accepted.headers == {"Authorization": "Bearer secret-token"}
    with pytest.raises(SubscriptionRequestError):
        FHIR_REST_HOOK.accept(backport_subscription(criteria=["Observation?patient=Patient/c-9"]), Scope(("c-1",)))
    # no patient filter: the token's clients, never all
    assert FHIR_REST_HOOK.accept(backport_subscription(criteria=[]), Scope(("c-1",))).clients == ("c-1",)
    assert FHIR_REST_HOOK.accept(backport_subscription(criteria=[]), Scope(("*",))).clients == ("*",)
    # full resources where the focus is made from the event or read from the care record; not for crises
    risk = FHIR_REST_HOOK.accept(backport_subscription(RISK, criteria=[], content="full-resource"), Scope(("*",)))
    assert FHIR_REST_HOOK.focus_wanted(risk.spec) and not FHIR_REST_HOOK.focus_wanted(accepted.spec)
    with pytest.raises(SubscriptionRequestError):
        FHIR_REST_HOOK.accept(backport_subscription(TOPIC_BASE + "crisis-raised", criteria=[], content="full-resource"),
                              Scope(("*",)))


def test_events_match_by_topic_and_every_filter() -> None:
    plan = uuid4()
    spec = FHIR_REST_HOOK.accept(backport_subscription(
        criteria=[f"Observation?patient=Patient/c-1&care-plan={plan}"]), Scope(("*",))).spec
    assert FHIR_REST_HOOK.matches(spec, stream_event(scored("c-1", plan), "c-1"))
    assert not FHIR_REST_HOOK.matches(spec, stream_event(scored("c-2", plan), "c-2"))
    assert not FHIR_REST_HOOK.matches(spec, stream_event(scored("c-1"), "c-1"))  # another plan
    raised = RiskLevelRaised(originator_id=plan, originator_version=4, timestamp=WHEN, actor=ACTOR,
                             correlation_id=uuid4(), reason="crisis", previous_level=RiskLevel.LOW,
                             level=RiskLevel.HIGH)
    assert not FHIR_REST_HOOK.matches(spec, stream_event(raised, "c-1"))  # another topic
    risk = FHIR_REST_HOOK.accept(backport_subscription(RISK, criteria=[f"RiskAssessment?care-plan=CarePlan/{plan}"]),
                                 Scope(("*",))).spec
    assert FHIR_REST_HOOK.matches(risk, stream_event(raised, "c-1"))
    # a client the service could not resolve never matches a patient filter
    patient = FHIR_REST_HOOK.accept(backport_subscription(RISK, criteria=["RiskAssessment?patient=Patient/c-1"]),
                                    Scope(("*",))).spec
    assert not FHIR_REST_HOOK.matches(patient, stream_event(raised, None))
    session = SessionScheduled(originator_id=uuid4(), originator_version=3, timestamp=WHEN, actor=ACTOR,
                               correlation_id=uuid4(), session_id=uuid4(), number=1, scheduled_for=WHEN,
                               duration_minutes=50)
    course = FHIR_REST_HOOK.accept(backport_subscription(TOPIC_BASE + "session-scheduled", criteria=[
        f"Appointment?course={session.originator_id}"]), Scope(("*",))).spec
    assert FHIR_REST_HOOK.matches(course, stream_event(session, "c-1"))


# ---------------------------------------------------------------- notifications


def test_handshake_and_heartbeat_are_history_bundles_with_the_status_first() -> None:
    spec = FHIR_REST_HOOK.accept(backport_subscription(), Scope(("*",))).spec
    handshake = FHIR_REST_HOOK.handshake(state(spec, status="requested"), WHEN)
    assert handshake is not None and handshake.content_type == "application/fhir+json"
    bundle = sent(handshake)
    assert bundle.type == "history" and len(bundle.entry) == 1
    status = status_of(bundle)
    assert status["type"] == ["handshake"] and status["status"] == ["requested"]
    assert status["subscription"] == [{"reference": "Subscription/sub-1"}] and status["topic"] == [SCORED]
    assert status["events-since-subscription-start"] == ["0"]
    assert bundle.entry[0].request.url == "Subscription/sub-1/$status"
    beat = FHIR_REST_HOOK.heartbeat(state(spec, since=7), WHEN)
    assert beat is not None
    assert status_of(sent(beat))["type"] == ["heartbeat"]
    assert status_of(sent(beat))["events-since-subscription-start"] == ["7"]
    assert beat.message_id != handshake.message_id


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_an_event_notification_carries_its_number_timestamp_and_focus_per_content(content: str) -> None:
    spec = FHIR_REST_HOOK.accept(backport_subscription(content=content), Scope(("*",))).spec
    event = scored("c-1")
    numbered = NumberedEvent(3, stream_event(event, "c-1"))
    notification = FHIR_REST_HOOK.notification(state(spec, since=3), [numbered])
    assert notification.message_id == FHIR_REST_HOOK.notification(state(spec, since=3), [numbered]).message_id
    assert notification.body == FHIR_REST_HOOK.notification(state(spec, since=3), [numbered]).body
    bundle = sent(notification)
    status = status_of(bundle)
    assert status["type"] == ["event-notification"] and status["events-since-subscription-start"] == ["3"]
    (parts,) = status["notification-event"]
    named = {p.name: p for p in parts}
    assert named["event-number"].valueString == "3"
    assert named["timestamp"].valueInstant == WHEN
    focus = f"Observation/{event.event_id}"
    if content == "empty":
        assert "focus" not in named and "topic" not in status and len(bundle.entry) == 1
        return
    assert named["focus"].valueReference.reference == focus
    (entry,) = bundle.entry[1:]
    assert entry.fullUrl == focus and entry.request.method == "POST" and entry.response.status == "201"
    if content == "id-only":
        assert entry.resource is None
    else:
        assert isinstance(entry.resource, Observation)
        assert entry.resource.valueInteger == 12 and entry.resource.subject.reference == "Patient/c-1"


def test_events_status_and_errors_build_from_the_same_numbers() -> None:
    entries = [EventEntry(n, WHEN.isoformat(), f"Observation/{n}") for n in (4, 5, 6)]
    events = notification_bundle(notification_id="sub-1:events:4-6", subscription_id="sub-1", topic_url=SCORED,
                                 status="active", type="query-event", events_since_start=9, timestamp=WHEN.isoformat(),
                                 events=entries)
    again = Bundle.model_validate_json(events.model_dump_json(exclude_none=True))
    numbers = [next(p.valueString for p in e.part if p.name == "event-number")
               for e in again.entry[0].resource.parameter if e.name == "notification-event"]
    assert numbers == ["4", "5", "6"]
    assert [e.fullUrl for e in again.entry[1:]] == ["Observation/4", "Observation/5", "Observation/6"]
    failing = status_parameters(subscription_id="sub-1", topic_url=SCORED, status="error", type="query-status",
                                events_since_start=9, error="receiver answered 410 Gone")
    searchset = Bundle.model_validate_json(status_bundle([failing]).model_dump_json(exclude_none=True))
    assert searchset.type == "searchset" and searchset.total == 1
    status = status_of(searchset)
    assert status["status"] == ["error"] and status["error"][0]["text"] == "receiver answered 410 Gone"


def test_events_over_a_range_show_exactly_what_was_delivered_and_status_says_why_in_error() -> None:
    spec = FHIR_REST_HOOK.accept(backport_subscription(content="full-resource"), Scope(("*",))).spec
    numbered = [NumberedEvent(n, stream_event(scored("c-1"), "c-1")) for n in (1, 2, 3, 4)]
    delivered = [sent(FHIR_REST_HOOK.notification(state(spec, since=n.number), [n])) for n in numbered]

    def shown(bundle: Bundle) -> list[tuple[Any, ...]]:
        events = [p for p in bundle.entry[0].resource.parameter if p.name == "notification-event"]
        return [tuple(part.model_dump_json(exclude_none=True) for part in e.part) for e in events]

    fetched = Bundle.model_validate_json(
        events_response(state(spec, since=4), numbered[1:3], at=WHEN).model_dump_json(exclude_none=True))
    assert status_of(fetched)["type"] == ["query-event"]
    assert shown(fetched) == shown(delivered[1]) + shown(delivered[2])
    assert [e.model_dump_json(exclude_none=True) for e in fetched.entry[1:]] == [
        e.model_dump_json(exclude_none=True) for bundle in delivered[1:3] for e in bundle.entry[1:]]
    # the same range asked with id-only content names the same focus without the resources
    lean = events_response(state(spec, since=4), numbered[1:3], content="id-only", at=WHEN)
    assert [e.fullUrl for e in lean.entry[1:]] == [e.fullUrl for e in fetched.entry[1:]]
    assert all(e.resource is None for e in lean.entry[1:])

    failed = Bundle.model_validate_json(status_response(
        state(spec, status="error", since=4, error="the receiver answered 410 Gone")).model_dump_json(exclude_none=True))
    status = status_of(failed)
    assert failed.type == "searchset" and status["type"] == ["query-status"] and status["status"] == ["error"]
    assert status["error"][0]["text"] == "the receiver answered 410 Gone"
    assert status["events-since-subscription-start"] == ["4"]
