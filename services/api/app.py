"""The FastAPI application: an endpoint per command, versioned reads, escalations.

Commands go through the same :class:`CareApplication` as every other caller; the actor of
every event is the token's, never the body's. Reads answer with the version as ``ETag``;
writes take ``If-Match`` (412 on a stale version, nothing written). ``Idempotency-Key``
makes a retried command return its first result: the key names the command (its
``causation_id`` is ``command:<uuid5 of actor and key>``), so the first run is found in the
aggregate's own history — no second table that a crash could leave out of step.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID, uuid5

from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, create_model

from domain.base import AggregateRoot, Role
from domain.care_plan import CarePlan
from domain.inventory import Inventory
from domain.events.assessment import AssessmentScored
from domain.therapy_course import TherapyCourse
from services.api.auth import Principal, TokenRegistry
from services.api.problems import ApiProblem, install, known_codes
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta, CommandResult
from services.care.errors import AggregateMissingError, ConcurrencyConflictError

IDEMPOTENCY_NAMESPACE = UUID("8c7d6f3e-2b1a-4c5d-9e8f-7a6b5c4d3e2f")
#: Tries of a command (without If-Match) while other writers keep moving its aggregate on.
IDEMPOTENT_ATTEMPTS = 5

#: Who may send which commands (beyond the clinician's own-clients rule).
SUPERVISOR_ONLY: frozenset[type[BaseModel]] = frozenset(
    {c.LowerRisk, c.ActivateEmergencySupport, c.RecordCrisisResolved, c.EndEmergencySupport}
)
INTEGRATION_COMMANDS: frozenset[type[BaseModel]] = frozenset({c.SubmitQuestionnaire})
CLINICAL = (Role.CLINICIAN, Role.SUPERVISOR)
READERS = (Role.CLINICIAN, Role.SUPERVISOR, Role.INTEGRATION)


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


class Acknowledgement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=4000)


class Resolution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: str = Field(min_length=1, max_length=4000)
    reason: str | None = Field(default=None, max_length=4000)


_bearer = HTTPBearer(auto_error=False, description="A token made with `careplan api add-token`.")


class Api:
    """The application's parts: the care application, the escalation store, the tokens."""

    def __init__(
        self, care: CareApplication, tokens: TokenRegistry, escalation: Any | None = None, assessment: Any | None = None
    ) -> None:
        self.care = care
        self.tokens = tokens
        self.escalation = escalation
        self.assessment = assessment
        #: Every store's dead letters (services.operations.dead_letters.DeadLetterDesk).
        self.dead_letters: Any | None = None
        self._clients: dict[tuple[str, UUID], str] = {}
        #: JSON lines, one per request: who (from the token), what, when, the answer.
        self.access_log: Any | None = None

    # ----------------------------------------------------------------- who

    async def principal(self, request: Request, _: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Principal:
        """Async: a dictionary lookup needs no worker thread (FastAPI runs sync dependencies in one)."""
        principal = self.tokens.principal(request.headers.get("authorization"))
        if principal is None:
            raise ApiProblem(401, "unauthenticated", "Unauthenticated", "Send a valid token: Authorization: Bearer <token>.",
                             {"WWW-Authenticate": 'Bearer realm="careplan"'})
        request.state.principal = principal  # for the access log
        return principal

    @staticmethod
    def require(principal: Principal, roles: tuple[Role, ...], what: str) -> None:
        if principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise ApiProblem(403, "forbidden", "Forbidden", f"A {principal.role.value} may not {what} (allowed: {allowed}).")

    @staticmethod
    def require_client(principal: Principal, client_id: str) -> None:
        if not principal.may_act_for(client_id):
            raise ApiProblem(403, "forbidden", "Forbidden", f"{principal.actor_id} is not assigned to this client.")

    def may_command(self, principal: Principal, command: type[BaseModel]) -> None:
        if principal.role is Role.INTEGRATION and command in INTEGRATION_COMMANDS:
            return
        roles = (Role.SUPERVISOR,) if command in SUPERVISOR_ONLY else CLINICAL
        self.require(principal, roles, f"send {command.__name__}")

    # ----------------------------------------------------------------- commands

    def run(
        self,
        principal: Principal,
        make: Callable[[], c.Command | c.CreationCommand],
        *,
        aggregate_id: UUID,
        if_match: str | None,
        key: str | None,
        created: str | None,
    ) -> JSONResponse:
        """``created``: the collection a creation command adds to (for Location), else None.

        Without If-Match a command applies to the record as it is now: when another writer
        gets in first (another worker, say) it is decided again on the new version. With an
        idempotency key, the version is read before the history is searched for a first run
        and then required of the write, so a first run committed after the search makes this
        write conflict and is found on the next look."""
        named = parse_if_match(if_match)
        command_id = uuid5(IDEMPOTENCY_NAMESPACE, f"{principal.actor_id}\n{key}") if key else None
        meta = CommandMeta(actor=principal.actor, **({"command_id": command_id} if command_id else {}))
        for _ in range(IDEMPOTENT_ATTEMPTS):
            expected = named
            if command_id is not None:
                seen = self._version(aggregate_id)
                if (earlier := self._earlier_result(aggregate_id, command_id)) is not None:
                    return self._result(earlier, created=created, replayed=True)
                expected = named if named is not None else seen
            try:
                result = self.care.handle(make(), meta.model_copy(update={"expected_version": expected}))
            except ConcurrencyConflictError:
                if command_id is not None and (earlier := self._earlier_result(aggregate_id, command_id)) is not None:
                    return self._result(earlier, created=created, replayed=True)
                if named is not None:
                    raise
                continue
            return self._result(result, created=created, replayed=False)
        msg = f"{aggregate_id} kept changing under this command; nothing was written. Send it again."
        raise ConcurrencyConflictError(msg)

    def _version(self, aggregate_id: UUID) -> int:
        try:
            return self.care.get_aggregate(aggregate_id).version
        except AggregateMissingError:
            return 0

    def _earlier_result(self, aggregate_id: UUID, command_id: UUID) -> CommandResult | None:
        cause = f"command:{command_id}"
        events = [e for e in self.care.history(aggregate_id) if e.causation_id == cause]  # none yet: empty
        if not events:
            return None
        return CommandResult(
            aggregate_id=aggregate_id,
            version=events[-1].originator_version,
            event_ids=[e.event_id for e in events],
            event_types=[type(e).__name__ for e in events],
            correlation_id=events[0].correlation_id,
        )

    def _result(self, result: CommandResult, *, created: str | None, replayed: bool) -> JSONResponse:
        headers = {"ETag": etag(result.version)}
        if created:
            headers["Location"] = f"/{created}/{result.aggregate_id}"
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(result.model_dump(mode="json"), status_code=201 if created else 200, headers=headers)

    def client_of(self, collection: Collection, aggregate_id: UUID) -> str:
        """The client an aggregate belongs to (404 if there is no such aggregate). It never
        changes, so it is loaded once per aggregate."""
        key = (collection.path, aggregate_id)
        if (client := self._clients.get(key)) is None:
            client = self._clients[key] = str(getattr(self.care, collection.getter)(aggregate_id).client_id)
        return client


def etag(version: int) -> str:
    return f'"{version}"'


def parse_if_match(value: str | None) -> int | None:
    if value is None or value.strip() == "*":
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit():
        raise ApiProblem(400, "precondition-required", "Invalid If-Match",
                         f"If-Match must name one version, e.g. \"3\", not {value!r}.")
    return int(text)


# --------------------------------------------------------------------- routes

IfMatch = Annotated[str | None, Header(alias="If-Match", description='The version read, e.g. "3": 412 if it moved on.')]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=200,
           description="Send the same key again to get the first result; nothing is written twice."),
]


