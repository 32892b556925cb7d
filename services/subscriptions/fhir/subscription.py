"""A backport-profile ``Subscription`` (R4/R4B) read into its stored form, and back.

The IG's profile, element by element: ``criteria`` is the topic's canonical URL with
``backport-filter-criteria`` extensions (``CarePlan?patient=Patient/x``) on ``_criteria``;
``channel.type`` ``rest-hook``; ``channel.endpoint``; ``channel.header`` (``Name: value``,
sent as HTTP headers); ``channel.payload`` a FHIR JSON MIME type with the
``backport-payload-content`` code on ``_payload``; ``backport-heartbeat-period``,
``backport-timeout`` and ``backport-max-count`` on ``channel``. Anything else is refused
with the element that is wrong, before anything is stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import parse_qsl
from uuid import UUID

from fhir.resources.R4B.subscription import Subscription
from pydantic import ValidationError

from services.subscriptions.fhir.topics import Topic, UnknownTopicError, topic_at
from services.subscriptions.kinds import SubscriptionRequestError, check_endpoint, check_headers

IG = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
PROFILE = IG + "backport-subscription"
FILTER_CRITERIA = IG + "backport-filter-criteria"
PAYLOAD_CONTENT = IG + "backport-payload-content"
HEARTBEAT_PERIOD = IG + "backport-heartbeat-period"
TIMEOUT = IG + "backport-timeout"
MAX_COUNT = IG + "backport-max-count"

Content = Literal["empty", "id-only", "full-resource"]
CONTENTS: tuple[str, ...] = ("empty", "id-only", "full-resource")
PAYLOAD_TYPES = ("application/fhir+json", "application/json")
#: Bounds on what a subscriber may ask: a heartbeat at most every 10 s (a shorter one is
#: load, not liveness) and at least daily; a delivery timeout of 1–120 s.
HEARTBEAT_SECONDS = (10, 86_400)
TIMEOUT_SECONDS = (1, 120)
MAX_COUNT_LIMIT = 100
DEFAULT_TIMEOUT_SECONDS = 30
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}\Z")


@dataclass(frozen=True)
class FhirSubscriptionRequest:
    """What a Subscription asks for, as stored (no FHIR objects, only values)."""

    topic_url: str
    filters: tuple[tuple[str, str], ...]
    endpoint: str
    headers: tuple[tuple[str, str], ...]
    content: Content
    payload_type: str
    heartbeat_seconds: int | None
    timeout_seconds: int
    max_count: int | None
    end: datetime | None
    reason: str

    def spec(self) -> dict[str, Any]:
        """The JSON-able form the subscriptions service stores (header values are kept
        apart, with the delivery's headers: the spec names them only)."""
        return {"topic": self.topic_url, "filters": [list(f) for f in self.filters], "content": self.content,
                "payload_type": self.payload_type, "heartbeat_seconds": self.heartbeat_seconds,
                "timeout_seconds": self.timeout_seconds, "max_count": self.max_count,
                "end": self.end.isoformat() if self.end else None, "reason": self.reason,
                "header_names": [name for name, _ in self.headers], "endpoint": self.endpoint}

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> FhirSubscriptionRequest:
        return cls(topic_url=spec["topic"], filters=tuple((k, v) for k, v in spec["filters"]), endpoint=spec["endpoint"],
                   headers=tuple((name, "") for name in spec["header_names"]), content=spec["content"],
                   payload_type=spec["payload_type"], heartbeat_seconds=spec["heartbeat_seconds"],
                   timeout_seconds=spec["timeout_seconds"], max_count=spec["max_count"],
                   end=datetime.fromisoformat(spec["end"]) if spec["end"] else None, reason=spec["reason"])

    @property
    def topic(self) -> Topic:
        return topic_at(self.topic_url)

    @property
    def client_ids(self) -> frozenset[str]:
        """The clients the filters confine it to (empty: every client)."""
        return frozenset(value for key, value in self.filters if key == "patient")


def _extension(extensions: list[dict[str, Any]] | None, url: str, value: str, element: str) -> Any:
    found = [e for e in extensions or [] if e.get("url") == url]
    if len(found) > 1:
        raise SubscriptionRequestError(element, f"{url} may appear once")
    return found[0].get(value) if found else None


def _bounded(value: Any, bounds: tuple[int, int], what: str) -> int | None:
    if value is None:
        return None
    low, high = bounds
    if not low <= value <= high:
        raise SubscriptionRequestError("Subscription.channel.extension", f"the {what} must be {low} to {high} seconds")
    return int(value)


def _filters(topic: Topic, criteria: list[str]) -> tuple[tuple[str, str], ...]:
    filters: list[tuple[str, str]] = []
    for text in criteria:
        resource, _, query = text.partition("?")
        element = "Subscription.criteria.extension"
        if resource != topic.resource or not query:
            raise SubscriptionRequestError(
                element, f"filter criteria for {topic.url} are written {topic.resource}?<filter>=<value>")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise SubscriptionRequestError(element, f"write filters as {topic.resource}?<filter>=<value>") from None
        for key, raw in pairs:
            allowed = topic.filter_named(key)
            if allowed is None:
                offered = ", ".join(f.key for f in topic.filters)
                raise SubscriptionRequestError(element, f"{topic.url} can be filtered by {offered} only")
            value = raw.removeprefix(f"{allowed.reference_type}/") if allowed.reference_type else raw
            if not _FHIR_ID.match(value):
                raise SubscriptionRequestError(element, f"the {key} filter's value is not a resource id")
            if key != "patient":
                try:
                    value = str(UUID(value))
                except ValueError:
                    raise SubscriptionRequestError(element, f"the {key} filter's value is not a careplan id") from None
            if any(k == key and v != value for k, v in filters):
                # filters are a logical AND: two values of one key would match nothing
                raise SubscriptionRequestError(element, f"give one value for the {key} filter")
            filters.append((key, value))
    return tuple(dict.fromkeys(filters))


def _headers(lines: Any) -> dict[str, str]:
    """``channel.header`` lines (``Name: value``) as the request headers they become."""
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise SubscriptionRequestError("Subscription.channel.header", "write each header as 'Name: value'")
        headers[name.strip()] = value.strip()
    return check_headers(headers, "Subscription.channel.header")


def parse_subscription(body: Any) -> FhirSubscriptionRequest:
    """Read a backport-profile Subscription; :class:`SubscriptionRequestError` says what is wrong."""
    if not isinstance(body, dict) or body.get("resourceType") != "Subscription":
        raise SubscriptionRequestError("Subscription", "the body must be a FHIR Subscription resource")
    try:
        Subscription.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int))
        raise SubscriptionRequestError(f"Subscription.{where}", f"not a valid Subscription: {first['msg']}") from None
    if body.get("status") not in ("requested", "active"):
        raise SubscriptionRequestError("Subscription.status", "a new Subscription is 'requested'")
    try:
        topic = topic_at(body.get("criteria", ""))
    except UnknownTopicError:
        raise SubscriptionRequestError("Subscription.criteria",
                                       "name a topic of this server (GET /fhir/SubscriptionTopic lists them)") from None
    criteria_ext = (body.get("_criteria") or {}).get("extension") or []
    unknown = {e.get("url") for e in criteria_ext} - {FILTER_CRITERIA}
    if unknown:
        raise SubscriptionRequestError("Subscription.criteria.extension", f"the only extension here is {FILTER_CRITERIA}")
    filters = _filters(topic, [e.get("valueString") or "" for e in criteria_ext])

    channel = body["channel"]
    if channel.get("type") != "rest-hook":
        raise SubscriptionRequestError("Subscription.channel.type", "only the rest-hook channel is offered")
    payload_type = channel.get("payload")
    if payload_type not in PAYLOAD_TYPES:
        raise SubscriptionRequestError("Subscription.channel.payload",
                                        f"channel.payload must be one of {', '.join(PAYLOAD_TYPES)}")
    content = _extension((channel.get("_payload") or {}).get("extension"), PAYLOAD_CONTENT, "valueCode",
                         "Subscription.channel.payload.extension")
    if content not in CONTENTS:
        raise SubscriptionRequestError("Subscription.channel.payload.extension",
                                        f"{PAYLOAD_CONTENT} must be one of {', '.join(CONTENTS)}")
    extensions = channel.get("extension")
    heartbeat = _bounded(_extension(extensions, HEARTBEAT_PERIOD, "valueUnsignedInt", "Subscription.channel.extension"),
                         HEARTBEAT_SECONDS, "heartbeat period")
    timeout = _bounded(_extension(extensions, TIMEOUT, "valueUnsignedInt", "Subscription.channel.extension"),
                       TIMEOUT_SECONDS, "timeout")
    max_count = _extension(extensions, MAX_COUNT, "valuePositiveInt", "Subscription.channel.extension")
    if max_count is not None and not 1 <= max_count <= MAX_COUNT_LIMIT:
        raise SubscriptionRequestError("Subscription.channel.extension", f"max count must be 1 to {MAX_COUNT_LIMIT}")
    end = Subscription.model_validate(body).end
    return FhirSubscriptionRequest(
        topic_url=topic.url, filters=filters,
        endpoint=check_endpoint(channel.get("endpoint"), "Subscription.channel.endpoint"),
        headers=tuple(_headers(channel.get("header") or []).items()), content=content, payload_type=payload_type,
        heartbeat_seconds=heartbeat, timeout_seconds=timeout or DEFAULT_TIMEOUT_SECONDS, max_count=max_count,
        end=end, reason=body["reason"])


