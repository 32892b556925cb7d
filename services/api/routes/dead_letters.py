"""Supervisors see every service's dead letters (ids, kinds, error classes: no content)
and ask for them to be decided again — their clients' only; one whose client is unknown is
for all-clients tokens."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from domain.base import Role
from services.api.auth import Principal
from services.api.dependencies import Api
from services.api.routes import param, signature
from services.shared.errors import AggregateMissingError


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=4000, description="Why the message can be decided now.")


def include(router: APIRouter, api: Api, who: Any) -> None:
    """Only when the API has a dead-letter desk (``api.dead_letters``)."""
    from domain.operations.dead_letter import DeadLetterStatus
    from services.operations.dead_letters import summary

    def dead_letters(principal: Principal, status: DeadLetterStatus | None) -> list[dict[str, Any]]:
        api.require(principal, (Role.SUPERVISOR,), "read dead letters")
        return [summary(letter) for letter in api.dead_letters.list(status) if principal.may_act_for(letter.client_id)]

    signature(dead_letters, [param("principal", who),
                             param("status", Annotated[DeadLetterStatus | None, Query()], None)])
    router.get("/deadletters", tags=["dead letters"], summary="Messages a service could not decide",
               name="deadLetters")(dead_letters)

    def in_scope(principal: Principal, dead_letter_id: UUID) -> None:
        """Another client's dead letter (or one whose client is unknown, for a scoped token)
        is a 404, as if there were none."""
        _, letter = api.dead_letters.find(dead_letter_id)
        if not principal.may_act_for(letter.client_id):
            raise AggregateMissingError(f"No dead letter {dead_letter_id} is recorded in any store; "
                                        "`careplan deadletter list` shows them.")

    def dead_letter(dead_letter_id: UUID, principal: Principal) -> dict[str, Any]:
        api.require(principal, (Role.SUPERVISOR,), "read dead letters")
        in_scope(principal, dead_letter_id)
        letter, history = api.dead_letters.show(dead_letter_id)
        return summary(letter) | {"history": [
            {"at": e.timestamp.isoformat(), "actor": e.actor.id, "role": e.actor.role.value, "what": e.describe()}
            for e in history
        ]}

    signature(dead_letter, [param("dead_letter_id", UUID), param("principal", who)])
    router.get("/deadletters/{dead_letter_id}", tags=["dead letters"], summary="One dead letter and its redrives",
               name="deadLetter")(dead_letter)

    def redrive(dead_letter_id: UUID, body: RedriveRequest, principal: Principal) -> JSONResponse:
        api.require(principal, (Role.SUPERVISOR,), "redrive a dead letter")
        in_scope(principal, dead_letter_id)
        letter = api.dead_letters.request_redrive(dead_letter_id, actor=principal.actor, reason=body.reason)
        return JSONResponse(summary(letter), status_code=202)

    signature(redrive, [param("dead_letter_id", UUID), param("body", Annotated[RedriveRequest, Body()]),
                        param("principal", who)])
    router.post("/deadletters/{dead_letter_id}/redrive", tags=["dead letters"], status_code=202,
                summary="Ask the service to decide the message again (its outcome is recorded on the dead letter)",
                name="redriveDeadLetter")(redrive)
