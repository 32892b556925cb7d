"""The kinds of subscription, and the interface a kind implements.

The subscriptions service is one delivery engine for every kind: it consumes ``CARE``,
numbers each subscription's matched events (1, 2, 3, ... without gaps, for ever), sends
them in order, signs every request (Standard Webhooks), retries by error class, records
every attempt, and alarms on silence. What differs between kinds is only what a kind
decides here:

- :meth:`SubscriptionKind.accept`: a request (the JSON a client posted) becomes the stored
  form of a subscription (:class:`Accepted`: endpoint, extra headers, clients, and the
  kind's own ``spec``), or a :class:`SubscriptionRequestError` that the API answers 422;
- :meth:`SubscriptionKind.matches`: whether an event of the stream belongs to a
  subscription (the engine has already checked its clients);
- :meth:`SubscriptionKind.notification`: the body, content type and extra headers of one
  HTTP request for a numbered batch of events (at most :attr:`SubscriptionKind.max_batch`);
- :meth:`SubscriptionKind.handshake` and :meth:`SubscriptionKind.heartbeat`: optional
  requests without events (None: the kind has none).

A kind never does I/O, never reads the clock (times arrive in the arguments) and never
signs: the engine adds ``webhook-id`` (:attr:`Notification.message_id`, stable across
retries), ``webhook-timestamp`` and ``webhook-signature``. ``KINDS`` names every kind;
a kind module adds itself with :func:`register`.

What the service offers a kind's routes (``services.subscriptions.service.SubscriptionsApplication``):
``subscribe(kind_name, request, scope, actor)`` (the secret shown once), ``subscription(id,
scope)``, ``delete``, ``rotate_secret``, ``request_resend(id, from_number, ...)``,
``state(subscription)`` (status, ``events_since_start``, error: ``$status``),
``numbered_events(id, since, until)`` (any range from the store: ``$events``) and
``attempts(id)``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

from contracts.subjects import ROOT

#: A token's ``clients`` entry that means every client (as ``services.api.auth.ALL_CLIENTS``).
ALL_CLIENTS = "*"
#: Headers a subscriber may not set: the engine's own, and those HTTP itself owns.
RESERVED_HEADERS = frozenset({
    "webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "content-length",
    "host", "transfer-encoding", "connection",
})
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}\Z")
_HEADER_VALUE = re.compile(r"[\x20-\x7e]{0,1024}\Z")
_SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,100}\Z")


class SubscriptionRequestError(ValueError):
    """A request is not a subscription of this kind. The message says what to change and
    names the field (``field``); it never repeats a value the client sent."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class Scope:
    """Who asks: the token's clients (``("*",)``: all)."""

    clients: tuple[str, ...]

    @property
    def all_clients(self) -> bool:
        return ALL_CLIENTS in self.clients


@dataclass(frozen=True)
class Accepted:
    """The stored form of a subscription request, common part plus the kind's ``spec``
    (JSON-able; the kind reads it back in :meth:`SubscriptionKind.matches` and
    :meth:`SubscriptionKind.notification`)."""

    endpoint: str
    #: The clients whose events it may receive (``("*",)``: all), never wider than the token's.
    clients: tuple[str, ...]
    spec: Mapping[str, Any]
    #: Sent with every request (e.g. FHIR ``channel.header``); no reserved name.
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Whether the subscription starts ``requested`` and becomes ``active`` only after a
    #: successful :meth:`SubscriptionKind.handshake` (else it starts ``active``).
    handshake: bool = False
    #: Seconds between heartbeats when nothing else was sent (None: no heartbeats).
    heartbeat_seconds: float | None = None
    #: Seconds one request may take before it counts as a timeout (None: the engine's default).
    timeout_seconds: float | None = None


@dataclass(frozen=True)
class StreamEvent:
    """One event of the ``CARE`` stream as the engine hands it to kinds: the CloudEvents
    attributes, the contract JSON exactly as published (``body``, raw bytes: a signature
    covers these bytes, never a re-serialisation), and the client it concerns (resolved
    by the service from the event or its aggregate; None: unknown, delivered only to
    all-clients subscriptions)."""

    event_id: str
    source: str  # the application (``care``, ``escalation``, ...)
    sequence: int  # its position in the source's log (``ce-sequence``)
    type: str  # ``ce-type``
    subject: str  # the NATS subject
    aggregate_id: str
    time: str  # ``ce-time`` (RFC 3339)
    dataschema: str
    client_id: str | None
    body: bytes


