"""The HTTP API: scope of crisis and dead-letter decisions, problem details, versions, idempotency,
fuzzed bodies (who may call which route: test_authorization_matrix.py)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.base import Actor, Role
from services.api.app import Api, create_app
from services.api.auth import TokenRegistry, add_token
from services.assessment.service import AssessmentApplication
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.escalation.service import EscalationApplication
from services.shared.settings import Settings
from tests.support.bodies import example_body

CLIENT = "client-1"
#: name → (role, clients)
CALLERS: dict[str, tuple[Role, tuple[str, ...]]] = {
    "clinician": (Role.CLINICIAN, (CLIENT,)),
    "other-clinician": (Role.CLINICIAN, ("client-2",)),
    "supervisor": (Role.SUPERVISOR, ("*",)),
    "other-supervisor": (Role.SUPERVISOR, ("client-2",)),
    "auditor": (Role.AUDITOR, ("*",)),
    "integration": (Role.INTEGRATION, ("*",)),
}


@dataclass
class Setup:
    client: TestClient
    care: CareApplication
    escalation: EscalationApplication
    assessment: AssessmentApplication
    tokens: dict[str, str]
    plan: UUID
    course: UUID
    inventory: UUID

    def headers(self, caller: str | None, **extra: str) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self.tokens[caller]}"} if caller else {}
        return {**auth, **extra}

    def close(self) -> None:
        for app in (self.care, self.escalation, self.assessment):
            app.close()

    def written(self) -> tuple[int, int]:
        return (self.care.recorder.max_notification_id() or 0, self.escalation.recorder.max_notification_id() or 0)

    def post(self, path: str, body: Any, caller: str | None, **headers: str) -> Any:
        return self.client.post(path, json=body, headers=self.headers(caller, **headers))


def make_setup(data_dir: Path, base: Settings | None = None) -> Setup:
    settings = (base or Settings()).model_copy(update={"data_dir": data_dir})
    token_file = data_dir / "tokens.json"
    tokens = {
        name: add_token(token_file, actor_id=f"{name}-1", role=role, clients=clients)
        for name, (role, clients) in CALLERS.items()
    }
    care, escalation, assessment = CareApplication(settings), EscalationApplication(settings), AssessmentApplication(settings)
    client = TestClient(create_app(Api(care, TokenRegistry.load(token_file), escalation, assessment)),
                        raise_server_exceptions=False)
    setup = Setup(client, care, escalation, assessment, tokens, UUID(int=0), UUID(int=0), UUID(int=0))
    made = setup.post("/plans", {"client_id": CLIENT, "title": "Low mood", "strategy": "short_term_moderate",
                                 "therapy_models": ["steady_progress"]}, "clinician")
    setup.plan = UUID(made.json()["aggregate_id"])
    setup.course = UUID(setup.post("/courses", {"plan_id": str(setup.plan), "modality": "interpersonal",
                                                "planned_sessions": 12}, "clinician").json()["aggregate_id"])
    setup.inventory = UUID(setup.post("/inventories", {"plan_id": str(setup.plan)}, "clinician").json()["aggregate_id"])
    return setup


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Setup]:
    setup = make_setup(tmp_path)
    yield setup
    setup.close()


# --------------------------------------------------------------------------- bodies


def body_for(route: APIRoute, setup: Setup) -> Any:
    if route.name == "DraftCarePlan":
        return {"client_id": CLIENT, "title": "T", "strategy": "short_term_moderate", "therapy_models": ["steady_progress"]}
    if route.name in ("StartCourse", "OpenInventory"):
        body: dict[str, Any] = {"plan_id": str(setup.plan)}
        return body | ({"modality": "interpersonal", "planned_sessions": 12} if route.name == "StartCourse" else {})
    if route.name == "acknowledgeCrisis":
        return {"reason": "Phoned"}
    if route.name == "resolveCrisis":
        return {"outcome": "Safe", "reason": "Reassessed"}
    command = getattr(c, route.name, None)
    if command is None:
        return None
    target = next(f for f in ("plan_id", "course_id", "inventory_id") if f in command.model_fields)
    return example_body(command, target)


def url_for(route: APIRoute, setup: Setup) -> str:
    return (route.path.replace("{plan_id}", str(setup.plan)).replace("{course_id}", str(setup.course))
            .replace("{inventory_id}", str(setup.inventory)).replace("{crisis_id}", str(uuid4()))
            .replace("{code}", "concurrency-conflict").replace("{version}", "1")
            .replace("{aggregate_id}", str(setup.plan)).replace("{event_id}", str(uuid4()))
            .replace("{client_id}", CLIENT)
            + FHIR_SEARCH.get(route.name, "").format(plan=setup.plan, course=setup.course) + AUDIT_QUERY.get(route.name, ""))


AUDIT_QUERY = {"auditDiff": "?from=1&to=2"}

FHIR_SEARCH = {
    "fhirGoal": "?careplan={plan}", "fhirRiskAssessment": "?careplan={plan}", "fhirFlag": "?careplan={plan}",
    "fhirAppointment": "?course={course}", "fhirQuestionnaireResponse": "?course={course}",
    "fhirObservation": "?course={course}", "fhirProvenance": "?target=CarePlan/{plan}",
}


def api_routes(setup: Setup) -> list[APIRoute]:
    return [r for r in setup.client.app.routes if isinstance(r, APIRoute)]


# --------------------------------------------------------------------------- tests


def _all_subclasses(cls: type[Any]) -> list[type[Any]]:
    return [s for sub in cls.__subclasses__() for s in (sub, *_all_subclasses(sub))]


def raise_crisis(setup: Setup, client_id: str | None) -> UUID:
    """A crisis as the escalation service records it (its id derives from the triggering event's)."""
    from datetime import UTC, datetime

    from domain.base import CommandContext
    from domain.catalogues.escalation import EscalationTrigger
    from domain.escalation.crisis import Crisis

    ctx = CommandContext(actor=setup.escalation.actor, at=datetime.now(tz=UTC), correlation_id=uuid4())
    crisis = Crisis.raise_(plan_id=setup.plan, client_id=client_id, trigger=EscalationTrigger.PHQ9_SUICIDE_ITEM,
                           source_event_id=str(uuid4()), reason="PHQ-9 item 9 positive", policy=setup.escalation.policy,
                           ctx=ctx)
    setup.escalation.save(crisis)
    return crisis.id


@pytest.mark.parametrize("action", ["acknowledge", "resolve"])
def test_crisis_decisions_keep_to_the_tokens_clients(api: Setup, action: str) -> None:
    """A supervisor scoped to another client gets the same 404 as for no crisis, and nothing
    is recorded; in scope (or all clients) the decision is recorded. A crisis whose client
    is unknown is for all-clients tokens only."""
    body = {"reason": "Phoned"} if action == "acknowledge" else {"outcome": "Safe", "reason": "Reassessed"}
    crisis = raise_crisis(api, CLIENT)
    unknown = raise_crisis(api, None)
    missing = api.post(f"/escalations/{uuid4()}/{action}", body, "other-supervisor")
    for target in (crisis, unknown):
        before = api.written()
        refused = api.post(f"/escalations/{target}/{action}", body, "other-supervisor")
        assert refused.status_code == 404 == missing.status_code, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"] == missing.json()["type"] == "/problems/not-found"
        assert CLIENT not in refused.text and str(api.plan) not in refused.text
        assert api.written() == before, "an out-of-scope decision wrote something"
    listed = api.client.get("/escalations", headers=api.headers("other-supervisor")).json()
    assert {c["id"] for c in listed} & {str(crisis), str(unknown)} == set()
    assert {c["id"] for c in api.client.get("/escalations", headers=api.headers("supervisor")).json()} >= \
        {str(crisis), str(unknown)}
    for target in (crisis, unknown):
        done = api.post(f"/escalations/{target}/{action}", body, "supervisor")
        assert done.status_code == 200, done.text
        assert done.json()["status"] == ("acknowledged" if action == "acknowledge" else "resolved")


def test_an_acknowledgement_racing_the_timer_is_retried_once_then_409(api: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """The escalation service (another process on the same store) times the crisis out to
    the next level between the API's load and save: the acknowledgement is taken on the
    crisis as it now is. Losing twice answers a 409 problem detail, and the API records nothing."""
    from datetime import timedelta

    from eventsourcing.persistence import IntegrityError

    from domain.escalation.crisis import Crisis

    service = EscalationApplication(api.escalation.settings)
    try:
        crisis = raise_crisis(api, CLIENT)
        real_get, races = api.escalation._get, [0]

        def timer_writes_meanwhile(cls: Any, aggregate_id: UUID, version: int | None = None) -> Any:
            loaded = real_get(cls, aggregate_id, version)
            if races[0]:
                races[0] -= 1
                current = service.find(Crisis, crisis)
                assert service._time_out(crisis, current.ack_due + timedelta(seconds=1)).recorded
            return loaded

        monkeypatch.setattr(api.escalation, "_get", timer_writes_meanwhile)
        races[0] = 1
        won = api.post(f"/escalations/{crisis}/acknowledge", {"reason": "Phoned"}, "supervisor")
        assert won.status_code == 200, won.text
        kinds = [type(e).__name__ for e in api.escalation.events.get(crisis)]
        assert kinds[-3:] == ["EscalationTimedOut", "EscalationLevelNotified", "EscalationAcknowledged"]

        second = raise_crisis(api, CLIENT)
        crisis = second
        races[0] = 2
        lost = api.post(f"/escalations/{second}/acknowledge", {"reason": "Phoned"}, "supervisor")
        assert lost.status_code == 409, lost.text
        assert lost.headers["content-type"] == "application/problem+json"
        assert lost.json()["type"] == "/problems/concurrency-conflict"
        assert "EscalationAcknowledged" not in [type(e).__name__ for e in api.escalation.events.get(second)]

        # a conflict the store reports as such (not mapped on its way) is a 409 too, never a 500
        monkeypatch.setattr(api.escalation, "handle", lambda *a, **k: (_ for _ in ()).throw(IntegrityError("unique")))
        raw = api.post(f"/escalations/{raise_crisis(api, CLIENT)}/resolve", {"outcome": "Safe"}, "supervisor")
        assert raw.status_code == 409 and raw.json()["type"] == "/problems/concurrency-conflict", raw.text
    finally:
        service.close()


def test_dead_letters_keep_to_the_tokens_clients(api: Setup) -> None:
    """A supervisor scoped to another client neither sees, reads nor redrives a dead letter of
    this client (404 as for none, nothing recorded); one whose client is unknown is for
    all-clients tokens only."""
    from datetime import UTC, datetime

    from domain.base import CommandContext
    from domain.operations.dead_letter import DeadLetter
    from services.operations.dead_letters import DeadLetterDesk

    def dead_letter(sequence: int, client_id: str | None) -> UUID:
        ctx = CommandContext(actor=api.assessment.actor, at=datetime.now(tz=UTC), correlation_id=uuid4())
        letter = DeadLetter.record(ctx=ctx, service="assessment", subject="care.clinical.v1.x", stream_sequence=sequence,
                                   failed_event_type="QuestionnaireSubmitted", error_class="ValueError", attempts=5,
                                   risk_signal=False, plan_id=api.plan, client_id=client_id)
        api.assessment.save(letter)
        return letter.id

    own, unknown = dead_letter(1, CLIENT), dead_letter(2, None)
    desk = DeadLetterDesk(api.assessment.settings)
    served = Api(api.care, TokenRegistry.load(api.care.settings.data_dir / "tokens.json"), api.escalation)
    served.dead_letters = desk
    app = create_app(served)
    client = TestClient(app, raise_server_exceptions=False)
    try:
        def get(path: str, caller: str) -> Any:
            return client.get(path, headers=api.headers(caller))

        assert {d["id"] for d in get("/deadletters", "supervisor").json()} == {str(own), str(unknown)}
        assert get("/deadletters", "other-supervisor").json() == []
        missing = get(f"/deadletters/{uuid4()}", "other-supervisor")
        for letter in (own, unknown):
            before = (api.assessment.recorder.max_notification_id(), *api.written())
            shown = get(f"/deadletters/{letter}", "other-supervisor")
            redrive = client.post(f"/deadletters/{letter}/redrive", json={"reason": "Fixed"},
                                  headers=api.headers("other-supervisor"))
            for refused in (shown, redrive):
                assert refused.status_code == 404 == missing.status_code, refused.text
                assert refused.json()["type"] == missing.json()["type"] == "/problems/not-found"
            assert (api.assessment.recorder.max_notification_id(), *api.written()) == before
            assert get(f"/deadletters/{letter}", "supervisor").status_code == 200
    finally:
        desk.close()


def test_the_actor_comes_from_the_token_never_from_the_body(api: Setup) -> None:
    response = api.post(f"/plans/{api.plan}/add-goal", {"description": "Walk daily", "actor": {"id": "x", "role": "supervisor"}},
                        "clinician")
    assert response.status_code == 422  # unknown fields are refused, not ignored
    response = api.post(f"/plans/{api.plan}/add-goal", {"description": "Walk daily"}, "clinician")
    assert response.status_code == 200
    last = list(api.care.history(api.plan))[-1]
    assert (last.actor.id, last.actor.role) == ("clinician-1", Role.CLINICIAN)


def test_reads_carry_the_version_and_a_stale_write_is_refused_with_nothing_written(api: Setup) -> None:
    read = api.client.get(f"/plans/{api.plan}", headers=api.headers("clinician"))
    assert read.status_code == 200 and read.headers["etag"] == '"1"'
    assert api.client.get(f"/plans/{api.plan}", headers=api.headers("clinician", **{"If-None-Match": '"1"'})).status_code == 304
    first = api.post(f"/plans/{api.plan}/record-consent", {}, "clinician", **{"If-Match": '"1"'})
    assert first.status_code == 200 and first.headers["etag"] == '"2"'
    before = api.written()
    stale = api.post(f"/plans/{api.plan}/explain-confidentiality", {}, "clinician", **{"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json()["type"] == "/problems/concurrency-conflict"
    assert api.written() == before
    assert api.client.get(f"/plans/{api.plan}?version=1", headers=api.headers("clinician")).json()["version"] == 1
    bad = api.post(f"/plans/{api.plan}/explain-confidentiality", {}, "clinician", **{"If-Match": "yesterday"})
    assert bad.status_code == 400 and api.written() == before


def test_domain_errors_are_problem_details_with_a_stable_type(api: Setup) -> None:
    before = api.written()
    response = api.post(f"/plans/{api.plan}/activate-plan", None, "clinician")
    assert response.status_code == 409
    problem = response.json()
    assert problem["type"] == "/problems/alliance-incomplete" and problem["status"] == 409 and problem["detail"]
    described = api.client.get(problem["type"])
    assert described.status_code == 200 and described.json()["type"] == problem["type"]
    missing = api.client.get(f"/plans/{uuid4()}", headers=api.headers("supervisor"))
    assert missing.status_code == 404 and missing.json()["type"] == "/problems/not-found"
    invalid = api.post(f"/plans/{api.plan}/raise-risk", {"level": "apocalyptic"}, "clinician")
    assert invalid.status_code == 422 and invalid.json()["errors"]
    assert api.written() == before


def test_the_same_command_twice_with_one_key_records_it_once(api: Setup) -> None:
    body = {"description": "Walk every morning"}
    first = api.post(f"/plans/{api.plan}/add-goal", body, "clinician", **{"Idempotency-Key": "goal-walk"})
    again = api.post(f"/plans/{api.plan}/add-goal", body, "clinician", **{"Idempotency-Key": "goal-walk"})
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and again.headers["idempotent-replayed"] == "true"
    assert sum(type(e).__name__ == "GoalAdded" for e in api.care.history(api.plan)) == 1
    created = [api.post("/plans", {"client_id": CLIENT, "title": "Once", "strategy": "short_term_moderate",
                                   "therapy_models": ["steady_progress"]}, "clinician", **{"Idempotency-Key": "plan-once"})
               for _ in range(2)]
    assert [r.status_code for r in created] == [201, 201] and created[0].json() == created[1].json()
    location = created[0].headers["location"]
    assert location == f"/plans/{created[0].json()['aggregate_id']}"
    assert api.client.get(location, headers=api.headers("clinician")).json()["title"] == "Once"
    # another caller's key is another command
    other = api.post(f"/plans/{api.plan}/add-goal", body, "supervisor", **{"Idempotency-Key": "goal-walk"})
    assert other.json()["event_ids"] != first.json()["event_ids"]


def _at_once(n: int, send: Any) -> list[Any]:
    barrier, results = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = send(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_concurrent_writers_one_version_one_key(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> None:
    base = Settings()
    if backend == "postgres":
        from tests.conftest import drop_schemas, postgres_settings

        request.getfixturevalue("postgres_available")
        base = postgres_settings(tmp_path)
        request.addfinalizer(lambda: drop_schemas(base))
    setup = make_setup(tmp_path, base)
    try:
        version = setup.client.get(f"/plans/{setup.plan}", headers=setup.headers("clinician")).headers["etag"]
        statuses = _at_once(2, lambda i: setup.post(f"/plans/{setup.plan}/add-goal", {"description": f"Goal {i}"},
                                                    "clinician", **{"If-Match": version}).status_code)
        assert sorted(statuses) == [200, 412]
        assert sum(type(e).__name__ == "GoalAdded" for e in setup.care.history(setup.plan)) == 1
        replies = _at_once(4, lambda i: setup.post(f"/plans/{setup.plan}/target-coping-skill", {"skill": "communication"},
                                                   "clinician", **{"Idempotency-Key": "skill-1"}))
        assert {r.status_code for r in replies} == {200} and len({json.dumps(r.json()) for r in replies}) == 1
        assert sum(type(e).__name__ == "CopingSkillTargeted" for e in setup.care.history(setup.plan)) == 1
    finally:
        setup.close()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def test_fuzzed_bodies_never_cause_a_server_error_or_a_partial_write(tmp_path: Path) -> None:
    setup = make_setup(tmp_path)
    routes = [r for r in api_routes(setup) if "POST" in r.methods]
    field_names = sorted({n for cls in _all_subclasses(c.Command) + _all_subclasses(c.CreationCommand)
                          for n in cls.model_fields})
    bodies = st.one_of(
        json_values,
        st.dictionaries(st.sampled_from(field_names), json_values, max_size=6),
    )

    edge_texts = st.sampled_from(["", " ", "x" * 5000, "\u0000", "'; DROP TABLE stored_events; --", "🙂" * 300, "-1"])

    @settings(max_examples=500, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(routes), st.data(), st.sampled_from(["clinician", "supervisor", "integration"]))
    def fuzz(route: APIRoute, data: st.DataObject, caller: str) -> None:
        if data.draw(st.booleans()):
            body = data.draw(bodies)  # anything at all
        else:  # a valid body with some fields replaced: reaches the domain's own checks
            body = dict(body_for(route, setup) or {})
            for name in data.draw(st.lists(st.sampled_from(sorted(body) or ["reason"]), max_size=2)):
                body[name] = data.draw(json_values | edge_texts)
        before = setup.written()
        events_before = len(list(setup.care.history(setup.plan)))
        response = setup.client.post(url_for(route, setup), json=body, headers=setup.headers(caller))
        assert response.status_code < 500, (route.name, body, response.text)
        if response.status_code >= 400:
            assert setup.written() == before, (route.name, body, response.status_code)
            assert response.headers["content-type"] == "application/problem+json"
        else:
            assert len(response.json()["event_ids"]) >= 1
            assert len(list(setup.care.history(setup.plan))) >= events_before

    try:
        fuzz()
    finally:
        setup.close()


def test_fhir_views_validate_and_carry_the_codes_hospitals_expect(api: Setup) -> None:
    """Every view is built with fhir.resources (so it validates); re-validated here from
    the JSON that was served. PHQ-9 totals carry LOINC 44261-6 and derivedFrom."""
    from fhir.resources.R4B import get_fhir_model_class

    from domain.events.therapy_course import CourseStarted, QuestionnaireSubmitted
    from tests.support.reactions import inbound_of

    h = api.headers("clinician")
    for path, body in ((f"/plans/{api.plan}/explain-confidentiality", {}), (f"/plans/{api.plan}/add-goal", {"description": "Sleep"}),
                       (f"/plans/{api.plan}/raise-risk", {"level": "high", "reason": "Disclosed a plan on the phone"}),
                       (f"/courses/{api.course}/schedule-session", {"scheduled_for": "2026-05-04T09:00:00+00:00",
                                                                   "duration_minutes": 50}),
                       (f"/courses/{api.course}/submit-questionnaire", {"instrument": "PHQ-9", "answers": [2] * 9,
                                                                       "answered_at": "2026-05-04T09:00:00+00:00"})):
        assert api.post(path, body, "clinician").status_code == 200, path
    # emergency support, as the care policies enter it when escalation raises a crisis
    api.care.handle(c.ActivateEmergencySupport(plan_id=api.plan, crisis_id=uuid4(), reason="Disclosed a plan on the phone"),
                    CommandMeta(actor=Actor(id="care-policies", role=Role.SERVICE)))
    course = api.care.get_course(api.course)
    submission = course.submissions[0]
    # the assessment service's decision, as it would record it from the stream
    assessment = api.assessment
    if True:
        history = list(api.care.history(api.course))
        decided = [next(e for e in history if isinstance(e, cls)) for cls in (CourseStarted, QuestionnaireSubmitted)]
        for position, event in enumerate(decided, 1):
            assessment.record_run(assessment.decide, [inbound_of(event, position=position)], [])
        seen: dict[str, Any] = {}
        for url in (f"/fhir/CarePlan/{api.plan}", f"/fhir/CarePlan/{api.plan}/_history", f"/fhir/CarePlan/{api.plan}/_history/1",
                    f"/fhir/Goal?careplan={api.plan}", f"/fhir/RiskAssessment?careplan={api.plan}", f"/fhir/Flag?careplan={api.plan}",
                    f"/fhir/Appointment?course={api.course}", f"/fhir/QuestionnaireResponse?course={api.course}",
                    f"/fhir/Observation?course={api.course}", f"/fhir/Provenance?target=CarePlan/{api.plan}"):
            response = api.client.get(url, headers=h)
            assert response.status_code == 200, (url, response.text)
            assert response.headers["content-type"].startswith("application/fhir+json")
            resource = response.json()
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            for entry in resource.get("entry", []):
                get_fhir_model_class(entry["resource"]["resourceType"]).model_validate(entry["resource"])
            seen[url.split("?")[0]] = resource
    observation = seen["/fhir/Observation"]["entry"][0]["resource"]
    assert observation["code"]["coding"][0] == {"system": "http://loinc.org", "code": "44261-6",
                                                 "display": "Patient Health Questionnaire 9 item (PHQ-9) total score"}
    assert observation["category"][0]["coding"][0]["code"] == "survey" and observation["valueInteger"] == 18
    assert observation["derivedFrom"] == [{"reference": f"QuestionnaireResponse/{submission.id}"}]
    assert seen["/fhir/QuestionnaireResponse"]["entry"][0]["resource"]["id"] == str(submission.id)
    assert seen["/fhir/Flag"]["total"] == 1 and seen["/fhir/Flag"]["entry"][0]["resource"]["status"] == "active"
    risk = seen["/fhir/RiskAssessment"]["entry"][0]["resource"]
    assert risk["prediction"][0]["qualitativeRisk"]["text"] == "high"
    history = seen[f"/fhir/CarePlan/{api.plan}/_history"]
    assert history["type"] == "history" and history["total"] == api.care.get_plan(api.plan).version
    provenance = seen["/fhir/Provenance"]["entry"]
    assert any(p["resource"].get("reason", [{}])[0].get("text") == "Disclosed a plan on the phone" for p in provenance)
    assert {p["resource"]["agent"][0]["who"]["reference"] for p in provenance} == {
        "Practitioner/clinician-1", "Device/care-policies"}
    # an integration system may read; an auditor may not
    assert api.client.get(f"/fhir/CarePlan/{api.plan}", headers=api.headers("integration")).status_code == 200
    assert api.client.get(f"/fhir/CarePlan/{api.plan}", headers=api.headers("auditor")).status_code == 403


def test_auditors_read_through_the_api_with_a_purpose_and_every_read_is_logged(api: Setup) -> None:
    from services.audit.access import AccessLog

    auditor = api.headers("auditor", **{"X-Audit-Purpose": "Complaint 2026-114"})
    history = api.client.get(f"/audit/aggregates/{api.plan}/history", headers=auditor)
    assert history.status_code == 200 and history.json()["events"][0]["event_type"] == "CarePlanDrafted"
    assert history.json()["events"][0]["actor"] == "clinician-1"
    replay = api.client.get(f"/audit/aggregates/{api.plan}/replay?version=1", headers=auditor)
    assert replay.status_code == 200 and replay.json()["version"] == 1
    export = api.client.get(f"/audit/clients/{CLIENT}/export?format=html", headers=auditor)
    assert export.status_code == 200 and "Care history of client client-1" in export.text
    assert api.client.get("/audit/verify", headers=auditor).json()[0]["ok"] is True
    no_purpose = api.client.get(f"/audit/aggregates/{api.plan}/history", headers=api.headers("auditor"))
    assert no_purpose.status_code == 422 and no_purpose.json()["type"] == "/problems/reason-required"
    log = AccessLog(api.care.settings)
    try:
        entries = log.entries()
    finally:
        log.close()
    assert [(e.actor.id, e.function) for e in entries] == [
        ("auditor-1", "history"), ("auditor-1", "replay"), ("auditor-1", "export"), ("auditor-1", "verify")]
    assert {e.purpose for e in entries} == {"Complaint 2026-114"}
