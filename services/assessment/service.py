"""Assessment scoring: consumes course starts and questionnaire submissions from the care
application, emits AssessmentScored or AssessmentRejected (care.assessment.v1...)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from domain.assessment.record import AssessmentRecord, record_id
from domain.base import Actor, AggregateRoot, DomainEvent, Role
from domain.events.therapy_course import CourseStarted, QuestionnaireSubmitted
from services.shared.cloudevents import Inbound
from services.shared.reactions import Reactions
from services.shared.tracking import ServiceApplication

NAME = "assessment"


class UnknownCourseError(LookupError):
    """A submission for a course whose start was never seen, and cannot be read from the
    stream or the submission either (retried, then dead-lettered with a fail-safe)."""


class AssessmentApplication(ServiceApplication):
    name = NAME
    actor = Actor(id="assessment-service", role=Role.SERVICE)
    #: Any submission may hold a positive suicide item: one that cannot be decided is escalated.
    risk_signals: ClassVar[frozenset[type[DomainEvent]]] = frozenset({QuestionnaireSubmitted})
    #: Only this service scores: a course's record is written by the consumer deciding its course.
    decided_here: ClassVar[tuple[type[AggregateRoot], ...]] = (AssessmentRecord,)

    def _course_started(self, started: CourseStarted, inbound: Inbound) -> Sequence[AggregateRoot]:
        if self.find(AssessmentRecord, record_id(started.originator_id)) is not None:
            return []
        return [self._open(started, inbound)]

    def _submitted(self, submitted: QuestionnaireSubmitted, inbound: Inbound) -> Sequence[AggregateRoot]:
        course_id = submitted.originator_id
        record: AssessmentRecord | None = self.find(AssessmentRecord, record_id(course_id))
        if record is None:
            record = self._catch_up(submitted, inbound)
        record.score(submitted.submission_id, instrument=submitted.instrument, answers=list(submitted.answers),
                     answered_at=submitted.answered_at, ctx=self.context_for(inbound))
        return [record]

    reactions = Reactions({CourseStarted: _course_started, QuestionnaireSubmitted: _submitted})

    def _open(self, started: CourseStarted, inbound: Inbound) -> AssessmentRecord:
        return AssessmentRecord.open(course_id=started.originator_id, plan_id=started.plan_id,
                                     client_id=started.client_id, ctx=self.context_for(inbound))

    def _catch_up(self, submitted: QuestionnaireSubmitted, inbound: Inbound) -> AssessmentRecord:
        """The course's start was never decided here (dead-lettered, or older than this
        consumer's stream): it is read from the stream, else the submission's own plan and
        client open the record. Either way this submission, and those after it, are scored."""
        course_id = submitted.originator_id
        found = self.history.last(CourseStarted, course_id) if self.history is not None else None
        if found is not None:
            started = self.reactions.decode(found)
            assert isinstance(started, CourseStarted)
            return self._open(started, found)
        if submitted.plan_id is not None and submitted.client_id:
            return AssessmentRecord.open(course_id=course_id, plan_id=submitted.plan_id, client_id=submitted.client_id,
                                         ctx=self.context_for(inbound))
        msg = f"no CourseStarted seen for course {course_id}, none on the stream, and the submission names no plan"
        raise UnknownCourseError(msg)


SUBJECTS = AssessmentApplication.reactions.subjects
