"""ClientLink: which client an aggregate (a care plan, a course, a crisis) belongs to."""

from __future__ import annotations

from typing import Self
from uuid import UUID, uuid5

from domain.base import AggregateRoot, CommandContext
from domain.events.subscription_clients import ClientLinkNoted
from domain.subscriptions.subscription import SUBSCRIPTION_NAMESPACE


def client_link_id(aggregate_id: str) -> UUID:
    return uuid5(SUBSCRIPTION_NAMESPACE, f"client-of:{aggregate_id}")


class ClientLink(AggregateRoot):
    created_event = ClientLinkNoted

    linked_aggregate_id: str
    client_id: str

    @classmethod
    def note(cls, aggregate_id: str, client_id: str, *, ctx: CommandContext) -> Self:
        return cls._start(ClientLinkNoted, ctx, client_link_id(aggregate_id), linked_aggregate_id=aggregate_id,
                          client_id=client_id)

    @classmethod
    def _from_created(cls, event: ClientLinkNoted) -> Self:  # type: ignore[override]
        return cls._created(event, linked_aggregate_id=event.linked_aggregate_id, client_id=event.client_id)
