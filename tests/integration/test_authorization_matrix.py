"""Who may call which route, for which client: every route of the API as `careplan api serve`
builds it × every role × a token of the record's client, a token of another client and an
all-clients token, plus no token, an unknown, a revoked and an expired one (issue 13).

The expectations are declared below, one line per route. The routes come from
``app.routes``: a route added without a line here fails the test, and so does a line for a
route that no longer exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient

from domain.base import CommandContext, Role
from domain.catalogues.escalation import EscalationTrigger
from domain.escalation.crisis import Crisis
from domain.operations.dead_letter import DeadLetter
from services.api.auth import API_ROLES, add_token, add_token_with_id, revoke_token
from services.api.server import build
from services.care import commands as c
from services.shared.settings import Settings
from tests.support.bodies import example_body

A, B = "client-a", "client-b"
C, S, I, AU = Role.CLINICIAN, Role.SUPERVISOR, Role.INTEGRATION, Role.AUDITOR


@dataclass(frozen=True)
class Rule:
    """Who may call a route. ``scope`` says what a token of another client gets:

    - ``forbidden``: 403 (care plans, courses, inventories and their FHIR views);
    - ``hidden``: the same 404 as for an id that does not exist (crises, dead letters, audit
      reads: their ids are derivable or their existence is itself clinical);
    - ``filtered``: a list that leaves the other client's records out;
    - ``none``: the route names no client;
    - ``public``: no token needed.
    """

    roles: frozenset[Role]
    scope: str

    def __init__(self, roles: tuple[Role, ...], scope: str) -> None:
        object.__setattr__(self, "roles", frozenset(roles))
        object.__setattr__(self, "scope", scope)


CLINICAL = (C, S)
CLINICAL_OR_INTEGRATION = (C, S, I)
PUBLIC = Rule((), "public")

#: route name → who may call it. Commands on care plans, courses and inventories first.
EXPECTED: dict[str, Rule] = {
    # care plans
    "DraftCarePlan": Rule(CLINICAL, "forbidden"),
    **{name: Rule(CLINICAL, "forbidden") for name in (
        "RecordConsent", "ExplainConfidentiality", "ActivatePlan", "PutPlanOnHold", "ResumePlan", "CompletePlan",
        "RevokePlan", "AddGoal", "AgreeGoal", "ReviseGoal", "AchieveGoal", "AbandonGoal", "RecordExpectation",
        "IdentifyUnrealisticExpectation", "AdjustExpectation", "GiveExpertBacking", "StartEnhancementStage",
        "ReleaseHarmfulEmotion", "CompleteEnhancementStage", "ChangeStrategy", "RaiseCrisis", "FocusOnTherapyModel",
        "DropTherapyModel", "RaiseRisk", "TargetCopingSkill", "RecordSkillProgress")},
    **{name: Rule((S,), "forbidden") for name in (
        "ActivateEmergencySupport", "RecordCrisisResolved", "EndEmergencySupport", "LowerRisk")},
    "readCarePlan": Rule(CLINICAL_OR_INTEGRATION, "forbidden"),
    "historyCarePlan": Rule(CLINICAL_OR_INTEGRATION, "forbidden"),
    # therapy courses
    "StartCourse": Rule(CLINICAL, "forbidden"),
    **{name: Rule(CLINICAL, "forbidden") for name in (
        "CompleteInitialTask", "EnterMiddlePhase", "EnterTerminationPhase", "ExtendCourse", "ScheduleSession",
        "HoldSession", "MissSession", "CancelSession", "AssignHomework", "ReviewHomework", "CompleteCourse",
        "DiscontinueCourse")},
    "SubmitQuestionnaire": Rule(CLINICAL_OR_INTEGRATION, "forbidden"),
    "readTherapyCourse": Rule(CLINICAL_OR_INTEGRATION, "forbidden"),
    "historyTherapyCourse": Rule(CLINICAL_OR_INTEGRATION, "forbidden"),
    # interpersonal inventories
    "OpenInventory": Rule(CLINICAL, "forbidden"),
    **{name: Rule(CLINICAL, "forbidden") for name in (
        "RecordRelationship", "ReviseRelationship", "NoteRelationshipPattern", "NoteRelationshipExpectation",
        "IdentifyProblemArea", "ChooseProblemAreaFocus")},
    "readInventory": Rule(CLINICAL_OR_INTEGRATION, "forbidden"),
    "historyInventory": Rule(CLINICAL_OR_INTEGRATION, "forbidden"),
    # crises and dead letters
    "openCrises": Rule(CLINICAL, "filtered"),
    "acknowledgeCrisis": Rule((S,), "hidden"),
    "resolveCrisis": Rule((S,), "hidden"),
    "deadLetters": Rule((S,), "filtered"),
    "deadLetter": Rule((S,), "hidden"),
    "redriveDeadLetter": Rule((S,), "hidden"),
    # FHIR views
    **{name: Rule(CLINICAL_OR_INTEGRATION, "forbidden") for name in (
        "fhirCarePlan", "fhirCarePlanHistory", "fhirCarePlanVersion", "fhirGoal", "fhirRiskAssessment", "fhirFlag",
        "fhirAppointment", "fhirQuestionnaireResponse", "fhirObservation", "fhirProvenance")},
    # FHIR subscriptions (issue 14): the topics name no client; a subscription is its clients'
    "fhirSubscriptionTopic": Rule(CLINICAL_OR_INTEGRATION, "none"),
    "fhirSubscriptionCreate": Rule((S, I), "forbidden"),
    "fhirSubscriptionSearch": Rule((S, I), "filtered"),
    **{name: Rule((S, I), "hidden") for name in (
        "fhirSubscription", "fhirSubscriptionDelete", "fhirSubscriptionStatus", "fhirSubscriptionEvents")},
    # the auditors' reads
    **{name: Rule((AU,), "hidden") for name in ("auditHistory", "auditReplay", "auditDiff", "auditTrace", "auditExport")},
    "auditAccessReport": Rule((AU,), "hidden"),
    "auditVerify": Rule((AU,), "none"),
    # the read models (issue 15): lists of the token's clients only; a clinician's caseload is their own plans
    "caseload": Rule(CLINICAL, "filtered"),
    "listPlans": Rule(CLINICAL_OR_INTEGRATION, "filtered"),
    "outcomes": Rule(CLINICAL, "filtered"),
    # webhook subscriptions (issue 14): integration engines and supervisors, within the token's clients
    "createSubscription": Rule((I, S), "forbidden"),
    "listSubscriptions": Rule((I, S), "filtered"),
    **{name: Rule((I, S), "hidden") for name in (
        "readSubscription", "deleteSubscription", "rotateSubscriptionSecret", "resendSubscription",
        "subscriptionEvents")},
    # a client's rights (issue 16): supervisors, their clients only
    **{name: Rule((S,), "forbidden") for name in ("setLegalHold", "releaseLegalHold", "requestErasure", "confirmErasure")},
    # public
    **{name: PUBLIC for name in ("problem_type", "healthz", "readyz", "metrics_text", "openapi", "swagger", "redoc",
                                 "docs-assets")},
    # the web pages: a mounted app of their own, signed in by a session cookie, never by a bearer token
    # (their roles and scope page by page: tests/integration/test_ui.py)
    "ui": Rule((), "session"),
}

#: Callers that hold no valid token: every protected route answers them 401.
UNAUTHENTICATED = ("none", "unknown", "revoked", "expired")


@dataclass
class Records:
    """One client's records in the world."""

    plan: UUID
    course: UUID
    inventory: UUID
    crisis: UUID
    dead_letter: UUID
    event: UUID  # the plan's first event (for the causation trace)
    listed: UUID  # a crisis nobody decides, so the list always has one
    subscription: UUID  # a webhook subscription to the client's events
    fhir_subscription: UUID  # a FHIR subscription covering the client (the matrix deletes it: off)
    listed_fhir_subscription: UUID  # one nobody deletes, so the search always has one


