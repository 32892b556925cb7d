"""The ``fhir-rest-hook`` kind: FHIR R4 Backport topic-based subscriptions on the
subscriptions service's delivery engine (see :mod:`services.subscriptions.kinds`).

It starts ``requested`` and sends a ``handshake`` before anything else; each matched event
is one ``event-notification`` Bundle (one event per request, so any ``backport-max-count``
holds), heartbeats when the engine has sent nothing for the period asked. The engine
numbers, orders, signs, retries and records; this module only says what is sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from services.subscriptions.fhir.notifications import (
    EventEntry,
    NotificationType,
    notification_bundle,
    stable_id,
    status_bundle,
    status_parameters,
)
from services.subscriptions.fhir.subscription import FhirSubscriptionRequest, parse_subscription
from services.subscriptions.fhir.topics import TOPICS, matches, scope_of, topic_at
from services.subscriptions.kinds import (
    ALL_CLIENTS,
    Accepted,
    Notification,
    NumberedEvent,
    Scope,
    StreamEvent,
    SubscriptionKind,
    SubscriptionRequestError,
    SubscriptionState,
    register,
)

FULL_RESOURCE_TOPICS = tuple(t.url for t in TOPICS if t.full_resource)


def event_entry(spec: Mapping[str, Any], numbered: NumberedEvent) -> EventEntry:
    """A numbered event as its notification (and ``$events``) shows it."""
    topic = topic_at(spec["topic"])
    data = json.loads(numbered.event.body)
    resource = None
    if spec["content"] == "full-resource":
        if numbered.focus is not None:
            resource = dict(numbered.focus)
        elif topic.resource_from_event is not None:
            resource = topic.resource_from_event(data, numbered.event.client_id)
    return EventEntry(number=numbered.number, timestamp=numbered.event.time, focus=topic.focus(data),
                      resource=resource, created=topic.creates(data))


def bundle_json(bundle: Any) -> bytes:
    return bundle.model_dump_json(exclude_none=True).encode()


class FhirRestHook(SubscriptionKind):
    name = "fhir-rest-hook"
    max_batch = 1

    def accept(self, request: Mapping[str, Any], scope: Scope) -> Accepted:
        parsed = parse_subscription(dict(request))
        if parsed.content == "full-resource" and parsed.topic_url not in FULL_RESOURCE_TOPICS:
            raise SubscriptionRequestError(
                "Subscription.channel.payload.extension",
                f"full-resource content is offered for {', '.join(FULL_RESOURCE_TOPICS)}; ask for id-only here")
        patients = parsed.client_ids
        if patients:
            if not scope.all_clients and not patients <= set(scope.clients):
                raise SubscriptionRequestError("Subscription.criteria.extension",
                                               "a subscription may cover only the clients of your token")
            clients = tuple(sorted(patients))
        else:
            clients = scope.clients if not scope.all_clients else (ALL_CLIENTS,)
        return Accepted(
            endpoint=parsed.endpoint,
            clients=clients,
            spec=parsed.spec(),
            headers=dict(parsed.headers),
            handshake=True,
            heartbeat_seconds=parsed.heartbeat_seconds,
            timeout_seconds=parsed.timeout_seconds,
        )

    def matches(self, spec: Mapping[str, Any], event: StreamEvent) -> bool:
        topic = topic_at(spec["topic"])
        if not topic.triggered_by(event):
            return False
        filters = tuple((key, value) for key, value in spec["filters"])
        return matches(filters, scope_of(event, json.loads(event.body)))

    def _notification(self, state: SubscriptionState, message_id: str, type: NotificationType, at: str,
                      events: Sequence[EventEntry] = ()) -> Notification:
        spec = state.spec
        bundle = notification_bundle(
            notification_id=message_id, subscription_id=state.id, topic_url=spec["topic"], status=state.status,
            type=type, events_since_start=state.events_since_start, timestamp=at, events=events,
            content=spec["content"], error=state.error)
        return Notification(message_id=message_id, body=bundle_json(bundle), content_type=spec["payload_type"])

    def notification(self, state: SubscriptionState, events: Sequence[NumberedEvent]) -> Notification:
        entries = [event_entry(state.spec, numbered) for numbered in events]
        # the subscription and its event numbers: a resend of the same events is the same message
        message_id = f"{state.id}:{entries[0].number}-{entries[-1].number}"
        # stamped with the last event's time, not the clock: a retry sends the same bytes
        return self._notification(state, message_id, "event-notification", entries[-1].timestamp, entries)

    def focus_wanted(self, spec: Mapping[str, Any]) -> bool:
        return spec.get("content") == "full-resource" and topic_at(spec["topic"]).resource_from_record

    def ends_at(self, spec: Mapping[str, Any]) -> datetime | None:
        end = spec.get("end")
        if not end:
            return None
        at = datetime.fromisoformat(end)
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)

    def handshake(self, state: SubscriptionState, at: datetime) -> Notification | None:
        return self._notification(state, f"{state.id}:handshake", "handshake", _instant(at))

    def heartbeat(self, state: SubscriptionState, at: datetime) -> Notification | None:
        return self._notification(state, f"{state.id}:heartbeat:{_instant(at)}", "heartbeat", _instant(at))


def status_response(state: SubscriptionState) -> Any:
    """``GET /fhir/Subscription/{id}/$status``: a searchset of its status (``query-status``),
    with the reason when it is in ``error``."""
    return status_bundle([status_parameters(
        subscription_id=state.id, topic_url=state.spec["topic"], status=state.status, type="query-status",
        events_since_start=state.events_since_start, error=state.error,
        parameters_id=stable_id(state.id, "status", state.status, state.events_since_start))])


def events_response(state: SubscriptionState, events: Sequence[NumberedEvent], *, content: str | None = None,
                    at: datetime) -> Any:
    """``$events?eventsSinceNumber=&eventsUntilNumber=``: the events of that range (from the
    service's own store) as one ``query-event`` Bundle, each as its notification showed it."""
    spec = {**state.spec, "content": content or state.spec["content"]}
    entries = [event_entry(spec, numbered) for numbered in events]
    span = f"{entries[0].number}-{entries[-1].number}" if entries else "none"
    return notification_bundle(
        notification_id=f"{state.id}:events:{span}", subscription_id=state.id, topic_url=spec["topic"],
        status=state.status, type="query-event", events_since_start=state.events_since_start, timestamp=_instant(at),
        events=entries, content=spec["content"], error=state.error)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def request_of(state: SubscriptionState) -> FhirSubscriptionRequest:
    return FhirSubscriptionRequest.from_spec(state.spec)


FHIR_REST_HOOK = register(FhirRestHook())
