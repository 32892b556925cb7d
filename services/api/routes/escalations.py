"""Crises the escalation service holds open: clinicians see their clients', supervisors
acknowledge and resolve them."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from domain.base import Role
from domain.escalation.crisis import Crisis
from services.api.auth import Principal
from services.api.dependencies import CLINICAL, Api, etag
from services.api.routes import param, signature
from services.escalation.commands import AcknowledgeEscalation, ResolveCrisis
from services.shared.commands import CommandMeta


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=4000)


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: str = Field(min_length=1, max_length=4000)
    reason: str | None = Field(default=None, max_length=4000)


def include(router: APIRouter, api: Api, who: Any) -> None:
    def crises(principal: Principal) -> list[dict[str, Any]]:
        api.require(principal, CLINICAL, "list crises")
        return [
            crisis.model_dump(mode="json") for crisis in api.escalation.open_crises()
            if principal.may_act_for(crisis.client_id)
        ]

    signature(crises, [param("principal", who)])
    router.get("/escalations", tags=["escalations"], summary="Open crises", name="openCrises")(crises)

    def acknowledge(crisis_id: UUID, body: Acknowledgement, principal: Principal) -> JSONResponse:
        api.require(principal, (Role.SUPERVISOR,), "acknowledge an escalation")
        api.escalation.handle(AcknowledgeEscalation(crisis_id=crisis_id, reason=body.reason),
                              CommandMeta(actor=principal.actor))
        crisis = api.escalation.find(Crisis, crisis_id)
        return JSONResponse(crisis.model_dump(mode="json"), headers={"ETag": etag(crisis.version)})

    signature(acknowledge, [param("crisis_id", UUID), param("body", Annotated[Acknowledgement, Body()]),
                            param("principal", who)])
    router.post("/escalations/{crisis_id}/acknowledge", tags=["escalations"], summary="Acknowledge a crisis",
                name="acknowledgeCrisis")(acknowledge)

    def resolve(crisis_id: UUID, body: Resolution, principal: Principal) -> JSONResponse:
        api.require(principal, (Role.SUPERVISOR,), "resolve an escalation")
        api.escalation.handle(ResolveCrisis(crisis_id=crisis_id, outcome=body.outcome, reason=body.reason),
                              CommandMeta(actor=principal.actor))
        crisis = api.escalation.find(Crisis, crisis_id)
        return JSONResponse(crisis.model_dump(mode="json"), headers={"ETag": etag(crisis.version)})

    signature(resolve, [param("crisis_id", UUID), param("body", Annotated[Resolution, Body()]),
                        param("principal", who)])
    router.post("/escalations/{crisis_id}/resolve", tags=["escalations"], summary="Resolve a crisis",
                name="resolveCrisis")(resolve)
