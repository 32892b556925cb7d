"""Versioned reads of an aggregate: its state (now, at a version or at a moment; the version
as ``ETag``, 304 on ``If-None-Match``) and its history."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Path, Query
from fastapi.responses import JSONResponse, Response

from domain.base import Moment
from services.api.auth import Principal
from services.api.dependencies import MAX_VERSION, READERS, Api, etag
from services.api.problems import ApiProblem
from services.api.routes import param, signature
from services.api.routes.commands import Collection


def include(router: APIRouter, api: Api, collection: Collection, who: Any) -> None:
    name = collection.aggregate.__name__

    def read(
        item_id: UUID, principal: Principal, version: int | None, at: datetime | None, if_none_match: str | None
    ) -> Response:
        api.require(principal, READERS, f"read a {name}")
        if version is not None and at is not None:
            raise ApiProblem(400, "invalid-request", "Invalid request", "Ask for a version or a moment, not both.")
        current = getattr(api.care, collection.getter)(item_id)
        api.require_client(principal, current.client_id)
        aggregate = (
            api.care.as_of(item_id, at) if at is not None
            else getattr(api.care, collection.getter)(item_id, version=version) if version is not None
            else current
        )
        tag = etag(aggregate.version)
        if if_none_match is not None and tag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
            return Response(status_code=304, headers={"ETag": tag})
        return JSONResponse(aggregate.model_dump(mode="json"), headers={"ETag": tag})

    signature(read, [
        param("item_id", Annotated[UUID, Path(alias=collection.target)]), param("principal", who),
        param("version", Annotated[int | None, Query(ge=1, le=MAX_VERSION, description="The state at this version.")],
              None),
        param("at", Annotated[Moment | None, Query(description="The state as recorded at this moment (RFC 3339, "
                                                            "with a time zone).")], None),
        param("if_none_match", Annotated[str | None, Header(alias="If-None-Match")], None),
    ])
    router.get(f"/{collection.path}/{{{collection.target}}}", tags=[collection.path], summary=f"Read a {name}",
               name=f"read{name}")(read)

    def history(item_id: UUID, principal: Principal) -> list[dict[str, Any]]:
        api.require(principal, READERS, f"read a {name}'s history")
        api.require_client(principal, api.client_of(collection, item_id))
        return [
            {"type": type(e).__name__, "summary": e.describe(), **e.model_dump(mode="json")}
            for e in api.care.history(item_id)
        ]

    signature(history, [param("item_id", Annotated[UUID, Path(alias=collection.target)]), param("principal", who)])
    router.get(f"/{collection.path}/{{{collection.target}}}/history", tags=[collection.path],
               summary=f"Every event of a {name}, in order", name=f"history{name}")(history)
