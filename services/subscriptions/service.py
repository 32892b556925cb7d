"""Subscriptions (issue 14): consumes every other application's events from ``CARE``,
numbers those that match each subscription in its feed, and delivers them over HTTP
(services/subscriptions/delivery.py) — CloudEvents webhooks and, through the kind
interface (services/subscriptions/kinds.py), FHIR Subscriptions.

Three aggregates per subscription, each with one writer: the :class:`Subscription` (the
API and the CLI: created, secret rotated, resend requested, deleted), its
:class:`SubscriptionFeed` (this consumer: event ``n`` matched, exactly once with the
message's tracking) and its :class:`SubscriptionDelivery` (the delivery engine: every
attempt, handshake, error, resend applied).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from contracts.generate import SCHEMA_BASE_URI, schema_path
from contracts.subjects import APPLICATION_CONTEXTS, context_of
from domain.base import ANY_CONTEXT, Actor, AggregateRoot, CommandContext, DomainEvent, Role, quote
from domain.events import public_event_classes
from domain.events.subscription_deliveries import SubscriptionDeliveryAttempted
from domain.events.subscription_feeds import SubscriptionEventMatched
from domain.events.subscriptions import SubscriptionCreated, SubscriptionDeleted
from domain.subscriptions.client_link import ClientLink, client_link_id
from domain.subscriptions.delivery import SubscriptionDelivery
from domain.subscriptions.feed import SubscriptionFeed, version_of
from domain.subscriptions.subscription import (
    Subscription,
    SubscriptionStatus,
    delivery_id,
    feed_id,
)
from services.shared.clock import Clock
from services.shared.cloudevents import Inbound
from services.shared.reactions import Reactions
from services.shared.settings import Settings
from services.shared.tracking import ServiceApplication
from services.subscriptions.fhir import kind as _fhir_kind  # noqa: F401  (registers the FHIR kind)
from services.subscriptions.kinds import (
    ALL_CLIENTS,
    NumberedEvent,
    Scope,
    StreamEvent,
    SubscriptionState,
    kind,
)
from services.subscriptions.secrets import SubscriptionKeys

NAME = "subscriptions"
#: The most events one read of a feed returns (``$events``, the CLI).
MAX_RANGE = 1000


class SubscriptionNotFoundError(LookupError):
    """No such subscription within the caller's clients (the same answer either way: ids
    are not revealed)."""


def _consumed() -> tuple[dict[type[DomainEvent], Any], dict[type[DomainEvent], list[str]]]:
    """Every public event of every other application: (classes, contexts of the
    any-context ones)."""
    own = APPLICATION_CONTEXTS[NAME]
    others = [c for application, c in APPLICATION_CONTEXTS.items() if application != NAME]
    classes: list[type[DomainEvent]] = []
    contexts: dict[type[DomainEvent], list[str]] = {}
    for group in public_event_classes().values():
        for cls in group:
            declared = context_of(cls, ANY_CONTEXT)
            if declared == ANY_CONTEXT:
                contexts[cls] = others
            elif declared == own:
                continue
            classes.append(cls)
    return dict.fromkeys(classes), contexts


_CONSUMED, _CONTEXTS = _consumed()


@dataclass(frozen=True)
class Indexed:
    """What the consumer needs of a subscription to match events to it."""

    id: UUID
    kind: str
    spec: dict[str, Any]
    clients: tuple[str, ...]
    off: bool = False
    #: Past this moment it matches nothing (its kind's ``ends_at``; None: never).
    ends_at: datetime | None = None


@dataclass(frozen=True)
class Made:
    """A subscription just made (or its secret just rotated): the secret is shown this once."""

    subscription: Subscription
    secret: str


class SubscriptionsApplication(ServiceApplication):
    name = NAME
    actor = Actor(id="subscriptions-service", role=Role.SERVICE)

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        super().__init__(settings, clock=clock)
        self.keys = SubscriptionKeys.of(settings)
        self._index: dict[UUID, Indexed] = {}
        self._indexed_up_to = 0
        self._index_lock = threading.Lock()
        self._links: dict[str, str] = {}
        #: The care record, opened on first need (``full-resource`` focus read from it).
        self._care: Any = None
        #: The delivery engine, in the service's process only (``run_background``).
        self.engine: Any = None

    def run_background(self, stop: asyncio.Event, lost: asyncio.Event) -> Awaitable[None]:
        """The delivery engine, run by the service's process while it holds the lease."""
        from services.subscriptions.delivery import DeliveryEngine

        self.engine = DeliveryEngine(self)
        return self.engine.run(stop, lost)  # type: ignore[no-any-return]

    def wake_background(self) -> None:
        if self.engine is not None:
            self.engine.wake()

    # ----------------------------------------------------------------- the index

    def subscriptions(self, *, with_off: bool = False) -> list[Indexed]:
        """The subscriptions (not deleted, unless ``with_off``), oldest first: read from the
        log's creations and deletions since the last look (a query of new notifications of
        two topics)."""
        topics = [get_topic(SubscriptionCreated), get_topic(SubscriptionDeleted)]
        with self._index_lock:
            # up to the log's end as it is now, and then from there: a look no longer scans
            # every feed and attempt event since the last subscription was made or deleted
            end = self.process_recorder.max_notification_id() or 0
            while self._indexed_up_to < end:
                found = self.process_recorder.select_notifications(
                    start=self._indexed_up_to + 1, limit=500, stop=end, topics=topics)
                for notification in found:
                    event = self.mapper.to_domain_event(notification)
                    if isinstance(event, SubscriptionCreated):
                        self._index[event.originator_id] = Indexed(
                            event.originator_id, event.kind, dict(event.spec), tuple(event.clients),
                            ends_at=kind(event.kind).ends_at(event.spec))
                    elif event.originator_id in self._index:
                        self._index[event.originator_id] = replace(self._index[event.originator_id], off=True)
                    self._indexed_up_to = notification.id
                if len(found) < 500:
                    self._indexed_up_to = end
            return [s for s in self._index.values() if with_off or not s.off]

    # ----------------------------------------------------------------- consuming

    def record_run(self, handle: Any, messages: Any, trackings: Any, **options: Any) -> int:
        """The subscriptions are read once per run of messages, not once per message."""
        self._unit_of_work.subscriptions = self.subscriptions()
        try:
            return super().record_run(handle, messages, trackings, **options)
        finally:
            self._unit_of_work.subscriptions = None

    def _event(self, _: DomainEvent | None, inbound: Inbound) -> Sequence[AggregateRoot]:
        ctx = self.context_for(inbound)
        changed: list[AggregateRoot] = []
        current = getattr(self._unit_of_work, "subscriptions", None)
        # a client's erasure (issue 16) names the client by pseudonym only: it goes to the subscriptions
        # of that client (so their receivers erase their copies), and is recorded as no client's
        erased = self._erased_client(inbound, current if current is not None else self.subscriptions())
        client_id = None if erased else self._client_of(inbound, ctx, changed)
        event = StreamEvent(
            event_id=inbound.event_id, source=inbound.source, sequence=inbound.sequence, type=inbound.type,
            subject=inbound.subject, aggregate_id=inbound.aggregate_id, time=inbound.time or str(inbound.body.get("timestamp", "")),
            dataschema=inbound.dataschema, client_id=client_id, body=inbound.data,
        )
        now = ctx.at
        for indexed in current if current is not None else self.subscriptions():
            if not _may_receive(indexed.clients, erased or client_id) or not kind(indexed.kind).matches(indexed.spec, event):
                continue
            if indexed.ends_at is not None and indexed.ends_at <= now:
                continue  # past its end: the engine turns it off
            feed: SubscriptionFeed | None = self.find(SubscriptionFeed, feed_id(indexed.id))
            if feed is None:
                feed = SubscriptionFeed.open(indexed.id, ctx=ctx)
            feed.match(
                ctx=ctx, matched_event_id=event.event_id, source=event.source, sequence=event.sequence, type=event.type,
                subject=event.subject, aggregate_id=event.aggregate_id, time=event.time or "unknown",
                dataschema=event.dataschema or self._dataschema(inbound), client_id=client_id,
                body=event.body.decode(),
            )
            changed.append(feed)
        return changed

    def decide(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        """Every event of the table is passed on as published: its body is not decoded into
        its class (the consumer has checked its subject, headers and JSON)."""
        if self.reactions.event_class_of(inbound) is None:
            return []
        return self._event(None, inbound)

    def _dataschema(self, inbound: Inbound) -> str:
        cls = self.reactions.event_class_of(inbound)
        return f"{SCHEMA_BASE_URI}/{schema_path(cls)}" if cls is not None else ""

    def _client_of(self, inbound: Inbound, ctx: CommandContext, changed: list[AggregateRoot]) -> str | None:
        """The event's client: named in it (and then noted for its aggregate), else the one
        noted for its aggregate, else for the plan it names; None: unknown."""
        named = inbound.body.get("client_id")
        if isinstance(named, str) and named:
            if self._linked(inbound.aggregate_id) is None:
                changed.append(ClientLink.note(inbound.aggregate_id, quote(named, 200), ctx=ctx))
            return named
        for aggregate_id in (inbound.aggregate_id, inbound.body.get("plan_id"), inbound.body.get("course_id")):
            if isinstance(aggregate_id, str) and aggregate_id and (client := self._linked(aggregate_id)) is not None:
                return client
        return None

    def _erased_client(self, inbound: Inbound, subscriptions: Sequence[Indexed]) -> str | None:
        """The client a ``ClientDataErased`` is about, among the subscriptions' clients: the one
        whose pseudonym (the key store's keyed hash) it names. None for any other event."""
        client_hash = inbound.body.get("client_hash")
        if not inbound.subject.endswith(".client_data_erased") or not isinstance(client_hash, str):
            return None
        from services.shared.privacy.keys import key_store

        keys = key_store(self.settings)
        for indexed in subscriptions:
            for client in indexed.clients:
                if client != "*" and keys.pseudonym(client) == client_hash:
                    return client
        return None

    def _linked(self, aggregate_id: str) -> str | None:
        """The client noted for an aggregate; a link never changes, so a found one is kept
        in memory (bounded), and only an unknown one is looked up again."""
        if (client := self._links.get(aggregate_id)) is not None:
            return client
        link: ClientLink | None = self.find(ClientLink, client_link_id(aggregate_id))
        if link is None:
            return None
        if len(self._links) >= 100_000:
            self._links.clear()
        self._links[aggregate_id] = link.client_id
        return link.client_id

    reactions = Reactions(dict.fromkeys(_CONSUMED, _event), contexts=_CONTEXTS)

    # ----------------------------------------------------------------- commands (API, CLI)

    def subscribe(self, kind_name: str, request: dict[str, Any], scope: Scope, actor: Actor) -> Made:
        """A new subscription of ``kind_name`` (its request checked by the kind; a
        :class:`~services.subscriptions.kinds.SubscriptionRequestError` says what to fix)."""
        accepted = kind(kind_name).accept(request, scope)
        ctx = CommandContext(actor=actor, at=self.clock(), correlation_id=uuid.uuid4())
        sid = uuid.uuid4()
        subscription = Subscription.create(
            sid, ctx=ctx, kind=kind_name, endpoint=accepted.endpoint, clients=list(accepted.clients),
            spec=dict(accepted.spec), sealed_headers=self.keys.seal(accepted.headers), handshake=accepted.handshake,
            heartbeat_seconds=accepted.heartbeat_seconds, timeout_seconds=accepted.timeout_seconds,
        )
        delivery = SubscriptionDelivery.open(sid, handshake=accepted.handshake, ctx=ctx)
        self.save(subscription, delivery)
        return Made(subscription, self.keys.secret(sid, 1))

    def subscription(self, sid: UUID, scope: Scope) -> Subscription:
        """The subscription, if every client it covers is the caller's."""
        found: Subscription | None = self.find(Subscription, sid)
        if found is None or not _within(found.clients, scope):
            msg = f"No subscription {sid} is recorded for your clients; check the id."
            raise SubscriptionNotFoundError(msg)
        return found

    def rotate_secret(self, sid: UUID, scope: Scope, actor: Actor) -> Made:
        """A new secret, shown once; the previous one still signs during the grace period."""
        subscription = self.subscription(sid, scope)
        at = self.clock()
        ctx = CommandContext(actor=actor, at=at, correlation_id=uuid.uuid4())
        grace = timedelta(hours=self.settings.subscription_secret_grace_hours)
        generation = subscription.rotate_secret(previous_valid_until=at + grace, ctx=ctx)
        self.save(subscription)
        return Made(subscription, self.keys.secret(sid, generation))

    def request_resend(self, sid: UUID, from_number: int, scope: Scope, actor: Actor, reason: str | None = None) -> Subscription:
        subscription = self.subscription(sid, scope)
        ctx = CommandContext(actor=actor, at=self.clock(), correlation_id=uuid.uuid4())
        subscription.request_resend(from_number, reason=reason, ctx=ctx)
        self.save(subscription)
        return subscription

    def delete(self, sid: UUID, scope: Scope, actor: Actor) -> Subscription:
        subscription = self.subscription(sid, scope)
        ctx = CommandContext(actor=actor, at=self.clock(), correlation_id=uuid.uuid4())
        if subscription.delete(reason=None, ctx=ctx):
            self.save(subscription)
        return subscription

    # ----------------------------------------------------------------- reading

    def feed(self, sid: UUID) -> SubscriptionFeed | None:
        return self.find(SubscriptionFeed, feed_id(sid))  # type: ignore[no-any-return]

    def delivery(self, sid: UUID) -> SubscriptionDelivery | None:
        return self.find(SubscriptionDelivery, delivery_id(sid))  # type: ignore[no-any-return]

    def numbered_events(self, sid: UUID, since: int, until: int | None = None) -> list[NumberedEvent]:
        """Events ``since + 1`` .. ``until`` of the subscription's feed (at most
        :data:`MAX_RANGE`), read from the store as a range of the feed's versions."""
        last = since + MAX_RANGE if until is None else min(until, since + MAX_RANGE)
        if last <= since:
            return []
        stored = self.recorder.select_events(feed_id(sid), gt=version_of(since), lte=version_of(last))
        found = []
        for item in stored:
            event = self.mapper.to_domain_event(item)
            if isinstance(event, SubscriptionEventMatched):
                found.append(NumberedEvent(event.number, StreamEvent(
                    event_id=event.matched_event_id, source=event.source, sequence=event.sequence, type=event.type,
                    subject=event.subject, aggregate_id=event.aggregate_id, time=event.time,
                    dataschema=event.dataschema, client_id=event.client_id, body=event.body.encode(),
                )))
        return found

    def with_focus(self, kind_name: str, spec: dict[str, Any], events: list[NumberedEvent]) -> list[NumberedEvent]:
        """``events`` with their focus resources, when the kind wants them for ``spec``
        (FHIR ``full-resource`` of a topic whose focus is read from the care record)."""
        the_kind = kind(kind_name)
        if not events or not the_kind.focus_wanted(spec):
            return events
        from services.subscriptions.fhir.focus import focus_resource

        if self._care is None:
            from services.care.application import CareApplication

            self._care = CareApplication(self.settings)
        found = []
        for numbered in events:
            resource = focus_resource(self._care, spec["topic"], json.loads(numbered.event.body))
            found.append(replace(numbered, focus=resource))
        return found

    def close(self) -> None:
        if self._care is not None:
            self._care.close()
            self._care = None
        super().close()

    def state(self, subscription: Subscription) -> SubscriptionState:
        """What a kind reads of a subscription (its status from its deliveries)."""
        delivery = self.delivery(subscription.id)
        feed = self.feed(subscription.id)
        status = SubscriptionStatus.OFF if subscription.off else (
            delivery.status if delivery is not None else SubscriptionStatus.ACTIVE)
        return SubscriptionState(
            id=str(subscription.id), kind=subscription.kind, endpoint=subscription.endpoint,
            clients=tuple(subscription.clients), spec=subscription.spec, status=status.value,
            events_since_start=feed.last_number if feed is not None else 0, created_at=subscription.created_on,
            error=delivery.error if delivery is not None else None,
        )

    def silent_since(self, subscription: Subscription, now: datetime) -> datetime | None:
        """Since when a subscription has had events waiting without a successful delivery
        (None: nothing waits, or it is off)."""
        if subscription.off:
            return None
        delivery, feed = self.delivery(subscription.id), self.feed(subscription.id)
        if feed is None or delivery is None or feed.last_number <= delivery.delivered_up_to:
            return None
        waiting = self.numbered_events(subscription.id, delivery.delivered_up_to, delivery.delivered_up_to + 1)
        matched_at = _parse_time(waiting[0].event.time) if waiting else None
        candidates = [t for t in (matched_at, delivery.last_success_at, delivery.failing_since) if t is not None]
        return max(candidates) if candidates else now

    def summary(self, subscription: Subscription, now: datetime) -> dict[str, Any]:
        """A subscription as the API and the CLI show it (no secret, no header values)."""
        state = self.state(subscription)
        delivery = self.delivery(subscription.id)
        silent = self.silent_since(subscription, now)
        alarm = state.status == SubscriptionStatus.ERROR.value or (
            silent is not None and (now - silent).total_seconds() > self.settings.alarm_subscription_seconds)
        return {
            "id": state.id, "kind": state.kind, "status": state.status, "error": state.error,
            "endpoint": state.endpoint, "clients": list(state.clients), "spec": dict(state.spec),
            "header_names": sorted(self.keys.unseal(subscription.sealed_headers)),
            "secret_generation": subscription.secret_generation,
            "previous_secret_valid_until": _iso(subscription.previous_valid_until),
            "events_since_start": state.events_since_start,
            "delivered_up_to": delivery.delivered_up_to if delivery is not None else 0,
            "attempts": delivery.attempts if delivery is not None else 0,
            "last_attempt_at": _iso(delivery.last_attempt_at if delivery is not None else None),
            "last_success_at": _iso(delivery.last_success_at if delivery is not None else None),
            "last_status_code": delivery.last_status_code if delivery is not None else None,
            "failing_since": _iso(delivery.failing_since if delivery is not None else None),
            "alarm": alarm,
            "created_at": _iso(subscription.created_on), "created_by": subscription.creator,
            "version": subscription.version,
        }

    def attempts(self, sid: UUID, latest: int = 20) -> list[dict[str, Any]]:
        """The latest delivery attempts, newest first: numbers, status, latency, outcome."""
        stored = self.recorder.select_events(delivery_id(sid), desc=True, limit=max(1, min(latest, 1000)) * 2)
        found = []
        for item in stored:
            event = self.mapper.to_domain_event(item)
            if isinstance(event, SubscriptionDeliveryAttempted):
                found.append({
                    "at": event.timestamp.isoformat(), "attempt_kind": event.attempt_kind.value,
                    "first_number": event.first_number, "last_number": event.last_number,
                    "message_id": event.message_id, "status_code": event.status_code,
                    "latency_ms": event.latency_ms, "outcome": event.outcome.value, "error_class": event.error_class,
                })
        return found[:latest]

    def visible(self, scope: Scope) -> list[Subscription]:
        found = [self.find(Subscription, indexed.id) for indexed in self.subscriptions(with_off=True)]
        return [s for s in found if s is not None and _within(s.clients, scope)]


def _may_receive(clients: tuple[str, ...], client_id: str | None) -> bool:
    """An event whose client is unknown reaches all-clients subscriptions only."""
    return ALL_CLIENTS in clients or (client_id is not None and client_id in clients)


def _within(clients: Sequence[str], scope: Scope) -> bool:
    return scope.all_clients or (ALL_CLIENTS not in clients and set(clients) <= set(scope.clients))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_time(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


SUBJECTS = SubscriptionsApplication.reactions.subjects
