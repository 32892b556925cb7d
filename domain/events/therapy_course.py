"""Events of the TherapyCourse aggregate."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

from pydantic import Field

from domain.base import DomainEvent, RequiresReason, ShortText, Text
from domain.catalogues.modalities import CoursePhase, HomeworkKind, InitialPhaseTask, Modality
from domain.catalogues.problem_areas import ProblemArea


#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "clinical"
AGGREGATE = "therapy_course"

class CourseStarted(DomainEvent):
    summary_template: ClassVar[str] = "{modality} course started with {planned_sessions} planned sessions"
    plan_id: UUID
    client_id: ShortText
    modality: Modality
    planned_sessions: int = Field(ge=1, le=200)


class InitialTaskCompleted(DomainEvent):
    summary_template: ClassVar[str] = "Initial phase: {task} done"
    task: InitialPhaseTask
    note: str | None = Field(default=None, max_length=4000)


class PhaseStarted(DomainEvent):
    summary_template: ClassVar[str] = "Phase {phase} started (after {previous_phase})"
    phase: CoursePhase
    previous_phase: CoursePhase
    problem_areas: list[ProblemArea] = Field(default_factory=list, max_length=2)


class CourseExtended(RequiresReason):
    summary_template: ClassVar[str] = "Course extended from {previous_planned_sessions} to {planned_sessions} sessions"
    previous_planned_sessions: int
    planned_sessions: int = Field(ge=1, le=200)


class SessionScheduled(DomainEvent):
    summary_template: ClassVar[str] = "Session {number} scheduled for {scheduled_for}"
    session_id: UUID
    number: int = Field(ge=1)
    scheduled_for: datetime
    duration_minutes: int = Field(ge=5, le=480)


class SessionHeld(DomainEvent):
    summary_template: ClassVar[str] = "Session {number} held at {held_at}"
    session_id: UUID
    number: int
    held_at: datetime
    note: str | None = Field(default=None, max_length=4000)


class SessionMissed(DomainEvent):
    summary_template: ClassVar[str] = "Session {number} missed"
    session_id: UUID
    number: int


class SessionCancelled(RequiresReason):
    summary_template: ClassVar[str] = "Session {number} cancelled"
    session_id: UUID
    number: int


class HomeworkAssigned(DomainEvent):
    summary_template: ClassVar[str] = "Homework assigned ({kind}): '{description}'"
    homework_id: UUID
    kind: HomeworkKind
    description: Text
    due: datetime | None = None


class HomeworkReviewed(DomainEvent):
    summary_template: ClassVar[str] = "Homework {homework_id} reviewed (completed: {completed})"
    homework_id: UUID
    completed: bool
    note: str | None = Field(default=None, max_length=4000)


class QuestionnaireSubmitted(DomainEvent):
    """Raw answers as given. The assessment service scores or rejects them; the course
    keeps whatever was answered so that a risk signal is never lost to a shape error."""

    summary_template: ClassVar[str] = "{instrument} questionnaire submitted"
    submission_id: UUID
    instrument: ShortText
    answers: list[int | None] = Field(max_length=50)
    answered_at: datetime
    #: The course's plan and client, so a submission can be decided even by a service that
    #: never saw the course start (absent from submissions recorded before they were added).
    plan_id: UUID | None = None
    client_id: ShortText | None = None


class CourseCompleted(DomainEvent):
    summary_template: ClassVar[str] = "Course completed after {sessions_held} sessions"
    sessions_held: int


class CourseDiscontinued(RequiresReason):
    summary_template: ClassVar[str] = "Course discontinued after {sessions_held} sessions"
    sessions_held: int
