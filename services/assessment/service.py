"""Assessment scoring: consumes course starts and questionnaire submissions from the care
application, emits AssessmentScored or AssessmentRejected (care.assessment.v1...)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import ClassVar
from uuid import UUID

from domain.assessment.record import AssessmentRecord, record_id
from domain.base import Actor, AggregateRoot, DomainEvent, Role
from domain.events.therapy_course import CourseStarted, QuestionnaireSubmitted
from services.shared.processing import Inbound, ServiceApplication, subjects_of

NAME = "assessment"
REACTS_TO: list[type[DomainEvent]] = [CourseStarted, QuestionnaireSubmitted]
SUBJECTS = subjects_of(REACTS_TO)


class UnknownCourseError(LookupError):
    """A submission for a course whose start was never seen, and cannot be read from the
    stream or the submission either (retried, then dead-lettered with a fail-safe)."""


class AssessmentApplication(ServiceApplication):
    name = NAME
    actor = Actor(id="assessment-service", role=Role.SERVICE)
    #: Any submission may hold a positive suicide item: one that cannot be decided is escalated.
    risk_signals: ClassVar[frozenset[type[DomainEvent]]] = frozenset({QuestionnaireSubmitted})

    def decide(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        course_id = UUID(inbound.aggregate_id)
        body = inbound.body
        if inbound.event_name == "course_started":
            if self.find(AssessmentRecord, record_id(course_id)) is not None:
                return []
            return [self._open(course_id, inbound)]
        if inbound.event_name == "questionnaire_submitted":
            record: AssessmentRecord | None = self.find(AssessmentRecord, record_id(course_id))
            if record is None:
                record = self._catch_up(course_id, inbound)
            record.score(
                UUID(str(body["submission_id"])),
                instrument=str(body["instrument"]),
                answers=list(body["answers"]),
                answered_at=datetime.fromisoformat(str(body["answered_at"])),
                ctx=self.context_for(inbound),
            )
            return [record]
        return []

    def _open(self, course_id: UUID, started: Inbound) -> AssessmentRecord:
        body = started.body
        return AssessmentRecord.open(course_id=course_id, plan_id=UUID(str(body["plan_id"])),
                                     client_id=str(body["client_id"]), ctx=self.context_for(started))

    def _catch_up(self, course_id: UUID, submitted: Inbound) -> AssessmentRecord:
        """The course's start was never decided here (dead-lettered, or older than this
        consumer's stream): it is read from the stream, else the submission's own plan and
        client open the record. Either way this submission, and those after it, are scored."""
        started = self.history.last(CourseStarted, course_id) if self.history is not None else None
        if started is not None:
            return self._open(course_id, started)
        body = submitted.body
        if body.get("plan_id") and body.get("client_id"):
            return AssessmentRecord.open(course_id=course_id, plan_id=UUID(str(body["plan_id"])),
                                         client_id=str(body["client_id"]), ctx=self.context_for(submitted))
        msg = f"no CourseStarted seen for course {course_id}, none on the stream, and the submission names no plan"
        raise UnknownCourseError(msg)
