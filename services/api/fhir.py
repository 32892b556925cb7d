"""FHIR R4 views of the care record (read-only), built with ``fhir.resources`` so every
resource is validated as it is made.

``fhir.resources`` 8 ships R4B (4.3.0), the technical correction of R4 that kept R4's
resources and elements; the views use only elements present in both. Ids are the
aggregates' own (UUIDs fit FHIR's id pattern); clients are ``Patient/<client id>`` and
actors ``Practitioner/<actor id>`` or ``Device/<service id>`` (pseudonymous, as in the events).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.careplan import CarePlan as FhirCarePlan
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.goal import Goal
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.provenance import Provenance
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from fhir.resources.R4B.riskassessment import RiskAssessment

from domain.assessment.instruments import instrument_named
from domain.assessment.instruments.definition import LoincCodes
from domain.base import DomainEvent, Role, project
from domain.care_plan import CarePlan
from domain.catalogues.care import GoalStatus
from domain.catalogues.risk import RiskLevel
from domain.events.assessment import AssessmentScored
from domain.therapy_course import SessionStatus, TherapyCourse

LOINC = "http://loinc.org"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
GOAL_STATUS = {GoalStatus.PROPOSED: "proposed", GoalStatus.AGREED: "accepted", GoalStatus.ACHIEVED: "completed",
               GoalStatus.ABANDONED: "cancelled"}
APPOINTMENT_STATUS = {SessionStatus.SCHEDULED: "booked", SessionStatus.HELD: "fulfilled",
                      SessionStatus.MISSED: "noshow", SessionStatus.CANCELLED: "cancelled"}
RISK_PROBABILITY = {RiskLevel.NONE: "negligible", RiskLevel.LOW: "low", RiskLevel.MODERATE: "moderate",
                    RiskLevel.HIGH: "high", RiskLevel.IMMINENT: "certain"}
RISK_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"


def _patient(client_id: str) -> dict[str, str]:
    return {"reference": f"Patient/{client_id}"}


def _who(actor: Any) -> dict[str, str]:
    kind = "Device" if actor.role is Role.SERVICE else "Practitioner"
    return {"reference": f"{kind}/{actor.id}", "display": f"{actor.id} ({actor.role.value})"}


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _loinc(instrument: str) -> LoincCodes | None:
    """The instrument's LOINC codes, from its definition; None for one without them."""
    found = instrument_named(instrument)
    return found.loinc if found is not None else None


def care_plan(plan: CarePlan) -> FhirCarePlan:
    return FhirCarePlan.model_validate({
        "resourceType": "CarePlan",
        "id": str(plan.id),
        "meta": {"versionId": str(plan.version), "lastUpdated": _instant(plan.modified_on)},
        "status": plan.status.value,
        "intent": "plan",
        "title": plan.title,
        "description": f"Strategy: {plan.strategy.title}; therapy models: {', '.join(m.title for m in plan.therapy_models)}",
        "subject": _patient(plan.client_id),
        "created": _instant(plan.created_on),
        "goal": [{"reference": f"Goal/{goal_id}"} for goal_id in plan.goals],
        "category": [{"text": plan.strategy.title}],
    })


def goal(plan: CarePlan, goal_id: UUID) -> Goal:
    found = plan.goals[goal_id]
    return Goal.model_validate({
        "resourceType": "Goal",
        "id": str(goal_id),
        "lifecycleStatus": GOAL_STATUS[found.status],
        "description": {"text": found.description},
        "subject": _patient(plan.client_id),
        "addresses": [{"reference": f"CarePlan/{plan.id}"}],
        **({"achievementStatus": {"text": "achieved"}} if found.status is GoalStatus.ACHIEVED else {}),
    })


def _session_end(session: Any) -> datetime | None:
    """None when the end cannot be represented: a session recorded before the door refused
    dates near year 9999 still renders (without its end) instead of failing every read."""
    try:
        return session.scheduled_for + timedelta(minutes=session.duration_minutes)
    except OverflowError:
        return None


def appointments(course: TherapyCourse) -> list[Appointment]:
    return [
        Appointment.model_validate({
            "resourceType": "Appointment",
            "id": str(session.id),
            "status": APPOINTMENT_STATUS[session.status],
            "description": f"{course.modality.value} session {session.number}",
            "start": _instant(session.scheduled_for),
            **({"end": _instant(end)} if (end := _session_end(session)) else {}),
            "minutesDuration": session.duration_minutes,
            "basedOn": [{"reference": f"CarePlan/{course.plan_id}"}],
            "participant": [{"actor": _patient(course.client_id), "status": "accepted"}],
        })
        for session in course.sessions.values()
    ]


def questionnaire_responses(course: TherapyCourse) -> list[QuestionnaireResponse]:
    return [
        QuestionnaireResponse.model_validate({
            "resourceType": "QuestionnaireResponse",
            "id": str(submission.id),
            **({"questionnaire": f"{LOINC}/q/{codes.panel}"} if (codes := _loinc(submission.instrument)) else {}),
            "status": "completed",
            "subject": _patient(course.client_id),
            "authored": _instant(submission.answered_at),
            "basedOn": [{"reference": f"CarePlan/{course.plan_id}"}],
            "item": [
                {"linkId": str(number), **({"answer": [{"valueInteger": answer}]} if answer is not None else {})}
                for number, answer in enumerate(submission.answers, start=1)
            ],
        })
        for submission in course.submissions
    ]


