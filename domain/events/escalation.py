"""Events of the crisis escalation service (its Crisis aggregate)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

from pydantic import Field

from domain.base import DomainEvent, RequiresReason, ShortText, Text
from domain.catalogues.escalation import DeliveryChannel, EscalationSeverity, EscalationTrigger

#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "escalation"
AGGREGATE = "crisis"


class EscalationRaised(RequiresReason):
    summary_template: ClassVar[str] = "Escalation raised ({severity}): {trigger}"
    #: The plan and client concerned. Absent only from a fail-safe escalation
    #: (``unprocessable_risk_signal``) whose message could not even be read for them.
    plan_id: UUID | None = None
    client_id: ShortText | None = None
    trigger: EscalationTrigger
    severity: EscalationSeverity
    #: The event that triggered the escalation (also the causation id).
    source_event_id: ShortText


class EscalationLevelNotified(DomainEvent):
    summary_template: ClassVar[str] = "Level {level} ({level_name}) notified: {contact}, acknowledge by {ack_due}"
    level: int = Field(ge=1)
    level_name: ShortText
    contact: ShortText
    round: int = Field(ge=1)
    ack_due: datetime


class _NotificationOutcome(DomainEvent):
    """One delivery of a level's notification to one channel of one contact. Ids, kinds
    and figures only: never what the crisis is about."""

    #: The delivery's id, stable across retries and restarts: the webhook's ``webhook-id``,
    #: the mail's ``Message-ID``. A receiver that sees it twice has the same notification.
    notification_id: UUID
    #: The ``EscalationLevelNotified`` event this delivery carried.
    notified_event_id: UUID
    level: int = Field(ge=1)
    round: int = Field(ge=1)
    #: The policy's pseudonymous contact id.
    contact: ShortText
    channel: DeliveryChannel
    #: Attempts made (the short bounded retry), and the time from the first to the outcome.
    attempts: int = Field(ge=1)
    latency_ms: float = Field(ge=0)
    #: The HTTP status (webhook) or the SMTP reply code (e-mail) of the last attempt, if any.
    status: int | None = None


class EscalationNotificationDelivered(_NotificationOutcome):
    summary_template: ClassVar[str] = "Level {level} notification delivered to {contact} by {channel}"


class EscalationNotificationFailed(_NotificationOutcome):
    summary_template: ClassVar[str] = "Level {level} notification to {contact} by {channel} failed: {error_class}"
    #: What went wrong, as a class: ``http_500``, ``timeout``, ``connection_error``,
    #: ``smtp_550``, ``smtp_not_configured``, ...
    error_class: ShortText


class EscalationTimedOut(DomainEvent):
    summary_template: ClassVar[str] = "No acknowledgement from level {level} by {ack_due}"
    level: int = Field(ge=1)
    ack_due: datetime


class EscalationAcknowledged(RequiresReason):
    summary_template: ClassVar[str] = "Escalation acknowledged at level {level}"
    level: int = Field(ge=1)


class CrisisResolved(RequiresReason):
    summary_template: ClassVar[str] = "Crisis resolved: {outcome}"
    #: Absent when the crisis named no plan (a fail-safe crisis whose message could not be read).
    plan_id: UUID | None = None
    outcome: Text
