"""The client an aggregate of another service belongs to, as the subscriptions service
learnt it from the first event that named it (a plan's later events do not repeat it):
how a client-scoped subscription is sent its clients' events only."""

from __future__ import annotations

from typing import ClassVar

from domain.base import DomainEvent, ShortText

CONTEXT = "subscriptions"
AGGREGATE = "client_link"


class ClientLinkNoted(DomainEvent):
    summary_template: ClassVar[str] = "{linked_aggregate_id} belongs to client {client_id}"
    linked_aggregate_id: ShortText
    client_id: ShortText