@dataclass(frozen=True)
class NumberedEvent:
    """A matched event with its number in one subscription (1, 2, ...: no gaps)."""

    number: int
    event: StreamEvent
    #: The focus resource at the event's version, read from the record by the service when
    #: the kind wants it (``focus_wanted``); None: not asked for, or not found.
    focus: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SubscriptionState:
    """What a kind may read about the subscription it builds a request for."""

    id: str
    kind: str
    endpoint: str
    clients: tuple[str, ...]
    spec: Mapping[str, Any]
    #: ``requested`` | ``active`` | ``error`` | ``off``.
    status: str
    #: The highest event number assigned so far (``events-since-subscription-start``).
    events_since_start: int
    created_at: datetime
    error: str | None = None


@dataclass(frozen=True)
class Notification:
    """One HTTP request's content. ``message_id`` is the Standard Webhooks ``webhook-id``:
    the same for every retry and resend of the same content, so receivers de-duplicate."""

    message_id: str
    body: bytes
    content_type: str
    headers: Mapping[str, str] = field(default_factory=dict)


class SubscriptionKind(ABC):
    """A kind of subscription (see the module's docstring)."""

    #: Its name in the store and the API (``webhook``, ``fhir-rest-hook``).
    name: ClassVar[str]
    #: The most events one request may carry (the engine sends fewer when fewer wait).
    max_batch: ClassVar[int] = 1

    @abstractmethod
    def accept(self, request: Mapping[str, Any], scope: Scope) -> Accepted:
        """The stored form of ``request``, or :class:`SubscriptionRequestError`."""

    @abstractmethod
    def matches(self, spec: Mapping[str, Any], event: StreamEvent) -> bool:
        """Whether ``event`` belongs to a subscription with this ``spec``."""

    @abstractmethod
    def notification(self, state: SubscriptionState, events: Sequence[NumberedEvent]) -> Notification:
        """The request for ``events`` (consecutive numbers, in order, at least one)."""

    def handshake(self, state: SubscriptionState, at: datetime) -> Notification | None:
        return None

    def focus_wanted(self, spec: Mapping[str, Any]) -> bool:
        """Whether a subscription with this ``spec`` sends each event's focus resource as the
        record holds it at the event's version (read by the service, not by the kind)."""
        return False

    def ends_at(self, spec: Mapping[str, Any]) -> datetime | None:
        """When a subscription with this ``spec`` stops by itself (FHIR ``Subscription.end``):
        past it, nothing more is matched and the engine turns it ``off``. None: never."""
        return None

    def heartbeat(self, state: SubscriptionState, at: datetime) -> Notification | None:
        return None


KINDS: dict[str, SubscriptionKind] = {}


def register(kind: SubscriptionKind) -> SubscriptionKind:
    if kind.name in KINDS and type(KINDS[kind.name]) is not type(kind):
        msg = f"two subscription kinds are named {kind.name!r}"
        raise ValueError(msg)
    KINDS[kind.name] = kind
    return kind


def kind(name: str) -> SubscriptionKind:
    try:
        return KINDS[name]
    except KeyError:
        msg = f"{name!r} is not a subscription kind ({', '.join(KINDS)})"
        raise LookupError(msg) from None


# --------------------------------------------------------------------- helpers for kinds


def check_endpoint(value: Any, field_name: str = "endpoint", *, allow_http: bool = True) -> str:
    """An absolute http(s) URL without credentials in it."""
    if not isinstance(value, str) or not 1 <= len(value) <= 2000:
        raise SubscriptionRequestError(field_name, "give the receiver's absolute http(s) URL")
    parts = urlsplit(value)
    schemes = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in schemes or not parts.hostname:
        raise SubscriptionRequestError(field_name, f"give an absolute URL with scheme {' or '.join(schemes)}")
    if parts.username or parts.password:
        raise SubscriptionRequestError(field_name, "put no credentials in the URL; use a header")
    return value


