"""Events of a subscription (issue 14): a hospital system's standing request to be sent
matching events over HTTP, as the API records it. Header values are sealed (encrypted with
the subscriptions service's key) and a signing secret is never recorded: only its
generation, from which the service derives it (services/subscriptions/secrets.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from domain.base import DomainEvent, ShortText

CONTEXT = "subscriptions"
AGGREGATE = "subscription"


class SubscriptionCreated(DomainEvent):
    summary_template: ClassVar[str] = "Subscription of kind {kind} created for {endpoint}"
    kind: ShortText
    endpoint: str = Field(min_length=1, max_length=2000)
    #: The clients whose events it may receive (``*``: all).
    clients: list[ShortText] = Field(min_length=1, max_length=1000)
    #: The kind's stored form of the request (filters, topic, payload content, ...).
    spec: dict[str, Any]
    #: The extra request headers, sealed: they may hold the receiver's credentials.
    sealed_headers: str = Field(default="", max_length=100_000)
    handshake: bool = False
    heartbeat_seconds: float | None = Field(default=None, gt=0)
    timeout_seconds: float | None = Field(default=None, gt=0)
    secret_generation: int = Field(default=1, ge=1)


class SubscriptionSecretRotated(DomainEvent):
    summary_template: ClassVar[str] = "Signing secret rotated to generation {secret_generation}"
    secret_generation: int = Field(ge=2)
    #: Until then requests are signed with the previous secret as well.
    previous_valid_until: datetime


class SubscriptionResendRequested(DomainEvent):
    summary_template: ClassVar[str] = "Resend requested from event {from_number}"
    from_number: int = Field(ge=1)


class SubscriptionDeleted(DomainEvent):
    summary_template: ClassVar[str] = "Subscription deleted (off)"