def create_app(api: Api) -> FastAPI:
    app = FastAPI(
        title="careplan",
        version="1",
        description="Care plans, therapy courses and interpersonal inventories as commands and versioned reads. "
        "Errors are RFC 9457 problem details; every write is an event with who, when and why.",
        responses={401: {"description": "No valid token"}, 403: {"description": "Role or client not allowed"}},
    )
    install(app)
    app.state.api = api
    Who = Annotated[Principal, Depends(api.principal)]
    if api.access_log is not None:
        _record_access(app, api)

    for collection in COLLECTIONS:
        _creation_route(app, api, collection, Who)
        for command in commands_of(collection.base):
            _command_route(app, api, collection, command, Who)
        _read_routes(app, api, collection, Who)
    _escalation_routes(app, api, Who)
    if api.dead_letters is not None:
        _dead_letter_routes(app, api, Who)
    _fhir_routes(app, api, Who)
    _audit_routes(app, api, Who)

    @app.get("/problems/{code}", tags=["problems"], summary="What a problem type means")
    def problem_type(code: str) -> dict[str, str]:
        codes = known_codes()
        if code not in codes:
            raise ApiProblem(404, "not-found", "Not found", f"No problem type {code!r}.")
        return {"type": f"/problems/{code}", "title": code.replace("-", " ").capitalize(), "description": codes[code]}

    return app


