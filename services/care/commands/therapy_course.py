"""Commands on a TherapyCourse."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID, uuid4

from pydantic import Field

from domain.base import AggregateRoot, CommandContext, Moment
from domain.catalogues.modalities import HomeworkKind, InitialPhaseTask, Modality
from domain.errors import ProblemAreaNotChosenError
from domain.therapy_course import TherapyCourse
from services.care.commands.base import Command, CreationCommand, Lookup


class StartCourse(CreationCommand):
    aggregate_type: ClassVar[type[AggregateRoot]] = TherapyCourse
    course_id: UUID = Field(default_factory=uuid4)
    plan_id: UUID
    modality: Modality
    planned_sessions: int

    def create(self, ctx: CommandContext, lookup: Lookup) -> AggregateRoot:
        plan = lookup.get_plan(self.plan_id)
        plan._require_open()
        return TherapyCourse.start(
            self.course_id,
            plan_id=plan.id,
            client_id=plan.client_id,
            modality=self.modality,
            planned_sessions=self.planned_sessions,
            ctx=ctx,
        )


class CourseCommand(Command):
    aggregate_type: ClassVar[type[AggregateRoot]] = TherapyCourse
    course_id: UUID

    def target_id(self) -> UUID:
        return self.course_id


class CompleteInitialTask(CourseCommand):
    task: InitialPhaseTask
    note: str | None = None

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.complete_initial_task(self.task, note=self.note, ctx=ctx)


class EnterMiddlePhase(CourseCommand):
    """The focus comes from the client's interpersonal inventory, never from the caller."""

    inventory_id: UUID

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        inventory = lookup.get_inventory(self.inventory_id)
        if inventory.client_id != course.client_id:
            msg = f"Inventory {inventory.id} belongs to another client; use the inventory of {course.client_id}."
            raise ProblemAreaNotChosenError(msg)
        course.enter_middle_phase(problem_areas=list(inventory.focus), ctx=ctx)


class EnterTerminationPhase(CourseCommand):
    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.enter_termination_phase(ctx=ctx)


class ExtendCourse(CourseCommand):
    planned_sessions: int
    reason: str | None = None

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.extend(self.planned_sessions, reason=self.reason, ctx=ctx)


class ScheduleSession(CourseCommand):
    session_id: UUID = Field(default_factory=uuid4)
    scheduled_for: Moment
    duration_minutes: int = 50

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.schedule_session(
            self.session_id, scheduled_for=self.scheduled_for, duration_minutes=self.duration_minutes, ctx=ctx
        )


class HoldSession(CourseCommand):
    session_id: UUID
    held_at: Moment
    note: str | None = None

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.hold_session(self.session_id, held_at=self.held_at, note=self.note, ctx=ctx)


class MissSession(CourseCommand):
    session_id: UUID
    reason: str | None = None

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.miss_session(self.session_id, reason=self.reason, ctx=ctx)


class CancelSession(CourseCommand):
    session_id: UUID
    reason: str | None = None

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.cancel_session(self.session_id, reason=self.reason, ctx=ctx)


class AssignHomework(CourseCommand):
    homework_id: UUID = Field(default_factory=uuid4)
    kind: HomeworkKind
    description: str
    due: Moment | None = None

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.assign_homework(self.homework_id, kind=self.kind, description=self.description, due=self.due, ctx=ctx)


class ReviewHomework(CourseCommand):
    homework_id: UUID
    completed: bool
    note: str | None = None

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.review_homework(self.homework_id, completed=self.completed, note=self.note, ctx=ctx)


class SubmitQuestionnaire(CourseCommand):
    submission_id: UUID = Field(default_factory=uuid4)
    instrument: str
    answers: list[int | None] = Field(max_length=100)  # the longest instrument has far fewer items
    answered_at: Moment

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.submit_questionnaire(
            self.submission_id, instrument=self.instrument, answers=self.answers, answered_at=self.answered_at, ctx=ctx
        )


class CompleteCourse(CourseCommand):
    reason: str | None = None

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.complete(reason=self.reason, ctx=ctx)


class DiscontinueCourse(CourseCommand):
    reason: str | None = None

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.discontinue(reason=self.reason, ctx=ctx)