@dataclass
class World:
    client: TestClient
    api: Any
    tokens: dict[str, str]
    of: dict[str, Records] = field(default_factory=dict)
    #: each client's course that ended (the outcomes report's)
    ended: dict[str, UUID] = field(default_factory=dict)

    def headers(self, caller: str) -> dict[str, str]:
        if caller == "none":
            return {"X-Audit-Purpose": "Authorization matrix"}
        token = self.tokens.get(caller, "not-a-token")
        return {"Authorization": f"Bearer {token}", "X-Audit-Purpose": "Authorization matrix"}

    def written(self) -> tuple[int, ...]:
        stores = (self.api.care, self.api.escalation, self.api.assessment, self.api.subscriptions)
        return tuple(s.recorder.max_notification_id() or 0 for s in stores)


def caller_name(role: Role, scope: str) -> str:
    return f"{role.value}-{scope}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("matrix"))
    path = settings.tokens_path()
    tokens = {caller_name(role, scope): add_token(path, actor_id=caller_name(role, scope), role=role,
                                                  clients=clients)
              for role in API_ROLES for scope, clients in (("a", (A,)), ("all", ("*",)))}
    # the strongest token there is, revoked or expired: still nothing
    revoked_id, tokens["revoked"] = add_token_with_id(path, actor_id="revoked", role=S, clients=("*",))
    revoke_token(path, revoked_id)
    tokens["expired"] = add_token(path, actor_id="expired", role=S, clients=("*",), now=datetime(2020, 1, 1, tzinfo=UTC),
                                  expires_at=datetime(2020, 1, 2, tzinfo=UTC))
    api, app = build(settings)
    world = World(TestClient(app, raise_server_exceptions=False), api, tokens)
    for client_id in (A, B):
        world.of[client_id] = records_of(world, client_id)
    yield world
    for part in (api.care, api.escalation, api.assessment, api.dead_letters, api.readiness, api.subscriptions):
        part.close()
    api.access_log.close()