def _record_access(app: FastAPI, api: Api) -> None:
    """Every request, allowed or refused, as one JSON line: who (the token's actor, or
    nobody), the method and path, the status, when. The body is not logged (it may hold
    health details); the events record what was changed."""
    import json as _json
    import threading
    import time as _time

    lock = threading.Lock()

    @app.middleware("http")
    async def log_access(request: Request, call_next: Callable[..., Any]) -> Any:
        started = _time.time()
        response = await call_next(request)
        principal: Principal | None = getattr(request.state, "principal", None)  # None: refused or public
        line = _json.dumps({
            "at": datetime.fromtimestamp(started).astimezone().isoformat(),
            "actor": principal.actor_id if principal else None,
            "role": principal.role.value if principal else None,
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query or None,
            "status": response.status_code,
            "ms": round((_time.time() - started) * 1000, 1),
        })
        with lock:
            api.access_log.write(line + "\n")
            api.access_log.flush()
        return response


def _signature(endpoint: Callable[..., Any], parameters: list[inspect.Parameter]) -> None:
    """Routes are made in a loop, one per command class: FastAPI reads the parameters
    (and so the OpenAPI document) from the signature given here."""
    endpoint.__signature__ = inspect.Signature(parameters, return_annotation=Any)  # type: ignore[attr-defined]


