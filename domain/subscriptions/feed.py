"""SubscriptionFeed: the events that matched one subscription, numbered without gaps."""

from __future__ import annotations

from typing import Any, Self
from uuid import UUID

from domain.base import AggregateRoot, CommandContext, when
from domain.events.subscription_feeds import SubscriptionEventMatched, SubscriptionFeedOpened
from domain.subscriptions.subscription import feed_id


class SubscriptionFeed(AggregateRoot):
    """Its events are its numbers: event ``n`` is version ``n + 1``, so a range of numbers
    is a range of versions, read without loading the rest."""

    created_event = SubscriptionFeedOpened

    subscription_id: UUID
    last_number: int = 0

    @classmethod
    def open(cls, subscription_id: UUID, *, ctx: CommandContext) -> Self:
        return cls._start(SubscriptionFeedOpened, ctx, feed_id(subscription_id), subscription_id=subscription_id)

    @classmethod
    def _from_created(cls, event: SubscriptionFeedOpened) -> Self:  # type: ignore[override]
        return cls._created(event, subscription_id=event.subscription_id)

    def match(self, *, ctx: CommandContext, **event: Any) -> int:
        self._trigger(SubscriptionEventMatched, ctx, subscription_id=self.subscription_id,
                      number=self.last_number + 1, **event)
        return self.last_number

    @when(SubscriptionEventMatched)
    def _matched(self, event: SubscriptionEventMatched) -> None:
        self.last_number = event.number


def version_of(number: int) -> int:
    return number + 1