def observations(client_id: str, scores: Iterable[AssessmentScored]) -> list[Observation]:
    """One Observation per scored total of an instrument with LOINC codes (PHQ-9, GAD-7),
    derived from its QuestionnaireResponse."""
    made = []
    for scored in scores:
        codes = _loinc(scored.instrument)
        if codes is None or scored.total is None:
            continue
        made.append(Observation.model_validate({
            "resourceType": "Observation",
            "id": str(scored.event_id),
            "status": "final",
            "category": [{"coding": [{"system": CATEGORY, "code": "survey", "display": "Survey"}]}],
            "code": {"coding": [{"system": LOINC, "code": codes.total, "display": codes.total_display}],
                     "text": f"{scored.instrument} total"},
            "subject": _patient(client_id),
            "effectiveDateTime": _instant(scored.answered_at),
            "issued": _instant(scored.timestamp),
            "valueInteger": scored.total,
            **({"interpretation": [{"text": scored.severity.value}]} if scored.severity is not None else {}),
            "derivedFrom": [{"reference": f"QuestionnaireResponse/{scored.submission_id}"}],
        }))
    return made


def risk_assessment(plan: CarePlan, history: list[DomainEvent]) -> RiskAssessment:
    changes = [e for e in history if type(e).__name__ in ("RiskLevelRaised", "RiskLevelLowered")]
    last = changes[-1] if changes else history[0]
    return RiskAssessment.model_validate({
        "resourceType": "RiskAssessment",
        "id": f"{plan.id}-v{last.originator_version}",
        "status": "final",
        "subject": _patient(plan.client_id),
        "basis": [{"reference": f"CarePlan/{plan.id}"}],
        "occurrenceDateTime": _instant(last.timestamp),
        "performer": _who(last.actor),
        "prediction": [{
            "outcome": {"text": "Suicide or self-harm"},
            "qualitativeRisk": {"coding": [{"system": RISK_SYSTEM, "code": RISK_PROBABILITY[plan.risk_level]}],
                                "text": plan.risk_level.value},
        }],
        **({"note": [{"text": last.reason}]} if last.reason else {}),
    })


def flags(plan: CarePlan, history: list[DomainEvent]) -> list[Flag]:
    """An active Flag per open crisis on the plan."""
    started = {getattr(e, "crisis_id", None): e for e in history if type(e).__name__ == "EmergencySupportActivated"}
    made = []
    for crisis_id in plan.open_crises:
        since = started.get(crisis_id)
        made.append(Flag.model_validate({
            "resourceType": "Flag",
            "id": str(crisis_id),
            "status": "active",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/flag-category",
                                      "code": "safety", "display": "Safety"}]}],
            "code": {"text": "Active crisis: emergency support in force"},
            "subject": _patient(plan.client_id),
            **({"period": {"start": _instant(since.timestamp)}} if since is not None else {}),
        }))
    return made


def provenance(aggregate_type: str, event: DomainEvent) -> Provenance:
    """Who changed what, when and why: one Provenance per recorded change."""
    return Provenance.model_validate({
        "resourceType": "Provenance",
        "id": str(event.event_id),
        "target": [{"reference": f"{aggregate_type}/{event.originator_id}/_history/{event.originator_version}"}],
        "recorded": _instant(event.timestamp),
        "activity": {"text": type(event).__name__},
        "reason": [{"text": event.reason}] if event.reason else [],
        "agent": [{"who": _who(event.actor)}],
        **({"policy": [f"urn:careplan:cause:{event.causation_id}"]} if event.causation_id else {}),
    })


def history_bundle(events: Iterable[DomainEvent]) -> Bundle:
    """``CarePlan/{id}/_history``: every version, newest first, as the history interaction returns.

    One pass over the plan's events (issue 13): each version is rendered as the plan reaches
    it, not replayed from the start once per version."""
    entries: list[dict[str, Any]] = []
    plan: CarePlan | None = None
    for event in events:
        plan = project(plan, (event,))
        assert plan is not None
        entries.append(
            {"fullUrl": f"CarePlan/{plan.id}/_history/{plan.version}",
             "resource": care_plan(plan).model_dump(mode="json", exclude_none=True),
             "request": {"method": "POST" if plan.version == 1 else "PUT", "url": f"CarePlan/{plan.id}"},
             "response": {"status": "201" if plan.version == 1 else "200", "lastModified": _instant(plan.modified_on)}})
    entries.reverse()
    return Bundle.model_validate({"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries})


def searchset(resources: list[Any]) -> Bundle:
    return Bundle.model_validate({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"fullUrl": f"{r.get_resource_type()}/{r.id}", "resource": r.model_dump(mode="json", exclude_none=True)}
                  for r in resources],
    })