def records_of(world: World, client_id: str) -> Records:
    made: list[dict[str, Any]] = []

    def post(path: str, body: dict[str, Any]) -> UUID:
        response = world.client.post(path, json=body, headers=world.headers("supervisor-all"))
        assert response.status_code == 201, response.text
        made.append(response.json())
        return UUID(response.json()["aggregate_id"])

    plan = post("/plans", {"client_id": client_id, "title": "Low mood", "strategy": "short_term_moderate",
                           "therapy_models": ["steady_progress"]})
    course = post("/courses", {"plan_id": str(plan), "modality": "interpersonal", "planned_sessions": 12})
    inventory = post("/inventories", {"plan_id": str(plan)})
    escalation, assessment = world.api.escalation, world.api.assessment
    ctx = CommandContext(actor=escalation.actor, at=datetime.now(tz=UTC), correlation_id=uuid4())
    crisis, listed = (Crisis.raise_(plan_id=plan, client_id=client_id, trigger=EscalationTrigger.PHQ9_SUICIDE_ITEM,
                                    source_event_id=str(uuid4()), reason="PHQ-9 item 9 positive",
                                    policy=escalation.policy, ctx=ctx) for _ in range(2))
    escalation.save(crisis, listed)
    sequence = 1 + sum(1 for _ in world.of)
    letter = DeadLetter.record(ctx=ctx.model_copy(update={"actor": assessment.actor}), service="assessment",
                               subject="care.clinical.v1.x", stream_sequence=sequence,
                               failed_event_type="QuestionnaireSubmitted", error_class="ValueError", attempts=5,
                               risk_signal=False, plan_id=plan, client_id=client_id)
    assessment.save(letter)
    drafted = UUID(made[0]["event_ids"][0])
    # a course that ended, so that the outcomes report lists one course of the client
    ended = post("/courses", {"plan_id": str(plan), "modality": "interpersonal", "planned_sessions": 12})
    stopped = world.client.post(f"/courses/{ended}/discontinue-course", headers=world.headers("supervisor-all"),
                                json={"reason": "Moved away"})
    assert stopped.status_code == 200, stopped.text
    world.ended[client_id] = ended
    subscribed = world.client.post("/subscriptions", headers=world.headers("supervisor-all"), json={
        "endpoint": "https://ehr.example/hook", "filter": "care.clinical.>", "clients": [client_id]})
    assert subscribed.status_code == 201, subscribed.text
    fhir_subscribed = []
    for _ in range(2):
        response = world.client.post("/fhir/Subscription", json=body_of("fhirSubscriptionCreate", None, client_id),
                                     headers=world.headers("supervisor-all"))
        assert response.status_code == 201, response.text
        fhir_subscribed.append(UUID(response.json()["id"]))
    return Records(plan, course, inventory, crisis.id, letter.id, drafted, listed.id, UUID(subscribed.json()["id"]),
                   *fhir_subscribed)


