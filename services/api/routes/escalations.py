"""Crises the escalation service holds open: clinicians see their clients', supervisors
acknowledge and resolve them — their clients' only (another client's crisis is a 404)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from domain.base import Role
from domain.escalation.crisis import Crisis
from services.api.auth import Principal
from services.api.dependencies import CLINICAL, Api, etag
from services.api.routes import param, signature
from services.escalation.commands import AcknowledgeEscalation, CrisisCommand, ResolveCrisis
from services.shared.commands import CommandMeta
from services.shared.errors import AggregateMissingError, ConcurrencyConflictError


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=4000)


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: str = Field(min_length=1, max_length=4000)
    reason: str | None = Field(default=None, max_length=4000)


def include(router: APIRouter, api: Api, who: Any) -> None:
    def crises(principal: Principal, status: str | None, page: int, limit: int) -> JSONResponse:
        """Open crises of the token's clients, oldest first, a page at a time: the ids and
        clients come from the escalation application's view of its log, and only the page's
        crises are loaded (issue 13)."""
        api.require(principal, CLINICAL, "list crises")
        ids = [cid for cid, client in api.escalation.open_crisis_ids().items() if principal.may_act_for(client)]
        if status is not None:  # escalating or acknowledged: a filter of the open ones, each loaded
            ids = [c.id for c in api.escalation.open_crises(ids) if c.status.value == status]
        shown = api.escalation.open_crises(ids[(page - 1) * limit:page * limit])
        headers = {"X-Total-Count": str(len(ids))}
        if page * limit < len(ids):
            query = f"page={page + 1}&limit={limit}" + (f"&status={status}" if status else "")
            headers["Link"] = f'</escalations?{query}>; rel="next"'
        return JSONResponse([crisis.model_dump(mode="json") for crisis in shown], headers=headers)

    signature(crises, [
        param("principal", who),
        param("status", Annotated[str | None, Query(pattern="^(escalating|acknowledged)$", description=(
            "Only open crises in this state; resolved crises are not listed (read them by id or in the audit)."))],
              None),
        param("page", Annotated[int, Query(ge=1, le=1_000_000, description="Page, from 1.")], 1),
        param("limit", Annotated[int, Query(ge=1, le=500, description="Crises per page.")], 100),
    ])
    router.get("/escalations", tags=["escalations"], summary="Open crises", name="openCrises")(crises)

    def in_scope(principal: Principal, crisis_id: UUID) -> Crisis:
        """The crisis, if the token's clients include its client; otherwise the same 404 as
        for no crisis at all (crisis ids can be derived, so existence is not revealed). A
        crisis whose client is unknown (a fail-safe one) is for all-clients tokens only."""
        crisis: Crisis | None = api.escalation.find(Crisis, crisis_id)
        if crisis is None or not principal.may_act_for(crisis.client_id):
            raise AggregateMissingError(f"No Crisis {crisis_id} is recorded; check the id.")
        return crisis

    def decide(principal: Principal, command: CrisisCommand) -> JSONResponse:
        """Runs a person's decision on a crisis. The escalation service's timer may write the
        crisis between this load and save (a timeout to the next level): the decision is then
        taken once more on the crisis as it now is; a second conflict answers 409."""
        in_scope(principal, command.crisis_id)
        for attempt in (1, 2):
            try:
                api.escalation.handle(command, CommandMeta(actor=principal.actor))
                break
            except (ConcurrencyConflictError, IntegrityError) as error:
                if attempt == 2:
                    raise ConcurrencyConflictError(
                        f"Crisis {command.crisis_id} was changed by another writer (the escalation timer or another "
                        "person) while this decision was recorded; read it again and retry. Nothing was written."
                    ) from error
        crisis = api.escalation.find(Crisis, command.crisis_id)
        return JSONResponse(crisis.model_dump(mode="json"), headers={"ETag": etag(crisis.version)})

    def acknowledge(crisis_id: UUID, body: Acknowledgement, principal: Principal) -> JSONResponse:
        api.require(principal, (Role.SUPERVISOR,), "acknowledge an escalation")
        return decide(principal, AcknowledgeEscalation(crisis_id=crisis_id, reason=body.reason))

    signature(acknowledge, [param("crisis_id", UUID), param("body", Annotated[Acknowledgement, Body()]),
                            param("principal", who)])
    router.post("/escalations/{crisis_id}/acknowledge", tags=["escalations"], summary="Acknowledge a crisis",
                name="acknowledgeCrisis")(acknowledge)

    def resolve(crisis_id: UUID, body: Resolution, principal: Principal) -> JSONResponse:
        api.require(principal, (Role.SUPERVISOR,), "resolve an escalation")
        return decide(principal, ResolveCrisis(crisis_id=crisis_id, outcome=body.outcome, reason=body.reason))

    signature(resolve, [param("crisis_id", UUID), param("body", Annotated[Resolution, Body()]),
                        param("principal", who)])
    router.post("/escalations/{crisis_id}/resolve", tags=["escalations"], summary="Resolve a crisis",
                name="resolveCrisis")(resolve)
