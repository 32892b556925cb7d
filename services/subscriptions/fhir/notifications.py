"""Notification ``history`` Bundles of the R4 backport (profile
``backport-subscription-notification-r4``): the first entry is the subscription-status
``Parameters`` (``backport-subscription-status-r4``), then one entry per event's focus.

The same builder answers every notification type: ``handshake``, ``heartbeat``,
``event-notification``, and the operations' ``query-status`` (``$status``) and
``query-event`` (``$events``), so what a receiver was sent and what it fetches later are
made by one function from the same stored numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import NAMESPACE_URL, uuid5

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.parameters import Parameters

from services.subscriptions.fhir.subscription import IG

STATUS_PROFILE = IG + "backport-subscription-status-r4"
NOTIFICATION_PROFILE = IG + "backport-subscription-notification-r4"

NotificationType = Literal["handshake", "heartbeat", "event-notification", "query-status", "query-event"]


@dataclass(frozen=True)
class EventEntry:
    """One numbered event as a notification shows it."""

    number: int
    #: When it happened (an instant: RFC 3339 with a zone).
    timestamp: str
    #: ``<ResourceType>/<id>`` of the resource it changed.
    focus: str
    #: The focus resource's JSON (``full-resource`` content), when the kind can make it.
    resource: Mapping[str, Any] | None = None
    #: Whether the event created its focus (POST/201) rather than changed it (PUT/200).
    created: bool = False


def stable_id(*parts: object) -> str:
    """A FHIR id that is the same every time for the same parts (a resent notification
    is the same notification)."""
    return str(uuid5(NAMESPACE_URL, "careplan:fhir-subscription:" + ":".join(str(p) for p in parts)))


def status_parameters(*, subscription_id: str, topic_url: str | None, status: str, type: NotificationType,
                      events_since_start: int, events: Sequence[EventEntry] = (), content: str = "id-only",
                      error: str | None = None, parameters_id: str | None = None) -> Parameters:
    """The subscription-status Parameters. ``empty`` content names neither the topic nor
    the focus (the IG: the topic SHOULD NOT be present with empty payloads)."""
    parameter: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"Subscription/{subscription_id}"}},
        *([{"name": "topic", "valueCanonical": topic_url}] if topic_url and content != "empty" else []),
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": type},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    for event in events:
        parameter.append({"name": "notification-event", "part": [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": event.timestamp},
            *([{"name": "focus", "valueReference": {"reference": event.focus}}] if content != "empty" else []),
        ]})
    if error:
        # the engine's reason as text: which code of the IG's (unbound) error system applies
        # is the engine's to say, and it says it in words
        parameter.append({"name": "error", "valueCodeableConcept": {"text": error}})
    return Parameters.model_validate({
        "resourceType": "Parameters",
        **({"id": parameters_id} if parameters_id else {}),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameter,
    })


def notification_bundle(*, notification_id: str, subscription_id: str, topic_url: str, status: str,
                        type: NotificationType, events_since_start: int, timestamp: str,
                        events: Sequence[EventEntry] = (), content: str = "id-only",
                        error: str | None = None) -> Bundle:
    """A notification (or ``$events`` answer): a ``history`` Bundle, status first."""
    status_id = stable_id(notification_id, "status")
    entries: list[dict[str, Any]] = [{
        "fullUrl": f"urn:uuid:{status_id}",
        "resource": status_parameters(
            subscription_id=subscription_id, topic_url=topic_url, status=status, type=type,
            events_since_start=events_since_start, events=events, content=content, error=error,
            parameters_id=status_id).model_dump(mode="json", exclude_none=True),
        "request": {"method": "GET", "url": f"Subscription/{subscription_id}/$status"},
        "response": {"status": "200"},
    }]
    if content != "empty":
        for event in events:
            resource_type = event.focus.split("/", 1)[0]
            entries.append({
                "fullUrl": event.focus,
                **({"resource": dict(event.resource)} if content == "full-resource" and event.resource else {}),
                "request": {"method": "POST" if event.created else "PUT",
                            "url": resource_type if event.created else event.focus},
                "response": {"status": "201" if event.created else "200"},
            })
    return Bundle.model_validate({
        "resourceType": "Bundle",
        "id": stable_id(notification_id),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": timestamp,
        "entry": entries,
    })


def status_bundle(statuses: Sequence[Parameters]) -> Bundle:
    """``$status``: a ``searchset`` of subscription-status Parameters (type ``query-status``)."""
    return Bundle.model_validate({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(statuses),
        "entry": [{"fullUrl": f"urn:uuid:{p.id or stable_id('status', i)}",
                   "resource": p.model_dump(mode="json", exclude_none=True),
                   "search": {"mode": "match"}} for i, p in enumerate(statuses)],
    })