# ------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    body: Any


def nowhere() -> tuple[Records, str]:
    """Ids of records, and a client, that do not exist."""
    return Records(*(uuid4() for _ in range(10))), f"client-{uuid4().hex[:8]}"


#: What a mounted route's request is (a mount has no methods of its own).
MOUNTED = {"docs-assets": Call("GET", "/docs/assets/swagger-ui.css", None), "ui": Call("GET", "/ui/caseload", None)}


def call(route: Any, r: Records, client_id: str) -> Call:
    """The route's request on ``client_id``'s records ``r``."""
    if route.name in MOUNTED:
        return MOUNTED[route.name]
    plan, course = r.plan, r.course
    url = (route.path.replace("{plan_id}", str(plan)).replace("{course_id}", str(course))
           .replace("{inventory_id}", str(r.inventory)).replace("{crisis_id}", str(r.crisis))
           .replace("{dead_letter_id}", str(r.dead_letter)).replace("{aggregate_id}", str(plan))
           .replace("{subscription_id}", str(r.subscription))
           .replace("{event_id}", str(r.event)).replace("{client_id}", client_id)
           .replace("{version}", "1").replace("{code}", "not-found")
           .replace("{fhir_subscription_id}", str(r.fhir_subscription)).replace("{request_id}", str(uuid4())))
    url += {
        "fhirGoal": f"?careplan={plan}", "fhirRiskAssessment": f"?careplan={plan}", "fhirFlag": f"?careplan={plan}",
        "fhirAppointment": f"?course={course}", "fhirQuestionnaireResponse": f"?course={course}",
        "fhirObservation": f"?course={course}", "fhirProvenance": f"?target=CarePlan/{plan}", "auditDiff": "?from=1&to=1",
    }.get(route.name, "")
    method = next(m for m in ("POST", "DELETE", "GET") if m in route.methods)
    return Call(method, url, body_of(route.name, r, client_id) if method == "POST" else None)


def body_of(name: str, records: Records | None, client_id: str) -> Any:
    if name == "fhirSubscriptionCreate":  # a backport-profile Subscription to the client's scores
        backport = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
        return {"resourceType": "Subscription", "status": "requested", "reason": "In-basket",
                "criteria": "http://careplan.local/fhir/SubscriptionTopic/questionnaire-scored",
                "_criteria": {"extension": [{"url": backport + "backport-filter-criteria",
                                             "valueString": f"Observation?patient=Patient/{client_id}"}]},
                "channel": {"type": "rest-hook", "endpoint": "http://127.0.0.1:9/hook", "payload": "application/fhir+json",
                            "_payload": {"extension": [{"url": backport + "backport-payload-content",
                                                        "valueCode": "id-only"}]}}}
    assert records is not None
    plan = records.plan
    if name == "DraftCarePlan":
        return {"client_id": client_id, "title": "T", "strategy": "short_term_moderate",
                "therapy_models": ["steady_progress"]}
    if name in ("StartCourse", "OpenInventory"):
        return {"plan_id": str(plan)} | ({"modality": "interpersonal", "planned_sessions": 12}
                                         if name == "StartCourse" else {})
    if name == "acknowledgeCrisis":
        return {"reason": "Phoned"}
    if name == "resolveCrisis":
        return {"outcome": "Safe", "reason": "Reassessed"}
    if name in ("redriveDeadLetter", "setLegalHold", "releaseLegalHold", "requestErasure"):
        return {"reason": "Fixed"}
    if name == "confirmErasure":
        return None
    if name == "createSubscription":
        return {"endpoint": "https://ehr.example/hook", "filter": "care.>", "clients": [client_id]}
    if name == "resendSubscription":
        return {"from_number": 1}
    if name == "rotateSubscriptionSecret":
        return None
    command = getattr(c, name)
    body = example_body(command, next(f for f in ("plan_id", "course_id", "inventory_id") if f in command.model_fields))
    # a command naming another record of the client (EnterMiddlePhase: the inventory) names the real one
    return body | {f: str(getattr(records, f.removesuffix("_id"))) for f in ("plan_id", "course_id", "inventory_id")
                   if f in body}


