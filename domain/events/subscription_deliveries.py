"""Events of a subscription's deliveries: every attempt to send (its numbers, the HTTP
status, how long it took, what follows: no payload), a handshake passed, the state
``error`` with its reason, and a resend applied. Who received what, when, is read here."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import ClassVar
from uuid import UUID

from pydantic import Field

from domain.base import DomainEvent, ShortText

CONTEXT = "subscriptions"
AGGREGATE = "subscription_delivery"


class AttemptKind(str, Enum):
    EVENTS = "events"
    HANDSHAKE = "handshake"
    HEARTBEAT = "heartbeat"


class AttemptOutcome(str, Enum):
    DELIVERED = "delivered"
    #: Failed for a reason that may pass (timeout, connection, 5xx, 408, 429): tried again.
    RETRY = "retry"
    #: Failed for good (another 4xx, or retries exhausted): the subscription is in error.
    FAILED = "failed"


class SubscriptionDeliveryOpened(DomainEvent):
    summary_template: ClassVar[str] = "Deliveries of subscription {subscription_id} opened"
    subscription_id: UUID
    #: It becomes active only once a handshake passes (FHIR ``requested``).
    awaiting_handshake: bool = False


class SubscriptionDeliveryAttempted(DomainEvent):
    summary_template: ClassVar[str] = "Attempt {attempt_kind} {first_number}-{last_number}: {outcome} ({status_code})"
    subscription_id: UUID
    attempt_kind: AttemptKind
    #: The event numbers sent (0 and 0 for a handshake or heartbeat).
    first_number: int = Field(ge=0)
    last_number: int = Field(ge=0)
    #: The Standard Webhooks ``webhook-id``: the same for every attempt of the same content.
    message_id: ShortText
    #: The receiver's HTTP status (None: no answer: timeout, connection refused).
    status_code: int | None = Field(default=None, ge=100, le=599)
    latency_ms: int = Field(ge=0)
    outcome: AttemptOutcome
    #: The class of failure (``timeout``, ``connection``, ``http-503``), no text of the receiver's.
    error_class: ShortText | None = None
    retry_at: datetime | None = None


class SubscriptionDeliveryFailed(DomainEvent):
    """The subscription is in ``error``: ``reason`` says why (a status, retries exhausted)."""

    summary_template: ClassVar[str] = "Subscription in error: {reason}"


class SubscriptionHandshakePassed(DomainEvent):
    summary_template: ClassVar[str] = "Handshake passed: the subscription is active"


class SubscriptionResent(DomainEvent):
    """A resend request applied: delivery goes on from ``from_number`` (out of ``error`` too)."""

    summary_template: ClassVar[str] = "Delivery rewound to event {from_number}"
    from_number: int = Field(ge=1)
    #: How many resend requests of the subscription have been applied, this one included.
    resends_applied: int = Field(ge=1)


class SubscriptionSendingStarted(DomainEvent):
    """Recorded before a request (or a run of requests) leaves: events ``first_number`` ..
    ``last_number`` may be sent from now on. The attempts' own events follow once they are
    made; if the service stops before, the next start records
    :class:`SubscriptionSendingInterrupted` for this range: no attempt goes unmentioned."""

    summary_template: ClassVar[str] = "Sending {attempt_kind} {first_number}-{last_number}"
    attempt_kind: AttemptKind
    first_number: int = Field(ge=0)
    last_number: int = Field(ge=0)


class SubscriptionSendingInterrupted(DomainEvent):
    """The service stopped while sending ``first_number`` .. ``last_number`` (announced at
    ``started_at``): some of those requests may have reached the receiver, and their
    attempts were not recorded. They are sent again (the same ids and bytes) and those
    repeats are recorded."""

    summary_template: ClassVar[str] = (
        "Sending {attempt_kind} {first_number}-{last_number} interrupted: earlier attempts may have been made, "
        "unrecorded"
    )
    attempt_kind: AttemptKind
    first_number: int = Field(ge=0)
    last_number: int = Field(ge=0)
    started_at: datetime
