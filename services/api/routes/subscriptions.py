"""CloudEvents webhook subscriptions (issue 14): integration engines and supervisors
subscribe an HTTPS endpoint to a subject filter, within their token's clients; the
signing secret is shown once (when made, and when rotated). Another client's
subscription answers as a missing one."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from domain.base import Role
from domain.subscriptions.subscription import Subscription
from services.api.auth import Principal
from services.api.dependencies import Api
from services.api.problems import ApiProblem
from services.api.routes import param, signature
from services.shared.errors import AggregateMissingError
from services.subscriptions.kinds import WEBHOOK, Scope, SubscriptionRequestError
from services.subscriptions.service import MAX_RANGE, SubscriptionNotFoundError

SUBSCRIBERS = (Role.INTEGRATION, Role.SUPERVISOR)


class WebhookSubscriptionRequest(BaseModel):
    """``POST /subscriptions``: where to send, which subjects, for which clients."""

    model_config = ConfigDict(extra="forbid")
    endpoint: str = Field(max_length=2000, description="The receiver's absolute http(s) URL.")
    filter: str | None = Field(default=None, max_length=500, description=(
        "A NATS subject filter within care.> (docs/integration.md), e.g. care.clinical.v1.care_plan.*.strategy_changed."))
    filters: list[str] | None = Field(default=None, max_length=20, description="Several filters instead of one.")
    headers: dict[str, str] | None = Field(default=None, description="Extra headers sent with every request.")
    clients: list[str] | None = Field(default=None, max_length=1000, description=(
        "The clients whose events it receives; by default the token's. Never beyond them."))


class Resend(BaseModel):
    model_config = ConfigDict(extra="forbid")
    from_number: int = Field(ge=1, le=2**62, description="Deliver again from this event number of the subscription.")
    reason: str | None = Field(default=None, max_length=4000)


def include(router: APIRouter, api: Api, who: Any) -> None:
    def scope(principal: Principal) -> Scope:
        api.require(principal, SUBSCRIBERS, "manage subscriptions")
        return Scope(tuple(principal.clients))

    def found(principal: Principal, subscription_id: UUID) -> Subscription:
        try:
            return api.subscriptions.subscription(subscription_id, scope(principal))  # type: ignore[no-any-return]
        except SubscriptionNotFoundError as e:
            raise AggregateMissingError(str(e)) from None

    def shown(subscription: Subscription, status: int = 200, secret: str | None = None) -> JSONResponse:
        body = api.subscriptions.summary(subscription, api.subscriptions.clock())
        if secret is not None:
            body["secret"] = secret  # shown this once: it is derived, never stored
        return JSONResponse(body, status_code=status, headers={"Location": f"/subscriptions/{subscription.id}"})

    def create(principal: Principal, request: WebhookSubscriptionRequest) -> JSONResponse:
        """A new CloudEvents webhook subscription; its signing secret is in the answer, only there."""
        asked = scope(principal)
        if request.clients is not None and not asked.all_clients \
                and not set(request.clients) <= set(asked.clients):
            raise ApiProblem(403, "forbidden", "Forbidden",
                             f"{principal.actor_id} may subscribe only to the events of the token's clients.")
        try:
            made = api.subscriptions.subscribe(WEBHOOK.name, request.model_dump(exclude_none=True), asked,
                                               principal.actor)
        except SubscriptionRequestError as e:
            raise ApiProblem(422, "invalid-subscription", "Invalid subscription", str(e)) from None
        return shown(made.subscription, 201, made.secret)

    signature(create, [param("principal", who), param("request", Annotated[WebhookSubscriptionRequest, Body()])])
    router.post("/subscriptions", tags=["subscriptions"], summary="Subscribe a webhook", status_code=201,
                name="createSubscription")(create)

    def listed(principal: Principal) -> JSONResponse:
        """The subscriptions within the token's clients, with their delivery state."""
        now = api.subscriptions.clock()
        return JSONResponse([api.subscriptions.summary(s, now) for s in api.subscriptions.visible(scope(principal))])

    signature(listed, [param("principal", who)])
    router.get("/subscriptions", tags=["subscriptions"], summary="Subscriptions", name="listSubscriptions")(listed)

    def read(principal: Principal, subscription_id: UUID) -> JSONResponse:
        return shown(found(principal, subscription_id))

    signature(read, [param("principal", who), param("subscription_id", UUID)])
    router.get("/subscriptions/{subscription_id}", tags=["subscriptions"], summary="A subscription",
               name="readSubscription")(read)

    def retrying(action: Any) -> Any:
        """The delivery engine never writes the subscription itself, but another API process may."""
        for attempt in (1, 2):
            try:
                return action()
            except IntegrityError:
                if attempt == 2:
                    raise
        return None

    def delete(principal: Principal, subscription_id: UUID) -> JSONResponse:
        """The subscription goes ``off``: nothing more is sent; its history stays."""
        found(principal, subscription_id)
        subscription = retrying(lambda: api.subscriptions.delete(subscription_id, scope(principal), principal.actor))
        return shown(subscription)

    signature(delete, [param("principal", who), param("subscription_id", UUID)])
    router.delete("/subscriptions/{subscription_id}", tags=["subscriptions"], summary="Delete (off)",
                  name="deleteSubscription")(delete)

    def rotate(principal: Principal, subscription_id: UUID) -> JSONResponse:
        """A new signing secret, shown once; the previous one also signs during the grace period."""
        found(principal, subscription_id)
        made = retrying(lambda: api.subscriptions.rotate_secret(subscription_id, scope(principal), principal.actor))
        return shown(made.subscription, secret=made.secret)

    signature(rotate, [param("principal", who), param("subscription_id", UUID)])
    router.post("/subscriptions/{subscription_id}/rotate-secret", tags=["subscriptions"], summary="Rotate the secret",
                name="rotateSubscriptionSecret")(rotate)

    def resend(principal: Principal, subscription_id: UUID, request: Resend) -> JSONResponse:
        """Deliver again from an event number (and leave ``error``)."""
        found(principal, subscription_id)
        subscription = retrying(lambda: api.subscriptions.request_resend(
            subscription_id, request.from_number, scope(principal), principal.actor, request.reason))
        return shown(subscription, 202)

    signature(resend, [param("principal", who), param("subscription_id", UUID),
                       param("request", Annotated[Resend, Body()])])
    router.post("/subscriptions/{subscription_id}/resend", tags=["subscriptions"], summary="Resend from a number",
                status_code=202, name="resendSubscription")(resend)

    def events(principal: Principal, subscription_id: UUID, since: int, until: int | None) -> JSONResponse:
        """The subscription's events ``since + 1`` .. ``until`` (at most 1000), as numbered when
        they matched: what a receiver that saw a gap fetches."""
        found(principal, subscription_id)
        numbered = api.subscriptions.numbered_events(subscription_id, since, until)
        return JSONResponse([{
            "number": n.number, "id": n.event.event_id, "type": n.event.type, "source": f"urn:careplan:{n.event.source}",
            "subject": n.event.aggregate_id, "time": n.event.time, "data": n.event.body.decode(),
        } for n in numbered])

    signature(events, [
        param("principal", who), param("subscription_id", UUID),
        param("since", Annotated[int, Query(ge=0, le=2**62, description="The last number already received.")], 0),
        param("until", Annotated[int | None, Query(ge=1, le=2**62, description=(
            f"The last number wanted (at most {MAX_RANGE} after since)."))], None),
    ])
    router.get("/subscriptions/{subscription_id}/events", tags=["subscriptions"], summary="Events by number",
               name="subscriptionEvents")(events)
