"""A client's rights over their records (issue 16), for supervisors: legal holds and
four-eyes erasure (services.privacy.erasure). The client must be among the token's clients.

- ``POST /clients/{client_id}/hold`` / ``/release`` ``{"reason"}``
- ``POST /clients/{client_id}/erasure`` ``{"reason"}`` → 202 with the request's id
- ``POST /clients/{client_id}/erasure/{request_id}/confirm`` → 200 with what was erased
  (by a supervisor other than the one who asked, within ``CAREPLAN_ERASURE_CONFIRM_HOURS``)

Refusals are problems that change nothing: 409 ``legal-hold``, ``open-crisis``,
``erasure-request``; 403 ``four-eyes``, ``not-authorised``."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from domain.base import Role
from services.api.auth import Principal
from services.api.dependencies import Api
from services.api.routes import param, signature

ClientId = Annotated[str, Field(min_length=1, max_length=200)]


class Reasoned(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=4000)


def include(router: APIRouter, api: Api, who: Any) -> None:
    from services.privacy import erasure

    def allowed(principal: Principal, client_id: str, what: str) -> None:
        api.require(principal, (Role.SUPERVISOR,), what)
        api.require_client(principal, client_id)

    def hold(client_id: str, body: Reasoned, principal: Principal) -> JSONResponse:
        allowed(principal, client_id, "set a legal hold")
        events = erasure.set_hold(api.care, client_id, reason=body.reason, actor=principal.actor)
        return JSONResponse({"client_id": client_id, "held": True, "event_ids": [str(e) for e in events]})

    def release(client_id: str, body: Reasoned, principal: Principal) -> JSONResponse:
        allowed(principal, client_id, "release a legal hold")
        events = erasure.release_hold(api.care, client_id, reason=body.reason, actor=principal.actor)
        return JSONResponse({"client_id": client_id, "held": False, "event_ids": [str(e) for e in events]})

    def request(client_id: str, body: Reasoned, principal: Principal) -> JSONResponse:
        allowed(principal, client_id, "ask for an erasure")
        outcome = erasure.request_erasure(api.care, client_id, reason=body.reason, actor=principal.actor)
        return JSONResponse({"client_id": client_id, "request_id": str(outcome.request_id), "erased": False,
                             "event_ids": [str(e) for e in outcome.event_ids]}, status_code=202)

    def confirm(client_id: str, request_id: UUID, principal: Principal) -> JSONResponse:
        allowed(principal, client_id, "confirm an erasure")
        outcome = erasure.confirm_erasure(api.care, client_id, request_id, actor=principal.actor)
        api.forget_client(client_id)
        return JSONResponse({"client_id": client_id, **asdict(outcome), "request_id": str(outcome.request_id),
                             "aggregate_ids": [str(a) for a in outcome.aggregate_ids],
                             "event_ids": [str(e) for e in outcome.event_ids]})

    for handler, path, summary, name, has_body in (
        (hold, "/clients/{client_id}/hold", "Set a legal hold on a client's records", "setLegalHold", True),
        (release, "/clients/{client_id}/release", "Release a legal hold", "releaseLegalHold", True),
        (request, "/clients/{client_id}/erasure", "Ask for a client's erasure (four eyes)", "requestErasure", True),
        (confirm, "/clients/{client_id}/erasure/{request_id}/confirm", "Confirm an erasure (a second supervisor)",
         "confirmErasure", False),
    ):
        params = [param("client_id", ClientId)]
        if name == "confirmErasure":
            params.append(param("request_id", UUID))
        if has_body:
            params.append(param("body", Annotated[Reasoned, Body()]))
        params.append(param("principal", who))
        signature(handler, params)
        router.post(path, tags=["clients"], summary=summary, name=name)(handler)