def unnamed(problem: dict[str, Any], records: Records, client_id: str) -> dict[str, Any]:
    """The problem with the ids the request named replaced by their names."""
    text = json.dumps(problem)
    for name, value in (*vars(records).items(), ("client", client_id)):
        text = text.replace(str(value), f"<{name}>")
    return json.loads(text)


def send(world: World, request: Call, caller: str) -> Any:
    return world.client.request(request.method, request.url, json=request.body, headers=world.headers(caller))


def routes(world: World) -> dict[str, Any]:
    return {route.name: route for route in world.client.app.routes}  # type: ignore[attr-defined]


# ------------------------------------------------------------------- tests


def test_every_route_has_an_expectation_and_every_expectation_a_route(world: World) -> None:
    served = routes(world)
    assert len(served) == len(world.client.app.routes), "two routes share a name"  # type: ignore[attr-defined]
    assert sorted(set(served) - set(EXPECTED)) == [], "routes without a line in EXPECTED: declare who may call them"
    assert sorted(set(EXPECTED) - set(served)) == [], "lines in EXPECTED for routes the API no longer has"
    commands = {cls.__name__ for base in (c.PlanCommand, c.CourseCommand, c.InventoryCommand)
                for cls in all_subclasses(base) if "execute" in cls.__dict__}
    assert commands | {"DraftCarePlan", "StartCourse", "OpenInventory"} <= set(served), "a command has no route"


def all_subclasses(cls: type[Any]) -> list[type[Any]]:
    return [s for sub in cls.__subclasses__() for s in (sub, *all_subclasses(sub))]


def test_no_other_role_can_hold_a_token(tmp_path: Path) -> None:
    """The operator (a person at the machine) and the services have no API token: the matrix's
    roles are all there are."""
    assert set(API_ROLES) == {C, S, I, AU}
    for role in set(Role) - set(API_ROLES):
        with pytest.raises(ValueError, match="cannot hold an API token"):
            add_token(tmp_path / "tokens.json", actor_id="x", role=role, clients=("*",))


