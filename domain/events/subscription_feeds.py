"""Events of a subscription's feed: the events of the stream that matched it, numbered
1, 2, 3, ... without gaps for as long as it exists, each with its content exactly as
published (``body``), so any range since the start can be sent again or read back
(``$events``) from the subscriptions service's own store."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from pydantic import Field

from domain.base import DomainEvent, ShortText

CONTEXT = "subscriptions"
AGGREGATE = "subscription_feed"


class SubscriptionFeedOpened(DomainEvent):
    summary_template: ClassVar[str] = "Feed of subscription {subscription_id} opened"
    subscription_id: UUID


class SubscriptionEventMatched(DomainEvent):
    """Event ``number`` of the subscription: the feed's version is ``number + 1``."""

    summary_template: ClassVar[str] = "Event {number} matched: {type}"
    subscription_id: UUID
    number: int = Field(ge=1)
    #: The matched event's own id (``ce-id``).
    matched_event_id: ShortText
    source: ShortText
    sequence: int = Field(ge=1)
    type: ShortText
    subject: str = Field(min_length=1, max_length=500)
    aggregate_id: ShortText
    time: ShortText
    dataschema: str = Field(max_length=500)
    client_id: ShortText | None = None
    #: The contract JSON exactly as published (UTF-8 text of the message's bytes).
    body: str
