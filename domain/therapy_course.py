"""The TherapyCourse aggregate: one course of treatment under a plan (e.g. 12–16 sessions of IPT)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum
from typing import Self
from uuid import UUID

from pydantic import BaseModel, Field

from domain.base import AggregateRoot, CommandContext, require_reason, require_text, when
from domain.catalogues.instruments import MAX_ANSWER_VALUE, MAX_SUBMITTED_ITEMS
from domain.catalogues.modalities import (
    PLANNED_SESSIONS,
    CoursePhase,
    HomeworkKind,
    InitialPhaseTask,
    Modality,
)
from domain.catalogues.problem_areas import MAX_FOCUS_AREAS, ProblemArea
from domain.errors import (
    CourseNotOpenError,
    HomeworkStateError,
    InvalidValueError,
    PhaseOrderError,
    PlannedSessionCountError,
    ProblemAreaNotChosenError,
    QuestionnaireShapeError,
    SessionStateError,
    UnknownHomeworkError,
    UnknownSessionError,
)
from domain.events.therapy_course import (
    CourseCompleted,
    CourseDiscontinued,
    CourseExtended,
    CourseStarted,
    HomeworkAssigned,
    HomeworkReviewed,
    InitialTaskCompleted,
    PhaseStarted,
    QuestionnaireSubmitted,
    SessionCancelled,
    SessionHeld,
    SessionMissed,
    SessionScheduled,
)


class CourseStatus(str, Enum):
    ACTIVE = "active"
    COMPLETED = "completed"
    DISCONTINUED = "discontinued"


class SessionStatus(str, Enum):
    SCHEDULED = "scheduled"
    HELD = "held"
    MISSED = "missed"
    CANCELLED = "cancelled"


class Session(BaseModel):
    id: UUID
    number: int
    scheduled_for: datetime
    duration_minutes: int
    status: SessionStatus = SessionStatus.SCHEDULED
    held_at: datetime | None = None


class Homework(BaseModel):
    id: UUID
    kind: HomeworkKind
    description: str
    due: datetime | None = None
    completed: bool | None = None


class Submission(BaseModel):
    id: UUID
    instrument: str
    answers: list[int | None]
    answered_at: datetime


#: How far ahead a session may be scheduled (a date beyond is a typing error, and near the
#: end of representable time its end could not even be computed).
SESSION_HORIZON = timedelta(days=5 * 365 + 1)

_NEXT_PHASE = {CoursePhase.INITIAL: CoursePhase.MIDDLE, CoursePhase.MIDDLE: CoursePhase.TERMINATION}


class TherapyCourse(AggregateRoot):
    created_event = CourseStarted

    plan_id: UUID
    client_id: str
    modality: Modality
    planned_sessions: int
    status: CourseStatus = CourseStatus.ACTIVE
    phase: CoursePhase = CoursePhase.INITIAL
    initial_tasks_done: list[InitialPhaseTask] = Field(default_factory=list)
    problem_areas: list[ProblemArea] = Field(default_factory=list)
    sessions: dict[UUID, Session] = Field(default_factory=dict)
    homework: dict[UUID, Homework] = Field(default_factory=dict)
    submissions: list[Submission] = Field(default_factory=list)

    @classmethod
    def start(
        cls,
        course_id: UUID,
        *,
        plan_id: UUID,
        client_id: str,
        modality: Modality,
        planned_sessions: int,
        ctx: CommandContext,
    ) -> Self:
        allowed = PLANNED_SESSIONS[modality]
        if planned_sessions not in allowed:
            msg = (
                f"A {modality.value} course plans {allowed.start} to {allowed.stop - 1} sessions, "
                f"not {planned_sessions}."
            )
            raise PlannedSessionCountError(msg)
        return cls._start(
            CourseStarted,
            ctx,
            course_id,
            plan_id=plan_id,
            client_id=require_text(client_id, "client_id", 200),
            modality=modality,
            planned_sessions=planned_sessions,
        )

    @classmethod
    def _from_created(cls, event: CourseStarted) -> Self:  # type: ignore[override]
        return cls._created(
            event,
            plan_id=event.plan_id,
            client_id=event.client_id,
            modality=event.modality,
            planned_sessions=event.planned_sessions,
        )

    # ----------------------------------------------------------------- queries

    @property
    def active_sessions(self) -> list[Session]:
        """Sessions that count against the planned number (all but cancelled ones)."""
        return [s for s in self.sessions.values() if s.status is not SessionStatus.CANCELLED]

    @property
    def sessions_held(self) -> int:
        return sum(1 for s in self.sessions.values() if s.status is SessionStatus.HELD)

    def _require_active(self) -> None:
        if self.status is not CourseStatus.ACTIVE:
            msg = f"Course {self.id} is {self.status.value}; start a new course for further treatment."
            raise CourseNotOpenError(msg)

    def _session(self, session_id: UUID) -> Session:
        try:
            return self.sessions[session_id]
        except KeyError:
            msg = f"Course {self.id} has no session {session_id}; schedule it first."
            raise UnknownSessionError(msg) from None

    # ----------------------------------------------------------------- phases

    def complete_initial_task(self, task: InitialPhaseTask, *, note: str | None = None, ctx: CommandContext) -> None:
        self._require_active()
        if self.phase is not CoursePhase.INITIAL:
            msg = f"Initial-phase tasks belong to the initial phase; the course is in the {self.phase.value} phase."
            raise PhaseOrderError(msg)
        if task in self.initial_tasks_done:
            msg = f"Initial task {task.value} is already recorded as done."
            raise PhaseOrderError(msg)
        self._trigger(InitialTaskCompleted, ctx, task=task, note=note)

    @when(InitialTaskCompleted)
    def _task_done(self, event: InitialTaskCompleted) -> None:
        self.initial_tasks_done.append(event.task)

    def enter_middle_phase(self, *, problem_areas: list[ProblemArea], ctx: CommandContext) -> None:
        """``problem_areas`` is the focus chosen in the client's interpersonal inventory."""
        self._require_active()
        if self.phase is not CoursePhase.INITIAL:
            msg = f"The middle phase follows the initial phase; the course is in the {self.phase.value} phase."
            raise PhaseOrderError(msg)
        if not problem_areas:
            msg = (
                "The middle phase needs a chosen problem area; choose the focus in the "
                "interpersonal inventory first."
            )
            raise ProblemAreaNotChosenError(msg)
        if len(problem_areas) > MAX_FOCUS_AREAS or len(set(problem_areas)) != len(problem_areas):
            msg = f"Choose one or two distinct problem areas, not {[a.value for a in problem_areas]}."
            raise ProblemAreaNotChosenError(msg)
        if self.modality is Modality.INTERPERSONAL and InitialPhaseTask.TREATMENT_CONTRACT not in self.initial_tasks_done:
            msg = "Agree the treatment contract (an initial-phase task) before the middle phase."
            raise PhaseOrderError(msg)
        self._trigger(
            PhaseStarted, ctx, phase=CoursePhase.MIDDLE, previous_phase=self.phase, problem_areas=list(problem_areas)
        )

    def enter_termination_phase(self, *, ctx: CommandContext) -> None:
        self._require_active()
        if self.phase is not CoursePhase.MIDDLE:
            msg = f"The termination phase follows the middle phase; the course is in the {self.phase.value} phase."
            raise PhaseOrderError(msg)
        self._trigger(PhaseStarted, ctx, phase=CoursePhase.TERMINATION, previous_phase=self.phase)

    @when(PhaseStarted)
    def _phase_started(self, event: PhaseStarted) -> None:
        self.phase = event.phase
        if event.problem_areas:
            self.problem_areas = list(event.problem_areas)

    def extend(self, planned_sessions: int, *, reason: str | None, ctx: CommandContext) -> None:
        """Going past the planned count is a clinical decision that needs a reason."""
        self._require_active()
        if planned_sessions <= self.planned_sessions:
            msg = f"Extending means more than the {self.planned_sessions} sessions planned, not {planned_sessions}."
            raise PlannedSessionCountError(msg)
        if planned_sessions > 200:
            msg = "A course plans at most 200 sessions."
            raise PlannedSessionCountError(msg)
        self._trigger(
            CourseExtended,
            ctx,
            previous_planned_sessions=self.planned_sessions,
            planned_sessions=planned_sessions,
            reason=require_reason(reason, "extend a course past its planned sessions"),
        )

    @when(CourseExtended)
    def _extended(self, event: CourseExtended) -> None:
        self.planned_sessions = event.planned_sessions

    # ----------------------------------------------------------------- sessions

    def schedule_session(
        self, session_id: UUID, *, scheduled_for: datetime, duration_minutes: int = 50, ctx: CommandContext
    ) -> None:
        self._require_active()
        if session_id in self.sessions:
            msg = f"Session {session_id} is already scheduled."
            raise SessionStateError(msg)
        if not 5 <= duration_minutes <= 480:
            msg = f"A session lasts 5 to 480 minutes, not {duration_minutes}."
            raise InvalidValueError(msg)
        if scheduled_for > ctx.at + SESSION_HORIZON:
            msg = (f"A session is scheduled at most {SESSION_HORIZON.days // 365} years ahead, not for "
                   f"{scheduled_for.isoformat()}; check the date.")
            raise InvalidValueError(msg)
        active = self.active_sessions
        if len(active) >= self.planned_sessions:
            msg = (
                f"The course plans {self.planned_sessions} sessions and all are scheduled or done; "
                "extend the course with a reason first."
            )
            raise PlannedSessionCountError(msg)
        self._trigger(
            SessionScheduled,
            ctx,
            session_id=session_id,
            # Numbers follow the course's order; a cancelled session's number is not reused.
            number=max((s.number for s in active), default=0) + 1,
            scheduled_for=scheduled_for,
            duration_minutes=duration_minutes,
        )

    @when(SessionScheduled)
    def _session_scheduled(self, event: SessionScheduled) -> None:
        self.sessions[event.session_id] = Session(
            id=event.session_id,
            number=event.number,
            scheduled_for=event.scheduled_for,
            duration_minutes=event.duration_minutes,
        )

    def _scheduled_session(self, session_id: UUID, doing: str) -> Session:
        session = self._session(session_id)
        if session.status is not SessionStatus.SCHEDULED:
            msg = f"Session {session.number} is {session.status.value}; only a scheduled session can be {doing}."
            raise SessionStateError(msg)
        return session

    def hold_session(self, session_id: UUID, *, held_at: datetime, note: str | None = None, ctx: CommandContext) -> None:
        self._require_active()
        session = self._scheduled_session(session_id, "marked held")
        self._trigger(SessionHeld, ctx, session_id=session_id, number=session.number, held_at=held_at, note=note)

    @when(SessionHeld)
    def _session_held(self, event: SessionHeld) -> None:
        session = self.sessions[event.session_id]
        session.status = SessionStatus.HELD
        session.held_at = event.held_at

    def miss_session(self, session_id: UUID, *, reason: str | None = None, ctx: CommandContext) -> None:
        self._require_active()
        session = self._scheduled_session(session_id, "marked missed")
        self._trigger(SessionMissed, ctx, session_id=session_id, number=session.number, reason=reason)

    @when(SessionMissed)
    def _session_missed(self, event: SessionMissed) -> None:
        self.sessions[event.session_id].status = SessionStatus.MISSED

    def cancel_session(self, session_id: UUID, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_active()
        session = self._scheduled_session(session_id, "cancelled")
        self._trigger(
            SessionCancelled, ctx, session_id=session_id, number=session.number, reason=require_reason(reason, "cancel a session")
        )

    @when(SessionCancelled)
    def _session_cancelled(self, event: SessionCancelled) -> None:
        self.sessions[event.session_id].status = SessionStatus.CANCELLED

    # ----------------------------------------------------------------- homework

    def assign_homework(
        self,
        homework_id: UUID,
        *,
        kind: HomeworkKind,
        description: str,
        due: datetime | None = None,
        ctx: CommandContext,
    ) -> None:
        self._require_active()
        if homework_id in self.homework:
            msg = f"Homework {homework_id} is already assigned."
            raise HomeworkStateError(msg)
        self._trigger(
            HomeworkAssigned, ctx, homework_id=homework_id, kind=kind, description=require_text(description, "description"), due=due
        )

    @when(HomeworkAssigned)
    def _homework_assigned(self, event: HomeworkAssigned) -> None:
        self.homework[event.homework_id] = Homework(
            id=event.homework_id, kind=event.kind, description=event.description, due=event.due
        )

    def review_homework(
        self, homework_id: UUID, *, completed: bool, note: str | None = None, ctx: CommandContext
    ) -> None:
        self._require_active()
        try:
            homework = self.homework[homework_id]
        except KeyError:
            msg = f"Course {self.id} has no homework {homework_id}; assign it first."
            raise UnknownHomeworkError(msg) from None
        if homework.completed is not None:
            msg = f"Homework {homework_id} was already reviewed; assign new homework to continue practice."
            raise HomeworkStateError(msg)
        self._trigger(HomeworkReviewed, ctx, homework_id=homework_id, completed=completed, note=note)

    @when(HomeworkReviewed)
    def _homework_reviewed(self, event: HomeworkReviewed) -> None:
        self.homework[event.homework_id].completed = event.completed

    # ----------------------------------------------------------------- questionnaires

    def submit_questionnaire(
        self,
        submission_id: UUID,
        *,
        instrument: str,
        answers: list[int | None],
        answered_at: datetime,
        ctx: CommandContext,
    ) -> None:
        """Records answers as given. Scoring, and rejection of a wrong shape, is the
        assessment service's decision; refusing here would lose a risk signal."""
        if any(s.id == submission_id for s in self.submissions):
            msg = f"Submission {submission_id} is already recorded."
            raise QuestionnaireShapeError(msg)
        instrument = require_text(instrument, "instrument", 200)
        if not isinstance(answers, list) or len(answers) > MAX_SUBMITTED_ITEMS:
            msg = f"Answers must be a list of at most {MAX_SUBMITTED_ITEMS} item values."
            raise QuestionnaireShapeError(msg)
        if any(a is not None and (isinstance(a, bool) or not isinstance(a, int)) for a in answers):
            msg = "Each answer must be a whole number, or null for an unanswered item."
            raise QuestionnaireShapeError(msg)
        for number, answer in enumerate(answers, start=1):
            if answer is not None and not 0 <= answer <= MAX_ANSWER_VALUE:
                shown = answer if -1000 < answer < 1000 else "out of range"
                msg = f"Item {number} is {shown}; an answer is a whole number from 0 to {MAX_ANSWER_VALUE}, or null."
                raise InvalidValueError(msg)
        # A course that has ended still records what a client answers: it may carry risk.
        self._trigger(
            QuestionnaireSubmitted,
            ctx,
            submission_id=submission_id,
            instrument=instrument,
            answers=list(answers),
            answered_at=answered_at,
            plan_id=self.plan_id,
            client_id=self.client_id,
        )

    @when(QuestionnaireSubmitted)
    def _questionnaire_submitted(self, event: QuestionnaireSubmitted) -> None:
        self.submissions.append(
            Submission(
                id=event.submission_id, instrument=event.instrument, answers=list(event.answers), answered_at=event.answered_at
            )
        )

    # ----------------------------------------------------------------- ending

    def complete(self, *, reason: str | None = None, ctx: CommandContext) -> None:
        self._require_active()
        if self.phase is not CoursePhase.TERMINATION:
            msg = f"A course completes from its termination phase; it is in the {self.phase.value} phase."
            raise PhaseOrderError(msg)
        pending = [s.number for s in self.sessions.values() if s.status is SessionStatus.SCHEDULED]
        if pending:
            msg = f"Sessions {pending} are still scheduled; mark them held, missed or cancelled first."
            raise SessionStateError(msg)
        self._trigger(CourseCompleted, ctx, sessions_held=self.sessions_held, reason=reason)

    @when(CourseCompleted)
    def _completed(self, _: CourseCompleted) -> None:
        self.status = CourseStatus.COMPLETED

    def discontinue(self, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_active()
        self._trigger(
            CourseDiscontinued, ctx, sessions_held=self.sessions_held, reason=require_reason(reason, "discontinue a course")
        )

    @when(CourseDiscontinued)
    def _discontinued(self, _: CourseDiscontinued) -> None:
        self.status = CourseStatus.DISCONTINUED
