"""Assessment scoring: consumes course starts and questionnaire submissions from the care
application, emits AssessmentScored or AssessmentRejected (care.assessment.v1...)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from contracts.subjects import subject_for
from domain.assessment.record import AssessmentRecord, record_id
from domain.base import Actor, AggregateRoot, Role
from domain.events.therapy_course import CourseStarted, QuestionnaireSubmitted
from services.shared.processing import Inbound, ServiceApplication

NAME = "assessment"
SUBJECTS = [subject_for(CourseStarted, "*"), subject_for(QuestionnaireSubmitted, "*")]


class UnknownCourseError(LookupError):
    """A submission for a course whose start was never seen (retried, then dead-lettered)."""


class AssessmentApplication(ServiceApplication):
    name = NAME
    actor = Actor(id="assessment-service", role=Role.SERVICE)

    def decide(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        course_id = UUID(inbound.aggregate_id)
        ctx = self.context_for(inbound)
        body = inbound.body
        if inbound.event_name == "course_started":
            if self.find(AssessmentRecord, record_id(course_id)) is not None:
                return []
            return [AssessmentRecord.open(course_id=course_id, plan_id=UUID(body["plan_id"]), client_id=body["client_id"], ctx=ctx)]
        if inbound.event_name == "questionnaire_submitted":
            record: AssessmentRecord | None = self.find(AssessmentRecord, record_id(course_id))
            if record is None:
                msg = f"no CourseStarted seen for course {course_id}"
                raise UnknownCourseError(msg)
            record.score(
                UUID(body["submission_id"]),
                instrument=str(body["instrument"]),
                answers=list(body["answers"]),
                answered_at=datetime.fromisoformat(body["answered_at"]),
                ctx=ctx,
            )
            return [record]
        return []