def _param(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _creation_route(app: FastAPI, api: Api, collection: Collection, who: Any) -> None:
    command = collection.creation
    id_field = collection.new_id

    def endpoint(body: Any, principal: Principal, if_match: str | None, key: str | None) -> JSONResponse:
        api.may_command(principal, command)
        client = body.client_id if isinstance(body, c.DraftCarePlan) else api.client_of(COLLECTIONS[0], body.plan_id)
        api.require_client(principal, client)
        if key and id_field not in body.model_fields_set:
            # The new aggregate's id follows from the key, so a retry finds what the first run made.
            body = body.model_copy(update={id_field: uuid5(IDEMPOTENCY_NAMESPACE, f"{principal.actor_id}\n{key}\n{id_field}")})
        return api.run(principal, lambda: body, aggregate_id=getattr(body, id_field), if_match=if_match, key=key,
                       created=collection.path)

    _signature(endpoint, [
        _param("body", Annotated[command, Body()]), _param("principal", who), _param("if_match", IfMatch, None),
        _param("key", IdempotencyKey, None),
    ])
    app.post(f"/{collection.path}", status_code=201, tags=[collection.path], summary=_summary(command),
             name=command.__name__, response_model=CommandResult)(endpoint)


def _command_route(app: FastAPI, api: Api, collection: Collection, command: type[c.Command], who: Any) -> None:
    if not command.__dict__.get("execute"):
        return  # an intermediate base class
    fields = {name: (f.annotation, f) for name, f in command.model_fields.items() if name != collection.target}
    body_model = create_model(f"{command.__name__}Body", __config__=ConfigDict(extra="forbid"), **fields)  # type: ignore[call-overload]

    def endpoint(item_id: UUID, body: Any, principal: Principal, if_match: str | None, key: str | None) -> JSONResponse:
        api.may_command(principal, command)
        api.require_client(principal, api.client_of(collection, item_id))
        values = body.model_dump(exclude_unset=True) if body is not None else {}
        return api.run(principal, lambda: command(**values, **{collection.target: item_id}), aggregate_id=item_id,
                       if_match=if_match, key=key, created=None)

    has_required = any(f.is_required() for f in command.model_fields.values() if f is not command.model_fields[collection.target])
    body_annotation = Annotated[body_model, Body()] if has_required else Annotated[body_model | None, Body()]
    _signature(endpoint, [
        _param("item_id", Annotated[UUID, Path(alias=collection.target)]),
        _param("body", body_annotation, inspect.Parameter.empty if has_required else None),
        _param("principal", who), _param("if_match", IfMatch, None), _param("key", IdempotencyKey, None),
    ])
    app.post(f"/{collection.path}/{{{collection.target}}}/{kebab(command.__name__)}", tags=[collection.path],
             summary=_summary(command), name=command.__name__, response_model=CommandResult)(endpoint)


def _summary(command: type[BaseModel]) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", " ", command.__name__).capitalize()


def _read_routes(app: FastAPI, api: Api, collection: Collection, who: Any) -> None:
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

    _signature(read, [
        _param("item_id", Annotated[UUID, Path(alias=collection.target)]), _param("principal", who),
        _param("version", Annotated[int | None, Query(ge=1, description="The state at this version.")], None),
        _param("at", Annotated[datetime | None, Query(description="The state as recorded at this moment (RFC 3339).")], None),
        _param("if_none_match", Annotated[str | None, Header(alias="If-None-Match")], None),
    ])
    app.get(f"/{collection.path}/{{{collection.target}}}", tags=[collection.path], summary=f"Read a {name}",
            name=f"read{name}")(read)

    def history(item_id: UUID, principal: Principal) -> list[dict[str, Any]]:
        api.require(principal, READERS, f"read a {name}'s history")
        api.require_client(principal, api.client_of(collection, item_id))
        return [
            {"type": type(e).__name__, "summary": e.describe(), **e.model_dump(mode="json")}
            for e in api.care.history(item_id)
        ]

    _signature(history, [_param("item_id", Annotated[UUID, Path(alias=collection.target)]), _param("principal", who)])
    app.get(f"/{collection.path}/{{{collection.target}}}/history", tags=[collection.path],
            summary=f"Every event of a {name}, in order", name=f"history{name}")(history)


def _escalation_routes(app: FastAPI, api: Api, who: Any) -> None:
    def crises(principal: Principal) -> list[dict[str, Any]]:
        api.require(principal, CLINICAL, "list crises")
        return [
            crisis.model_dump(mode="json") for crisis in api.escalation.open_crises()
            if principal.may_act_for(crisis.client_id)
        ]

    _signature(crises, [_param("principal", who)])
    app.get("/escalations", tags=["escalations"], summary="Open crises", name="openCrises")(crises)

    def acknowledge(crisis_id: UUID, body: Acknowledgement, principal: Principal) -> JSONResponse:
        api.require(principal, (Role.SUPERVISOR,), "acknowledge an escalation")
        crisis = api.escalation.acknowledge(crisis_id, actor=principal.actor, reason=body.reason)
        return JSONResponse(crisis.model_dump(mode="json"), headers={"ETag": etag(crisis.version)})

    _signature(acknowledge, [_param("crisis_id", UUID), _param("body", Annotated[Acknowledgement, Body()]),
                             _param("principal", who)])
    app.post("/escalations/{crisis_id}/acknowledge", tags=["escalations"], summary="Acknowledge a crisis",
             name="acknowledgeCrisis")(acknowledge)

    def resolve(crisis_id: UUID, body: Resolution, principal: Principal) -> JSONResponse:
        api.require(principal, (Role.SUPERVISOR,), "resolve an escalation")
        crisis = api.escalation.resolve(crisis_id, actor=principal.actor, outcome=body.outcome, reason=body.reason)
        return JSONResponse(crisis.model_dump(mode="json"), headers={"ETag": etag(crisis.version)})

    _signature(resolve, [_param("crisis_id", UUID), _param("body", Annotated[Resolution, Body()]),
                         _param("principal", who)])
    app.post("/escalations/{crisis_id}/resolve", tags=["escalations"], summary="Resolve a crisis",
             name="resolveCrisis")(resolve)


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=4000, description="Why the message can be decided now.")