def refused(response: Any, status: int, kind: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == f"/problems/{kind}", response.text


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_route_answers_each_caller_as_declared(world: World, name: str) -> None:
    route = routes(world).get(name)
    assert route is not None, f"no route {name}"
    rule = EXPECTED[name]
    own, other = call(route, world.of[A], A), call(route, world.of[B], B)

    if rule.scope == "session":  # a bearer token, valid or not, signs nobody in: the page asks for a sign-in
        for caller in ("none", "unknown", "revoked", "clinician-a", "supervisor-all", "auditor-all"):
            response = world.client.request(own.method, own.url, headers=world.headers(caller), follow_redirects=False)
            assert response.status_code == 303, (name, caller, response.status_code)
            assert response.headers["location"].startswith("/ui/login"), (name, caller, response.headers)
        return

    if rule.scope == "public":
        for caller in ("none", "unknown", "revoked", "clinician-a", "auditor-all"):
            response = send(world, own, caller)
            assert response.status_code in (200, 503), (name, caller, response.status_code, response.text)
        return

    for caller in UNAUTHENTICATED:
        before = world.written()
        response = send(world, own, caller)
        refused(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert world.written() == before, f"{name} without a valid token ({caller}) wrote something"

    for role in API_ROLES:
        if role not in rule.roles:
            for caller in (caller_name(role, "a"), caller_name(role, "all")):
                before = world.written()
                refused(send(world, own, caller), 403, "forbidden")
                assert world.written() == before, f"{name} by {caller} wrote something although refused"
            continue
        # allowed: the record's client (a scoped token, an all-clients one) gets past the door
        for caller, request in ((caller_name(role, "a"), own), (caller_name(role, "all"), own),
                                (caller_name(role, "all"), other)):
            response = send(world, request, caller)
            assert response.status_code < 500, (name, caller, response.text)
            assert response.status_code not in (401, 403), (name, caller, response.text)
            if response.status_code == 404:
                assert response.json()["type"] != "/problems/not-found", (name, caller, response.text)
            if rule.scope == "filtered":
                listed, mine, theirs = listing(name, response.json(), world)
                if name == "caseload" and role is C:  # a clinician's caseload: the plans they drafted, no other
                    assert not listed & (mine | theirs), (name, caller, "another clinician's plan in a caseload")
                    continue
                assert listed & mine, (name, caller, "the token's own client's record is not listed")
                assert bool(listed & theirs) is caller.endswith("-all"), (name, caller, "another client's record")
        if rule.scope in ("none", "filtered"):
            continue
        # another client's record, with a token scoped to client A
        caller = caller_name(role, "a")
        before = world.written()
        response = send(world, other, caller)
        if rule.scope == "forbidden":
            refused(response, 403, "forbidden")
        else:  # hidden: the same answer as for a record that does not exist
            absent, absent_client = nowhere()
            missing = send(world, call(route, absent, absent_client), caller_name(role, "all"))
            refused(missing, 404, "not-found")
            refused(response, 404, "not-found")
            assert unnamed(response.json(), world.of[B], B) == unnamed(missing.json(), absent, absent_client), \
                "another client's record answers otherwise than a missing one"
        assert world.written() == before, f"{name} by {caller} on another client's record wrote something"


def listing(name: str, answer: Any, world: World) -> tuple[set[str], set[str], set[str]]:
    """The ids a list route answered, and those of client A's and client B's records it may hold."""
    if name in ("caseload", "listPlans"):
        return ({item["plan_id"] for item in answer["items"]}, {str(world.of[A].plan)}, {str(world.of[B].plan)})
    if name == "listSubscriptions":
        return ({item["id"] for item in answer}, {str(world.of[A].subscription)}, {str(world.of[B].subscription)})
    if name == "outcomes":
        return ({item["course_id"] for item in answer["courses"]}, {str(world.ended[A])}, {str(world.ended[B])})
    if name == "fhirSubscriptionSearch":
        return ({entry["resource"]["id"] for entry in answer.get("entry", [])}, {str(world.of[A].listed_fhir_subscription)},
                {str(world.of[B].listed_fhir_subscription)})
    return ({item["id"] for item in answer}, {str(world.of[A].listed), str(world.of[A].dead_letter)},
            {str(world.of[B].listed), str(world.of[B].dead_letter)})


@pytest.mark.parametrize("name", ["RecordCrisisResolved", "ActivateEmergencySupport"])
def test_a_crisis_of_another_client_named_in_a_command_answers_as_a_missing_one(world: World, name: str) -> None:
    """The crisis repairs on a plan name a crisis in their body: a supervisor of client A who
    names client B's open crisis learns no more than from an id that does not exist."""
    plan = world.client.post("/plans", json=body_of("DraftCarePlan", world.of[A], A),
                             headers=world.headers("supervisor-all")).json()["aggregate_id"]
    path = f"/plans/{plan}/{'record-crisis-resolved' if name == 'RecordCrisisResolved' else 'activate-emergency-support'}"
    answers = []
    for crisis in (world.of[B].listed, uuid4()):
        before = world.written()
        body = {"crisis_id": str(crisis), "outcome": "Safe"} if name == "RecordCrisisResolved" else {"crisis_id": str(crisis)}
        response = world.client.post(path, json=body, headers=world.headers("supervisor-a"))
        assert 400 <= response.status_code < 500 and world.written() == before, response.text
        answers.append((response.status_code, json.loads(json.dumps(response.json()).replace(str(crisis), "<crisis>"))))
    assert answers[0] == answers[1], "another client's open crisis answers otherwise than a missing one"
