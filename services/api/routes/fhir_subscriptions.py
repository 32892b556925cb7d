"""FHIR R4 Backport Subscriptions (issue 14): ``POST /fhir/Subscription``, read, search by
status, ``DELETE`` (→ ``off``), ``$status`` and ``$events``, on the subscriptions service's
store (:mod:`services.subscriptions.service`). The kind itself is
:mod:`services.subscriptions.fhir.kind`; delivery is the service's engine."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Path, Query
from fastapi.responses import Response

from domain.base import Role
from services.api.auth import Principal
from services.api.problems import ApiProblem
from services.api.routes import param, signature
from services.api.routes.fhir import FHIR_JSON, fhir_response

#: Who may manage FHIR subscriptions: the systems that receive them, and supervisors.
SUBSCRIBERS = (Role.INTEGRATION, Role.SUPERVISOR)
STATUSES = ("requested", "active", "error", "off")
SECRET_EXTENSION = "http://careplan.local/fhir/StructureDefinition/subscription-signing-secret"


def include(router: APIRouter, api: Any, who: Any) -> None:
    from fhir.resources.R4B.operationoutcome import OperationOutcome
    from fhir.resources.R4B.subscription import Subscription

    from services.api import fhir
    from services.subscriptions.fhir.kind import FHIR_REST_HOOK, events_response, status_response
    from services.subscriptions.fhir.subscription import (
        CONTENTS,
        FhirSubscriptionRequest,
        parse_subscription,
        subscription_resource,
    )
    from services.subscriptions.fhir.topics import topic_at
    from services.subscriptions.kinds import Scope, SubscriptionRequestError
    from services.subscriptions.service import MAX_RANGE, SubscriptionNotFoundError

    service = api.subscriptions

    def scope_of(principal: Principal) -> Scope:
        return Scope(tuple(principal.clients))

    def subscription_for(principal: Principal, subscription_id: UUID) -> Any:
        api.require(principal, SUBSCRIBERS, "manage FHIR subscriptions")
        try:
            found = service.subscription(subscription_id, scope_of(principal))
        except SubscriptionNotFoundError:
            found = None
        if found is None or found.kind != FHIR_REST_HOOK.name:
            raise ApiProblem(404, "not-found", "Not found",
                             f"No FHIR Subscription {subscription_id} is recorded for your clients; check the id.")
        return found

    def resource_of(subscription: Any) -> Any:
        state = service.state(subscription)
        return subscription_resource(FhirSubscriptionRequest.from_spec(state.spec), subscription_id=state.id,
                                     status=state.status, error=state.error)

    def refused(error: SubscriptionRequestError) -> Response:
        """A FHIR client (HAPI, Medplum) reads an OperationOutcome naming the element."""
        outcome = OperationOutcome.model_validate({"resourceType": "OperationOutcome", "issue": [{
            "severity": "error", "code": "invalid", "diagnostics": str(error), "expression": [error.field]}]})
        return Response(outcome.model_dump_json(exclude_none=True), status_code=422, media_type=FHIR_JSON)

    def create(body: Any, principal: Principal) -> Response:
        api.require(principal, SUBSCRIBERS, "create FHIR subscriptions")
        try:
            requested = parse_subscription(body)
        except SubscriptionRequestError as error:
            return refused(error)
        for client_id in requested.client_ids:
            api.require_client(principal, client_id)
        try:
            made = service.subscribe(FHIR_REST_HOOK.name, body, scope_of(principal), principal.actor)
        except SubscriptionRequestError as error:
            return refused(error)
        service.wake_background()
        shown = resource_of(made.subscription).model_dump(mode="json", exclude_none=True)
        # the signing secret (Standard Webhooks), shown in this answer only
        shown["extension"] = [{"url": SECRET_EXTENSION, "valueString": made.secret}]
        return Response(Subscription.model_validate(shown).model_dump_json(exclude_none=True),
                        status_code=201, media_type=FHIR_JSON,
                        headers={"Location": f"/fhir/Subscription/{made.subscription.id}"})

    def read(fhir_subscription_id: UUID, principal: Principal) -> Response:
        return fhir_response(resource_of(subscription_for(principal, fhir_subscription_id)))

    def delete(fhir_subscription_id: UUID, principal: Principal) -> Response:
        found = subscription_for(principal, fhir_subscription_id)
        return fhir_response(resource_of(service.delete(found.id, scope_of(principal), principal.actor)))

    def search(principal: Principal, status: str | None = None) -> Response:
        api.require(principal, SUBSCRIBERS, "read FHIR subscriptions")
        if status is not None and status not in STATUSES:
            raise ApiProblem(422, "invalid-value", "Invalid value", f"status is one of {', '.join(STATUSES)}.")
        shown = [resource_of(s) for s in service.visible(scope_of(principal)) if s.kind == FHIR_REST_HOOK.name]
        return fhir_response(fhir.searchset([s for s in shown if status is None or s.status == status]))

    def status_operation(fhir_subscription_id: UUID, principal: Principal) -> Response:
        found = subscription_for(principal, fhir_subscription_id)
        return fhir_response(status_response(service.state(found)))

    def events_operation(fhir_subscription_id: UUID, principal: Principal, eventsSinceNumber: int | None = None,
                         eventsUntilNumber: int | None = None, content: str | None = None) -> Response:
        found = subscription_for(principal, fhir_subscription_id)
        state = service.state(found)
        first = eventsSinceNumber or 1
        last = eventsUntilNumber if eventsUntilNumber is not None else state.events_since_start
        if last < first:
            raise ApiProblem(422, "invalid-value", "Invalid value", "eventsUntilNumber is not before eventsSinceNumber.")
        if content is not None and (content not in CONTENTS or (
                content == "full-resource" and not topic_at(state.spec["topic"]).full_resource)):
            raise ApiProblem(422, "invalid-value", "Invalid value",
                             "content is empty, id-only, or full-resource where the topic offers it.")
        # at most MAX_RANGE events in one answer: ask again from the next number for more
        events = service.numbered_events(found.id, first - 1, min(last, first - 1 + MAX_RANGE))
        events = service.with_focus(found.kind, {**state.spec, "content": content or state.spec["content"]}, events)
        return fhir_response(events_response(state, events, content=content, at=datetime.now(UTC)))

    subscription_id = Annotated[UUID, Path(description="The subscription's id")]
    signature(create, [param("body", Annotated[dict[str, Any], Body(description="A backport-profile Subscription")]),
                       param("principal", who)])
    router.post("/fhir/Subscription", tags=["fhir"], name="fhirSubscriptionCreate", response_class=Response,
                status_code=201, summary="Subscribe to a topic (FHIR R4 Backport Subscription)")(create)
    signature(search, [param("principal", who),
                       param("status", Annotated[str | None, Query(description="requested, active, error or off")], None)])
    router.get("/fhir/Subscription", tags=["fhir"], name="fhirSubscriptionSearch", response_class=Response,
               summary="Your FHIR subscriptions, optionally by status")(search)
    for path, endpoint, method, name, summary in (
        ("/fhir/Subscription/{fhir_subscription_id}", read, "get", "fhirSubscription", "One FHIR subscription"),
        ("/fhir/Subscription/{fhir_subscription_id}", delete, "delete", "fhirSubscriptionDelete",
         "End a FHIR subscription (status off)"),
        ("/fhir/Subscription/{fhir_subscription_id}/$status", status_operation, "get", "fhirSubscriptionStatus",
         "The subscription's status ($status)"),
    ):
        signature(endpoint, [param("fhir_subscription_id", subscription_id), param("principal", who)])
        getattr(router, method)(path, tags=["fhir"], name=name, response_class=Response, summary=summary)(endpoint)
    signature(events_operation, [
        param("fhir_subscription_id", subscription_id), param("principal", who),
        param("eventsSinceNumber", Annotated[int | None, Query(ge=1, description="The first event number (inclusive)")],
              None),
        param("eventsUntilNumber", Annotated[int | None, Query(ge=1, description="The last event number (inclusive)")],
              None),
        param("content", Annotated[str | None, Query(description="empty, id-only or full-resource")], None),
    ])
    router.get("/fhir/Subscription/{fhir_subscription_id}/$events", tags=["fhir"], name="fhirSubscriptionEvents",
               response_class=Response, summary="Events of a range since the start ($events)")(events_operation)

