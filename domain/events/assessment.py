"""Events of the assessment scoring service (its AssessmentRecord aggregate, one per course)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

from pydantic import Field

from domain.assessment.change import Change
from domain.assessment.results import Severity, SuicideRisk
from domain.base import DomainEvent, ShortText, Text

#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "assessment"
AGGREGATE = "assessment_record"


class ChangeFromBaseline(Change):
    """Change against the course's first score of the same instrument, and which score that was."""

    baseline_submission_id: UUID


class AssessmentRecordOpened(DomainEvent):
    summary_template: ClassVar[str] = "Assessment record opened for course {course_id}"
    course_id: UUID
    plan_id: UUID
    client_id: ShortText


class SubmissionDecision(DomainEvent):
    """What every decision on a questionnaire submission says about the submission."""

    submission_id: UUID
    course_id: UUID
    plan_id: UUID
    client_id: ShortText
    instrument: ShortText
    answered_at: datetime


class AssessmentScored(SubmissionDecision):
    summary_template: ClassVar[str] = "{instrument} scored: total {total} ({severity})"
    total: int | None
    severity: Severity | None
    answered_items: int
    prorated: bool
    #: PHQ-9 item 9 above 0, or any C-SSRS ideation: clinical review whatever the total.
    suicide_item_positive: bool
    suicide_risk: SuicideRisk | None = None
    caseness: bool | None = None
    change: ChangeFromBaseline | None = None


class AssessmentRejected(SubmissionDecision):
    summary_template: ClassVar[str] = "{instrument} submission rejected: {rejection_reason}"
    rejection_reason: Text
    #: A risk signal in answers that could not be scored: escalation still acts on it.
    suicide_item_positive: bool = Field(default=False)
