"""FHIR R4 views of the care record (``application/fhir+json``): CarePlan with its versions,
Goal, RiskAssessment, Flag, Appointment, QuestionnaireResponse, Observation, Provenance.
The mapping itself is :mod:`services.api.fhir`."""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from domain.base import Moment
from domain.care_plan import CarePlan
from domain.events.assessment import AssessmentScored
from domain.therapy_course import TherapyCourse
from services.api.auth import Principal
from services.api.dependencies import MAX_VERSION, READERS, Api
from services.api.problems import ApiProblem
from services.api.routes import param, signature
from services.api.routes.commands import COLLECTIONS

FHIR_JSON = "application/fhir+json"


def fhir_response(resource: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(resource.model_dump_json(exclude_none=True), media_type=FHIR_JSON, headers=headers)


def include(router: APIRouter, api: Api, who: Any) -> None:
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

    signature(read_care_plan, [
        param("plan_id", UUID), param("principal", who),
        param("at", Annotated[Moment | None, Query(alias="_at", description="The plan as recorded at this moment "
                                                                          "(RFC 3339, with a time zone).")], None),
    ])
    router.get("/fhir/CarePlan/{plan_id}", tags=["fhir"], summary="FHIR CarePlan (optionally _at a moment)",
               name="fhirCarePlan", response_class=Response)(read_care_plan)

    def care_plan_history(plan_id: UUID, principal: Principal) -> Response:
        plan_for(principal, plan_id)
        return fhir_response(fhir.history_bundle(api.care.history(plan_id)))

    signature(care_plan_history, [param("plan_id", UUID), param("principal", who)])
    router.get("/fhir/CarePlan/{plan_id}/_history", tags=["fhir"], summary="Every version of a FHIR CarePlan",
               name="fhirCarePlanHistory", response_class=Response)(care_plan_history)

    def care_plan_version(plan_id: UUID, version: int, principal: Principal) -> Response:
        plan_for(principal, plan_id)
        return fhir_response(fhir.care_plan(api.care.get_plan(plan_id, version=version)))

    signature(care_plan_version, [param("plan_id", UUID), param("version", Annotated[int, Path(ge=1, le=MAX_VERSION)]),
                                  param("principal", who)])
    router.get("/fhir/CarePlan/{plan_id}/_history/{version}", tags=["fhir"], summary="One version of a FHIR CarePlan",
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

    for path, endpoint, query, summary in (
        ("Goal", goals, CarePlanParam, "Goals of a care plan"),
        ("RiskAssessment", risk, CarePlanParam, "The plan's current risk assessment"),
        ("Flag", crisis_flags, CarePlanParam, "Active crises on a plan"),
        ("Appointment", appointments, CourseParam, "Sessions of a course"),
        ("QuestionnaireResponse", responses, CourseParam, "Questionnaires submitted in a course"),
        ("Observation", observations, CourseParam, "PHQ-9 and GAD-7 totals (LOINC), derived from the responses"),
    ):
        first = next(iter(inspect.signature(endpoint).parameters))
        signature(endpoint, [param(first, query), param("principal", who)])
        router.get(f"/fhir/{path}", tags=["fhir"], summary=summary, name=f"fhir{path}",
                   response_class=Response)(endpoint)
    def subscription_topics(principal: Principal) -> Response:
        from services.subscriptions.fhir.topics import TOPICS, subscription_topic

        api.require(principal, READERS, "read the subscription topics")
        return fhir_response(fhir.searchset([subscription_topic(topic) for topic in TOPICS]))

    signature(subscription_topics, [param("principal", who)])
    router.get("/fhir/SubscriptionTopic", tags=["fhir"], name="fhirSubscriptionTopic", response_class=Response,
               summary="The topics a FHIR R4 Backport Subscription can name (R4B SubscriptionTopic)")(subscription_topics)
    signature(provenance, [
        param("target", Annotated[str, Query(description="CarePlan/<id>, TherapyCourse/<id> or Inventory/<id>")]),
        param("principal", who),
    ])
    router.get("/fhir/Provenance", tags=["fhir"], summary="Who changed a record, when and why",
               name="fhirProvenance", response_class=Response)(provenance)