def check_headers(value: Any, field_name: str = "headers") -> dict[str, str]:
    """Extra request headers: ``{name: value}``, printable ASCII, no reserved name."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > 20:
        raise SubscriptionRequestError(field_name, "give at most 20 headers as an object of strings")
    headers: dict[str, str] = {}
    for name, header in value.items():
        if not isinstance(name, str) or not _HEADER_NAME.match(name) or not isinstance(header, str) \
                or not _HEADER_VALUE.match(header):
            raise SubscriptionRequestError(field_name, "header names are letters, digits and '-'; values printable ASCII")
        if name.lower() in RESERVED_HEADERS or name.lower().startswith("ce-"):
            raise SubscriptionRequestError(field_name, "a header the delivery sets itself cannot be given")
        headers[name] = header
    return headers


def check_clients(value: Any, scope: Scope, field_name: str = "clients") -> tuple[str, ...]:
    """The clients a subscription covers: by default the token's; never one outside them."""
    if value is None:
        return scope.clients
    if not isinstance(value, list) or not value or len(value) > 1000 \
            or not all(isinstance(c, str) and 1 <= len(c) <= 200 for c in value):
        raise SubscriptionRequestError(field_name, "give a non-empty list of client ids")
    clients = tuple(dict.fromkeys(value))
    if not scope.all_clients and (ALL_CLIENTS in clients or not set(clients) <= set(scope.clients)):
        raise SubscriptionRequestError(field_name, "a subscription may cover only the clients of your token")
    return clients


def check_subject_filter(value: Any, field_name: str = "filter") -> str:
    """A NATS subject filter within ``care.>`` (``*`` one token, ``>`` the rest)."""
    if not isinstance(value, str) or not 1 <= len(value) <= 500:
        raise SubscriptionRequestError(field_name, f"give a subject filter within {ROOT}.> (docs/integration.md)")
    tokens = value.split(".")
    if tokens[0] != ROOT:
        raise SubscriptionRequestError(field_name, f"a filter starts with '{ROOT}.'")
    for i, token in enumerate(tokens[1:], start=1):
        last = i == len(tokens) - 1
        if (token == ">" and last) or token == "*":
            continue
        if not _SUBJECT_TOKEN.match(token):
            raise SubscriptionRequestError(field_name, "tokens are letters, digits, '_' or '-', '*', or a final '>'")
    if len(tokens) == 1:
        raise SubscriptionRequestError(field_name, f"a filter names more than '{ROOT}'")
    return value


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` matches one token, a final ``>`` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(have) == len(want)


# --------------------------------------------------------------------- the CloudEvents webhook kind


class CloudEventsWebhook(SubscriptionKind):
    """Each matched event as one CloudEvent over HTTP in binary mode: the ``ce-*``
    attributes as headers, the contract JSON, byte for byte as published, as the body.

    Request: ``{"endpoint": URL, "filter": "care.clinical.>" | "filters": [...],
    "headers": {...}, "clients": [...]}``.
    """

    name = "webhook"
    max_batch = 1

    def accept(self, request: Mapping[str, Any], scope: Scope) -> Accepted:
        unknown = set(request) - {"endpoint", "filter", "filters", "headers", "clients"}
        if unknown:
            raise SubscriptionRequestError("body", "a webhook subscription has only endpoint, filter or filters, headers, clients")
        if ("filter" in request) == ("filters" in request):
            raise SubscriptionRequestError("filter", "give one subject filter ('filter') or a list ('filters')")
        if "filter" in request:
            filters = [check_subject_filter(request["filter"])]
        else:
            raw = request["filters"]
            if not isinstance(raw, list) or not 1 <= len(raw) <= 20:
                raise SubscriptionRequestError("filters", "give 1 to 20 subject filters")
            filters = [check_subject_filter(f, "filters") for f in raw]
        return Accepted(
            endpoint=check_endpoint(request.get("endpoint")),
            clients=check_clients(request.get("clients"), scope),
            spec={"filters": list(dict.fromkeys(filters))},
            headers=check_headers(request.get("headers")),
        )

    def matches(self, spec: Mapping[str, Any], event: StreamEvent) -> bool:
        return any(subject_matches(pattern, event.subject) for pattern in spec["filters"])

    def notification(self, state: SubscriptionState, events: Sequence[NumberedEvent]) -> Notification:
        (numbered,) = events
        event = numbered.event
        return Notification(
            # the event's id: the same event to the same subscription is the same message
            message_id=event.event_id,
            body=event.body,
            content_type="application/json",
            headers={
                "ce-specversion": "1.0",
                "ce-id": event.event_id,
                "ce-source": f"urn:careplan:{event.source}",
                "ce-type": event.type,
                "ce-time": event.time,
                "ce-subject": event.aggregate_id,
                "ce-dataschema": event.dataschema,
                "ce-sequence": str(event.sequence),
                # the subscription's own numbering: a receiver detects a gap from it alone
                "ce-subscription": state.id,
                "ce-eventnumber": str(numbered.number),
            },
        )


WEBHOOK = register(CloudEventsWebhook())
