"""Subscription: what a hospital system asked to be sent, to where, for which clients."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, Self
from uuid import UUID, uuid5

from domain.base import AggregateRoot, CommandContext, when
from domain.errors import DomainError
from domain.events.subscriptions import (
    SubscriptionCreated,
    SubscriptionDeleted,
    SubscriptionResendRequested,
    SubscriptionSecretRotated,
)

SUBSCRIPTION_NAMESPACE = UUID("9a4c1b3e-7d2f-4e8a-b6c5-3f1e0d9a8b71")


def feed_id(subscription_id: UUID) -> UUID:
    return uuid5(SUBSCRIPTION_NAMESPACE, f"feed:{subscription_id}")


def delivery_id(subscription_id: UUID) -> UUID:
    return uuid5(SUBSCRIPTION_NAMESPACE, f"delivery:{subscription_id}")


class SubscriptionStateError(DomainError):
    """The subscription is off (deleted): it cannot be changed any more."""

    code = "subscription-state"


class SubscriptionStatus(str, Enum):
    REQUESTED = "requested"
    ACTIVE = "active"
    ERROR = "error"
    OFF = "off"


class Subscription(AggregateRoot):
    created_event = SubscriptionCreated

    kind: str
    endpoint: str
    clients: list[str]
    spec: dict[str, Any]
    sealed_headers: str = ""
    handshake: bool = False
    heartbeat_seconds: float | None = None
    timeout_seconds: float | None = None
    secret_generation: int = 1
    previous_valid_until: datetime | None = None
    off: bool = False
    #: Resend requests made, and the last one's first event number.
    resend_requests: int = 0
    resend_from: int = 0
    creator: str = ""

    @classmethod
    def create(cls, subscription_id: UUID, *, ctx: CommandContext, **fields: Any) -> Self:
        return cls._start(SubscriptionCreated, ctx, subscription_id, **fields)

    @classmethod
    def _from_created(cls, event: SubscriptionCreated) -> Self:  # type: ignore[override]
        return cls._created(
            event, kind=event.kind, endpoint=event.endpoint, clients=list(event.clients), spec=dict(event.spec),
            sealed_headers=event.sealed_headers, handshake=event.handshake, heartbeat_seconds=event.heartbeat_seconds,
            timeout_seconds=event.timeout_seconds, secret_generation=event.secret_generation, creator=event.actor.id,
        )

    def _require_on(self) -> None:
        if self.off:
            msg = f"Subscription {self.id} is off (deleted); create a new one."
            raise SubscriptionStateError(msg)

    def rotate_secret(self, *, previous_valid_until: datetime, ctx: CommandContext) -> int:
        self._require_on()
        self._trigger(SubscriptionSecretRotated, ctx, secret_generation=self.secret_generation + 1,
                      previous_valid_until=previous_valid_until)
        return self.secret_generation

    @when(SubscriptionSecretRotated)
    def _rotated(self, event: SubscriptionSecretRotated) -> None:
        self.secret_generation = event.secret_generation
        self.previous_valid_until = event.previous_valid_until

    def request_resend(self, from_number: int, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_on()
        self._trigger(SubscriptionResendRequested, ctx, from_number=from_number, reason=reason)

    @when(SubscriptionResendRequested)
    def _resend_requested(self, event: SubscriptionResendRequested) -> None:
        self.resend_requests += 1
        self.resend_from = event.from_number

    def delete(self, *, reason: str | None, ctx: CommandContext) -> bool:
        if self.off:
            return False
        self._trigger(SubscriptionDeleted, ctx, reason=reason)
        return True

    @when(SubscriptionDeleted)
    def _deleted(self, _: SubscriptionDeleted) -> None:
        self.off = True

    def secret_generations(self, at: datetime) -> list[int]:
        """The secrets that sign a request at ``at``: the current one, and the previous one
        during its grace period."""
        generations = [self.secret_generation]
        if self.previous_valid_until is not None and at < self.previous_valid_until:
            generations.append(self.secret_generation - 1)
        return generations