def _dead_letter_routes(app: FastAPI, api: Api, who: Any) -> None:
    """Supervisors see every service's dead letters (ids, kinds, error classes: no content)
    and ask for them to be decided again."""
    from domain.operations.dead_letter import DeadLetterStatus
    from services.operations.dead_letters import summary

    def dead_letters(principal: Principal, status: DeadLetterStatus | None) -> list[dict[str, Any]]:
        api.require(principal, (Role.SUPERVISOR,), "read dead letters")
        return [summary(letter) for letter in api.dead_letters.list(status)]

    _signature(dead_letters, [_param("principal", who),
                              _param("status", Annotated[DeadLetterStatus | None, Query()], None)])
    app.get("/deadletters", tags=["dead letters"], summary="Messages a service could not decide",
            name="deadLetters")(dead_letters)

    def dead_letter(dead_letter_id: UUID, principal: Principal) -> dict[str, Any]:
        api.require(principal, (Role.SUPERVISOR,), "read dead letters")
        letter, history = api.dead_letters.show(dead_letter_id)
        return summary(letter) | {"history": [
            {"at": e.timestamp.isoformat(), "actor": e.actor.id, "role": e.actor.role.value, "what": e.describe()}
            for e in history
        ]}

    _signature(dead_letter, [_param("dead_letter_id", UUID), _param("principal", who)])
    app.get("/deadletters/{dead_letter_id}", tags=["dead letters"], summary="One dead letter and its redrives",
            name="deadLetter")(dead_letter)

    def redrive(dead_letter_id: UUID, body: RedriveRequest, principal: Principal) -> JSONResponse:
        api.require(principal, (Role.SUPERVISOR,), "redrive a dead letter")
        letter = api.dead_letters.request_redrive(dead_letter_id, actor=principal.actor, reason=body.reason)
        return JSONResponse(summary(letter), status_code=202)

    _signature(redrive, [_param("dead_letter_id", UUID), _param("body", Annotated[RedriveRequest, Body()]),
                         _param("principal", who)])
    app.post("/deadletters/{dead_letter_id}/redrive", tags=["dead letters"], status_code=202,
             summary="Ask the service to decide the message again (its outcome is recorded on the dead letter)",
             name="redriveDeadLetter")(redrive)


# --------------------------------------------------------------------- FHIR R4 views

FHIR_JSON = "application/fhir+json"