def subscription_resource(request: FhirSubscriptionRequest, *, subscription_id: str, status: str,
                          error: str | None = None) -> Subscription:
    """The stored subscription as the backport-profile resource a read returns. Header
    values are not shown again (they usually carry the receiver's credentials)."""
    topic = request.topic
    criteria = [f"{topic.resource}?{key}={topic.filter_named(key).written(value)}"  # type: ignore[union-attr]
                for key, value in request.filters]
    channel: dict[str, Any] = {
        "type": "rest-hook",
        "endpoint": request.endpoint,
        "payload": request.payload_type,
        "_payload": {"extension": [{"url": PAYLOAD_CONTENT, "valueCode": request.content}]},
        "extension": [
            *([{"url": HEARTBEAT_PERIOD, "valueUnsignedInt": request.heartbeat_seconds}]
              if request.heartbeat_seconds else []),
            {"url": TIMEOUT, "valueUnsignedInt": request.timeout_seconds},
            *([{"url": MAX_COUNT, "valuePositiveInt": request.max_count}] if request.max_count else []),
        ],
        **({"header": [f"{name}: ***" for name, _ in request.headers]} if request.headers else {}),
    }
    return Subscription.model_validate({
        "resourceType": "Subscription",
        "id": subscription_id,
        "meta": {"profile": [PROFILE]},
        "status": status,
        "reason": request.reason,
        "criteria": request.topic_url,
        **({"_criteria": {"extension": [{"url": FILTER_CRITERIA, "valueString": c} for c in criteria]}}
           if criteria else {}),
        **({"end": request.end.isoformat()} if request.end else {}),
        **({"error": error} if error else {}),
        "channel": channel,
    })
