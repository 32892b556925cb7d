"""SubscriptionDelivery: how far a subscription's events were delivered, every attempt,
and whether it is active, still requested (no handshake yet) or in error."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self
from uuid import UUID

from domain.base import AggregateRoot, CommandContext, when
from domain.events.subscription_deliveries import (
    AttemptKind,
    AttemptOutcome,
    SubscriptionDeliveryAttempted,
    SubscriptionDeliveryFailed,
    SubscriptionDeliveryOpened,
    SubscriptionHandshakePassed,
    SubscriptionResent,
    SubscriptionSendingInterrupted,
    SubscriptionSendingStarted,
)
from domain.subscriptions.subscription import SubscriptionStatus, delivery_id


class SubscriptionDelivery(AggregateRoot):
    created_event = SubscriptionDeliveryOpened

    subscription_id: UUID
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE
    error: str | None = None
    #: Every event up to this number has been delivered (a 2xx answer).
    delivered_up_to: int = 0
    resends_applied: int = 0
    #: Since when the current run of failed attempts lasts (None: the last one passed).
    failing_since: datetime | None = None
    failures: int = 0
    last_attempt_at: datetime | None = None
    last_success_at: datetime | None = None
    last_status_code: int | None = None
    attempts: int = 0
    #: Not before then is the next attempt made (a failed one's backoff or ``Retry-After``).
    retry_at: datetime | None = None
    #: Announced and not yet followed by its attempts' record: (kind, first, last, since).
    #: Still set when the engine starts: the previous one stopped mid-run.
    sending: tuple[AttemptKind, int, int, datetime] | None = None
    #: Runs whose attempts may have been made without being recorded (the service stopped).
    interrupted: int = 0

    @classmethod
    def open(cls, subscription_id: UUID, *, handshake: bool, ctx: CommandContext) -> Self:
        return cls._start(SubscriptionDeliveryOpened, ctx, delivery_id(subscription_id),
                          subscription_id=subscription_id, awaiting_handshake=handshake)

    @classmethod
    def _from_created(cls, event: SubscriptionDeliveryOpened) -> Self:  # type: ignore[override]
        status = SubscriptionStatus.REQUESTED if event.awaiting_handshake else SubscriptionStatus.ACTIVE
        return cls._created(event, subscription_id=event.subscription_id, status=status)

    def attempted(self, *, ctx: CommandContext, **fields: Any) -> None:
        self._trigger(SubscriptionDeliveryAttempted, ctx, subscription_id=self.subscription_id, **fields)

    def sending_started(self, attempt_kind: AttemptKind, first: int, last: int, *, ctx: CommandContext) -> None:
        self._trigger(SubscriptionSendingStarted, ctx, attempt_kind=attempt_kind, first_number=first, last_number=last)

    @when(SubscriptionSendingStarted)
    def _sending_started(self, event: SubscriptionSendingStarted) -> None:
        self.sending = (event.attempt_kind, event.first_number, event.last_number, event.timestamp)

    def sending_interrupted(self, *, ctx: CommandContext,
                            sending: tuple[AttemptKind, int, int, datetime] | None = None) -> None:
        """The outcome of the announced sending (or of ``sending``) is unknown: said so."""
        sending = sending or self.sending
        if sending is None:
            return
        attempt_kind, first, last, since = sending
        self._trigger(SubscriptionSendingInterrupted, ctx, attempt_kind=attempt_kind, first_number=first,
                      last_number=last, started_at=since)

    @when(SubscriptionSendingInterrupted)
    def _sending_interrupted(self, _: SubscriptionSendingInterrupted) -> None:
        self.sending = None
        self.interrupted += 1

    @when(SubscriptionDeliveryAttempted)
    def _attempted(self, event: SubscriptionDeliveryAttempted) -> None:
        self.sending = None
        self.attempts += 1
        self.last_attempt_at = event.timestamp
        self.last_status_code = event.status_code
        self.retry_at = event.retry_at if event.outcome is AttemptOutcome.RETRY else None
        if event.outcome is AttemptOutcome.DELIVERED:
            self.failing_since, self.failures, self.last_success_at = None, 0, event.timestamp
            if event.attempt_kind is AttemptKind.EVENTS:
                self.delivered_up_to = max(self.delivered_up_to, event.last_number)
        else:
            self.failing_since = self.failing_since or event.timestamp
            self.failures += 1

    def handshake_passed(self, *, ctx: CommandContext) -> None:
        self._trigger(SubscriptionHandshakePassed, ctx)

    @when(SubscriptionHandshakePassed)
    def _handshake(self, _: SubscriptionHandshakePassed) -> None:
        self.status = SubscriptionStatus.ACTIVE

    def fail(self, reason: str, *, ctx: CommandContext) -> None:
        self._trigger(SubscriptionDeliveryFailed, ctx, reason=reason)

    @when(SubscriptionDeliveryFailed)
    def _failed(self, event: SubscriptionDeliveryFailed) -> None:
        self.status = SubscriptionStatus.ERROR
        self.error = event.reason

    def resend(self, from_number: int, *, resends_applied: int, ctx: CommandContext) -> None:
        self._trigger(SubscriptionResent, ctx, from_number=from_number, resends_applied=resends_applied)

    @when(SubscriptionResent)
    def _resent(self, event: SubscriptionResent) -> None:
        self.delivered_up_to = event.from_number - 1
        self.resends_applied = event.resends_applied
        self.failing_since, self.failures, self.retry_at = None, 0, None
        if self.status is SubscriptionStatus.ERROR:
            self.status, self.error = SubscriptionStatus.ACTIVE, None