def fhir_response(resource: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(resource.model_dump_json(exclude_none=True), media_type=FHIR_JSON, headers=headers)


def _fhir_routes(app: FastAPI, api: Api, who: Any) -> None:
    from services.api import fhir

    def plan_for(principal: Principal, plan_id: UUID) -> CarePlan:
        api.require(principal, READERS, "read FHIR resources")
        api.require_client(principal, api.client_of(COLLECTIONS[0], plan_id))
        return api.care.get_plan(plan_id)

    def course_for(principal: Principal, course_id: UUID) -> TherapyCourse:
        api.require(principal, READERS, "read FHIR resources")
        api.require_client(principal, api.client_of(COLLECTIONS[1], course_id))
        return api.care.get_course(course_id)

    def read_care_plan(plan_id: UUID, principal: Principal, at: datetime | None) -> Response:
        plan = plan_for(principal, plan_id)
        shown = api.care.as_of(plan_id, at) if at is not None else plan
        return fhir_response(fhir.care_plan(shown), {"ETag": f'W/"{shown.version}"'})

    _signature(read_care_plan, [
        _param("plan_id", UUID), _param("principal", who),
        _param("at", Annotated[datetime | None, Query(alias="_at", description="The plan as recorded at this moment.")], None),
    ])
    app.get("/fhir/CarePlan/{plan_id}", tags=["fhir"], summary="FHIR CarePlan (optionally _at a moment)",
            name="fhirCarePlan", response_class=Response)(read_care_plan)

    def care_plan_history(plan_id: UUID, principal: Principal) -> Response:
        plan = plan_for(principal, plan_id)
        return fhir_response(fhir.history_bundle([api.care.get_plan(plan_id, version=v) for v in range(1, plan.version + 1)]))

    _signature(care_plan_history, [_param("plan_id", UUID), _param("principal", who)])
    app.get("/fhir/CarePlan/{plan_id}/_history", tags=["fhir"], summary="Every version of a FHIR CarePlan",
            name="fhirCarePlanHistory", response_class=Response)(care_plan_history)

    def care_plan_version(plan_id: UUID, version: int, principal: Principal) -> Response:
        plan_for(principal, plan_id)
        return fhir_response(fhir.care_plan(api.care.get_plan(plan_id, version=version)))

    _signature(care_plan_version, [_param("plan_id", UUID), _param("version", Annotated[int, Path(ge=1)]),
                                   _param("principal", who)])
    app.get("/fhir/CarePlan/{plan_id}/_history/{version}", tags=["fhir"], summary="One version of a FHIR CarePlan",
            name="fhirCarePlanVersion", response_class=Response)(care_plan_version)

    CarePlanParam = Annotated[UUID, Query(alias="careplan", description="The care plan's id.")]
    CourseParam = Annotated[UUID, Query(alias="course", description="The therapy course's id.")]

    def goals(plan_id: UUID, principal: Principal) -> Response:
        plan = plan_for(principal, plan_id)
        return fhir_response(fhir.searchset([fhir.goal(plan, g) for g in plan.goals]))

    def risk(plan_id: UUID, principal: Principal) -> Response:
        plan = plan_for(principal, plan_id)
        return fhir_response(fhir.searchset([fhir.risk_assessment(plan, list(api.care.history(plan_id)))]))

    def crisis_flags(plan_id: UUID, principal: Principal) -> Response:
        plan = plan_for(principal, plan_id)
        return fhir_response(fhir.searchset(fhir.flags(plan, list(api.care.history(plan_id)))))

    def appointments(course_id: UUID, principal: Principal) -> Response:
        return fhir_response(fhir.searchset(fhir.appointments(course_for(principal, course_id))))

    def responses(course_id: UUID, principal: Principal) -> Response:
        return fhir_response(fhir.searchset(fhir.questionnaire_responses(course_for(principal, course_id))))

    def observations(course_id: UUID, principal: Principal) -> Response:
        from domain.assessment.record import record_id

        course = course_for(principal, course_id)
        scores = [e for e in api.assessment.repository.event_store.get(record_id(course_id)) if isinstance(e, AssessmentScored)]
        return fhir_response(fhir.searchset(fhir.observations(course.client_id, scores)))

    def provenance(target: str, principal: Principal) -> Response:
        kind, _, raw_id = target.partition("/")
        collection = {"CarePlan": COLLECTIONS[0], "TherapyCourse": COLLECTIONS[1], "Inventory": COLLECTIONS[2]}.get(kind)
        try:
            aggregate_id = UUID(raw_id)
        except ValueError:
            collection = None
        if collection is None:
            raise ApiProblem(400, "invalid-request", "Invalid request",
                             "target must be CarePlan/<id>, TherapyCourse/<id> or Inventory/<id>.")
        api.require(principal, READERS, "read FHIR resources")
        api.require_client(principal, api.client_of(collection, aggregate_id))
        return fhir_response(fhir.searchset([fhir.provenance(kind, e) for e in api.care.history(aggregate_id)]))

    for path, endpoint, param, summary in (
        ("Goal", goals, CarePlanParam, "Goals of a care plan"),
        ("RiskAssessment", risk, CarePlanParam, "The plan's current risk assessment"),
        ("Flag", crisis_flags, CarePlanParam, "Active crises on a plan"),
        ("Appointment", appointments, CourseParam, "Sessions of a course"),
        ("QuestionnaireResponse", responses, CourseParam, "Questionnaires submitted in a course"),
        ("Observation", observations, CourseParam, "PHQ-9 and GAD-7 totals (LOINC), derived from the responses"),
    ):
        first = next(iter(inspect.signature(endpoint).parameters))
        _signature(endpoint, [_param(first, param), _param("principal", who)])
        app.get(f"/fhir/{path}", tags=["fhir"], summary=summary, name=f"fhir{path}", response_class=Response)(endpoint)
    _signature(provenance, [
        _param("target", Annotated[str, Query(description="CarePlan/<id>, TherapyCourse/<id> or Inventory/<id>")]),
        _param("principal", who),
    ])
    app.get("/fhir/Provenance", tags=["fhir"], summary="Who changed a record, when and why",
            name="fhirProvenance", response_class=Response)(provenance)


# --------------------------------------------------------------------- audit

Purpose = Annotated[str | None, Header(alias="X-Audit-Purpose", description="Why you read: recorded with the read; required.")]


def _audit_routes(app: FastAPI, api: Api, who: Any) -> None:
    """The auditors' reads (services.audit): auditor role only, each with a stated purpose,
    each recorded in the access log before anything is read."""
    from services.audit.auditor import Auditor
    from services.audit.export import to_html

    def auditor(principal: Principal, purpose: str | None) -> Auditor:
        api.require(principal, (Role.AUDITOR,), "use the audit functions")
        return Auditor(api.care.settings, principal.actor, purpose)

    def history(aggregate_id: UUID, principal: Principal, purpose: str | None) -> dict[str, Any]:
        store, entries = auditor(principal, purpose).history(aggregate_id)
        return {"store": store, "events": [e.model_dump(mode="json") for e in entries]}

    def replay(aggregate_id: UUID, principal: Principal, purpose: str | None, at: datetime | None,
               version: int | None) -> dict[str, Any]:
        return auditor(principal, purpose).replay(aggregate_id, at=at, version=version).model_dump(mode="json")

    def diff(aggregate_id: UUID, principal: Principal, purpose: str | None, start: str, end: str) -> dict[str, Any]:
        def point(value: str) -> datetime | int:
            try:
                return int(value) if value.isdigit() else datetime.fromisoformat(value)
            except ValueError as e:
                raise ApiProblem(400, "invalid-request", "Invalid request", f"{value!r} is neither a version nor a moment.") from e

        return auditor(principal, purpose).diff(aggregate_id, point(start), point(end)).model_dump(mode="json")

    def trace(event_id: UUID, principal: Principal, purpose: str | None) -> dict[str, Any]:
        return auditor(principal, purpose).trace(event_id).model_dump(mode="json")

    def export(client_id: str, principal: Principal, purpose: str | None, output_format: str) -> Response:
        result = auditor(principal, purpose).export(client_id=client_id)
        if output_format == "html":
            return Response(to_html(result), media_type="text/html")
        return Response(result.model_dump_json(), media_type="application/json")

    def verify(principal: Principal, purpose: str | None) -> JSONResponse:
        reports = auditor(principal, purpose).verify()
        return JSONResponse([r.model_dump(mode="json") for r in reports],
                            status_code=200 if all(r.ok for r in reports) else 409)

    who_purpose = [_param("principal", who), _param("purpose", Purpose, None)]
    _signature(history, [_param("aggregate_id", UUID), *who_purpose])
    _signature(replay, [_param("aggregate_id", UUID), *who_purpose,
                        _param("at", Annotated[datetime | None, Query()], None),
                        _param("version", Annotated[int | None, Query(ge=1)], None)])
    _signature(diff, [_param("aggregate_id", UUID), *who_purpose,
                      _param("start", Annotated[str, Query(alias="from", description="Version or moment.")]),
                      _param("end", Annotated[str, Query(alias="to", description="Version or moment.")])])
    _signature(trace, [_param("event_id", UUID), *who_purpose])
    _signature(export, [_param("client_id", str), *who_purpose,
                        _param("output_format", Annotated[str, Query(alias="format", pattern="^(json|html)$")], "json")])
    _signature(verify, who_purpose)
    for path, endpoint, summary, name in (
        ("/audit/aggregates/{aggregate_id}/history", history, "Every event of an aggregate: who, what, why", "auditHistory"),
        ("/audit/aggregates/{aggregate_id}/replay", replay, "An aggregate's state at a moment or version", "auditReplay"),
        ("/audit/aggregates/{aggregate_id}/diff", diff, "What changed between two versions or moments", "auditDiff"),
        ("/audit/events/{event_id}/trace", trace, "An event's causation chain across services", "auditTrace"),
        ("/audit/clients/{client_id}/export", export, "A client's whole care history (JSON or HTML)", "auditExport"),
        ("/audit/verify", verify, "Integrity of every store's hash chain (409 on a break)", "auditVerify"),
    ):
        app.get(path, tags=["audit"], summary=summary, name=name)(endpoint)
