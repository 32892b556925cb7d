"""An endpoint per command, made from the command classes: ``POST /<collection>`` creates,
``POST /<collection>/{id}/<command-in-kebab-case>`` changes.

Commands go through the same :class:`CareApplication` as every other caller
(:mod:`services.care.handling` runs them once per ``Idempotency-Key`` and tries again
when another writer gets in first); the actor of every event is the token's, never the
body's. ``If-Match`` names the version read: 412 if it moved on, nothing written.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Body, Header, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, create_model

from domain.base import AggregateRoot
from domain.care_plan import CarePlan
from domain.inventory import Inventory
from domain.therapy_course import TherapyCourse
from services.api.auth import Principal
from services.api.dependencies import Api, etag, parse_if_match
from services.api.routes import param, signature
from services.care import commands as c
from services.care import handling
from services.shared.commands import DOOR_TEXT_MAX, CommandMeta, CommandResult


@dataclass(frozen=True)
class Collection:
    """One aggregate type as the API shows it."""

    path: str
    aggregate: type[AggregateRoot]
    base: type[c.Command]
    target: str
    creation: type[c.CreationCommand]
    getter: str

    @property
    def new_id(self) -> str:
        """The creation command's field for the new aggregate's id (the same name as the target)."""
        return self.target


COLLECTIONS = (
    Collection("plans", CarePlan, c.PlanCommand, "plan_id", c.DraftCarePlan, "get_plan"),
    Collection("courses", TherapyCourse, c.CourseCommand, "course_id", c.StartCourse, "get_course"),
    Collection("inventories", Inventory, c.InventoryCommand, "inventory_id", c.OpenInventory, "get_inventory"),
)


def kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def commands_of(base: type[c.Command]) -> list[type[c.Command]]:
    found: list[type[c.Command]] = []
    for sub in base.__subclasses__():
        found.append(sub)
        found.extend(commands_of(sub))
    return found


IfMatch = Annotated[str | None, Header(alias="If-Match", description='The version read, e.g. "3": 412 if it moved on.')]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200,
           description="Send the same key again to get the first result; nothing is written twice."),
]


def include(router: APIRouter, api: Api, collection: Collection, who: Any) -> None:
    """The collection's creation endpoint, then one endpoint per command on its aggregates."""
    _creation_route(router, api, collection, who)
    for command in commands_of(collection.base):
        _command_route(router, api, collection, command, who)


def run(
    api: Api,
    principal: Principal,
    make: Callable[[], c.Command | c.CreationCommand],
    *,
    aggregate_id: UUID,
    if_match: str | None,
    key: str | None,
    created: str | None,
) -> Response:
    """``created``: the collection a creation command adds to (for Location), else None."""
    named = parse_if_match(if_match)
    meta = CommandMeta(actor=principal.actor, expected_version=named)
    outcome = handling.handle(api.care, make, meta, key, aggregate_id=aggregate_id)
    return _response(outcome.result, created=created, replayed=outcome.replayed)


def _response(result: CommandResult, *, created: str | None, replayed: bool) -> Response:
    headers = {"ETag": etag(result.version)}
    if created:
        headers["Location"] = f"/{created}/{result.aggregate_id}"
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    # encoded once, by the result's own serializer (not to a dict and then by json.dumps)
    return Response(result.model_dump_json(), status_code=201 if created else 200, headers=headers,
                    media_type="application/json")


def _creation_route(router: APIRouter, api: Api, collection: Collection, who: Any) -> None:
    command = collection.creation
    id_field = collection.new_id

    def endpoint(body: Any, principal: Principal, if_match: str | None, key: str | None) -> Response:
        api.may_command(principal, command)
        client = body.client_id if isinstance(body, c.DraftCarePlan) else api.client_of(COLLECTIONS[0], body.plan_id)
        api.require_client(principal, client)
        if key and id_field not in body.model_fields_set:
            # The new aggregate's id follows from the key, so a retry finds what the first run made.
            body = body.model_copy(update={id_field: handling.new_id_for(principal.actor_id, key, id_field)})
        return run(api, principal, lambda: body, aggregate_id=getattr(body, id_field), if_match=if_match, key=key,
                   created=collection.path)

    signature(endpoint, [
        param("body", Annotated[command, Body()]), param("principal", who), param("if_match", IfMatch, None),
        param("key", IdempotencyKey, None),
    ])
    router.post(f"/{collection.path}", status_code=201, tags=[collection.path], summary=summary(command),
                name=command.__name__, response_model=CommandResult)(endpoint)


def _command_route(router: APIRouter, api: Api, collection: Collection, command: type[c.Command], who: Any) -> None:
    if not command.__dict__.get("execute"):
        return  # an intermediate base class
    fields = {name: (f.annotation, f) for name, f in command.model_fields.items() if name != collection.target}
    body_model = create_model(f"{command.__name__}Body", __config__=ConfigDict(extra="forbid", str_max_length=DOOR_TEXT_MAX), **fields)  # type: ignore[call-overload]

    def endpoint(item_id: UUID, body: Any, principal: Principal, if_match: str | None, key: str | None) -> Response:
        api.may_command(principal, command)
        api.require_client(principal, api.client_of(collection, item_id))
        values = body.model_dump(exclude_unset=True) if body is not None else {}
        return run(api, principal, lambda: command(**values, **{collection.target: item_id}), aggregate_id=item_id,
                   if_match=if_match, key=key, created=None)

    has_required = any(f.is_required() for f in command.model_fields.values() if f is not command.model_fields[collection.target])
    body_annotation = Annotated[body_model, Body()] if has_required else Annotated[body_model | None, Body()]
    signature(endpoint, [
        param("item_id", Annotated[UUID, Path(alias=collection.target)]),
        param("body", body_annotation, inspect.Parameter.empty if has_required else None),
        param("principal", who), param("if_match", IfMatch, None), param("key", IdempotencyKey, None),
    ])
    router.post(f"/{collection.path}/{{{collection.target}}}/{kebab(command.__name__)}", tags=[collection.path],
                summary=summary(command), name=command.__name__, response_model=CommandResult)(endpoint)


def summary(command: type[BaseModel]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", command.__name__).capitalize()
