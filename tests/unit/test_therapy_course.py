"""TherapyCourse rules: IPT shape, phases and their guards, sessions, homework, questionnaires."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest

from domain.catalogues.modalities import CoursePhase, HomeworkKind, InitialPhaseTask, Modality
from domain.catalogues.problem_areas import ProblemArea
from domain.errors import (
    CourseNotOpenError,
    HomeworkStateError,
    PhaseOrderError,
    PlannedSessionCountError,
    ProblemAreaNotChosenError,
    QuestionnaireShapeError,
    ReasonRequiredError,
    SessionStateError,
)
from domain.events.therapy_course import CourseExtended
from domain.therapy_course import CourseStatus, SessionStatus, TherapyCourse
from tests.conftest import T0, ctx
from tests.unit.test_care_plan import refused


def ipt(planned: int = 12) -> TherapyCourse:
    return TherapyCourse.start(
        uuid4(), plan_id=uuid4(), client_id="client-1", modality=Modality.INTERPERSONAL, planned_sessions=planned, ctx=ctx()
    )


@pytest.mark.parametrize("planned", [11, 17, 0])
def test_ipt_plans_twelve_to_sixteen_sessions(planned: int) -> None:
    with pytest.raises(PlannedSessionCountError, match="12 to 16"):
        ipt(planned)


@pytest.mark.parametrize("planned", [12, 16])
def test_ipt_edges_are_accepted(planned: int) -> None:
    assert ipt(planned).planned_sessions == planned


def test_middle_phase_needs_a_chosen_problem_area_and_a_treatment_contract() -> None:
    course = ipt()
    refused(course, ProblemAreaNotChosenError, course.enter_middle_phase, problem_areas=[], ctx=ctx())
    refused(course, PhaseOrderError, course.enter_middle_phase, problem_areas=[ProblemArea.GRIEF], ctx=ctx())
    refused(course, PhaseOrderError, course.enter_termination_phase, ctx=ctx())
    course.complete_initial_task(InitialPhaseTask.TREATMENT_CONTRACT, ctx=ctx())
    refused(
        course, ProblemAreaNotChosenError, course.enter_middle_phase,
        problem_areas=[ProblemArea.GRIEF, ProblemArea.ROLE_DISPUTE, ProblemArea.ROLE_TRANSITION], ctx=ctx(),
    )
    course.enter_middle_phase(problem_areas=[ProblemArea.GRIEF], ctx=ctx())
    assert course.phase is CoursePhase.MIDDLE and course.problem_areas == [ProblemArea.GRIEF]
    refused(course, PhaseOrderError, course.complete_initial_task, InitialPhaseTask.HISTORY, ctx=ctx())
    course.enter_termination_phase(ctx=ctx())
    assert course.phase is CoursePhase.TERMINATION


def test_going_past_the_planned_count_needs_an_extension_with_reason() -> None:
    course = ipt(12)
    for week in range(12):
        course.schedule_session(uuid4(), scheduled_for=T0 + timedelta(weeks=week), ctx=ctx())
    assert [s.number for s in course.sessions.values()] == list(range(1, 13))
    refused(course, PlannedSessionCountError, course.schedule_session, uuid4(), scheduled_for=T0, ctx=ctx())
    refused(course, ReasonRequiredError, course.extend, 14, reason=None, ctx=ctx())
    refused(course, PlannedSessionCountError, course.extend, 12, reason="x", ctx=ctx())
    course.extend(14, reason="Grief work opened late; two more sessions agreed", ctx=ctx())
    assert isinstance(course.pending_events[-1], CourseExtended)
    course.schedule_session(uuid4(), scheduled_for=T0 + timedelta(weeks=12), ctx=ctx())
    assert len(course.active_sessions) == 13


def test_a_cancelled_session_frees_its_place() -> None:
    course = ipt(12)
    ids = [uuid4() for _ in range(12)]
    for i, sid in enumerate(ids):
        course.schedule_session(sid, scheduled_for=T0 + timedelta(weeks=i), ctx=ctx())
    refused(course, ReasonRequiredError, course.cancel_session, ids[3], reason=None, ctx=ctx())
    course.cancel_session(ids[3], reason="Therapist ill", ctx=ctx())
    course.schedule_session(uuid4(), scheduled_for=T0 + timedelta(weeks=13), ctx=ctx())
    assert len(course.active_sessions) == 12


def test_sessions_are_held_or_missed_once() -> None:
    course = ipt()
    held, missed = uuid4(), uuid4()
    course.schedule_session(held, scheduled_for=T0, ctx=ctx())
    course.schedule_session(missed, scheduled_for=T0 + timedelta(weeks=1), ctx=ctx())
    course.hold_session(held, held_at=T0 + timedelta(minutes=2), note="Intake", ctx=ctx())
    course.miss_session(missed, ctx=ctx())
    assert course.sessions[held].status is SessionStatus.HELD
    assert course.sessions[held].held_at == T0 + timedelta(minutes=2)
    assert course.sessions[missed].status is SessionStatus.MISSED
    refused(course, SessionStateError, course.hold_session, missed, held_at=T0, ctx=ctx())
    refused(course, SessionStateError, course.miss_session, held, ctx=ctx())
    assert course.sessions_held == 1


def test_homework_assigned_then_reviewed_once() -> None:
    course = ipt()
    hw = uuid4()
    course.assign_homework(hw, kind=HomeworkKind.MINDFULNESS_PRACTICE, description="10 minutes daily", ctx=ctx())
    course.review_homework(hw, completed=False, note="Managed twice", ctx=ctx())
    assert course.homework[hw].completed is False
    refused(course, HomeworkStateError, course.review_homework, hw, completed=True, ctx=ctx())


def test_questionnaire_answers_are_kept_as_given_for_the_scoring_service() -> None:
    course = ipt()
    sid = uuid4()
    # Wrong item count and an unknown instrument are the scoring service's to reject,
    # with a reason; the course keeps them so that a risk signal is never lost.
    course.submit_questionnaire(sid, instrument="PHQ-9", answers=[0, 1, None, 3, 0, 0, 0, 0], answered_at=T0, ctx=ctx())
    course.submit_questionnaire(uuid4(), instrument="MADE-UP", answers=[9], answered_at=T0, ctx=ctx())
    assert course.submissions[0].answers == [0, 1, None, 3, 0, 0, 0, 0]
    refused(course, QuestionnaireShapeError, course.submit_questionnaire, sid, instrument="PHQ-9", answers=[], answered_at=T0, ctx=ctx())
    refused(
        course, QuestionnaireShapeError, course.submit_questionnaire, uuid4(), instrument="PHQ-9",
        answers=[0] * 51, answered_at=T0, ctx=ctx(),
    )
    refused(
        course, QuestionnaireShapeError, course.submit_questionnaire, uuid4(), instrument="PHQ-9",
        answers=[0, "2"], answered_at=T0, ctx=ctx(),
    )


def test_completion_from_termination_with_no_pending_sessions_then_closed() -> None:
    course = ipt()
    sid = uuid4()
    course.schedule_session(sid, scheduled_for=T0, ctx=ctx())
    refused(course, PhaseOrderError, course.complete, ctx=ctx())
    course.complete_initial_task(InitialPhaseTask.TREATMENT_CONTRACT, ctx=ctx())
    course.enter_middle_phase(problem_areas=[ProblemArea.ROLE_TRANSITION], ctx=ctx())
    course.enter_termination_phase(ctx=ctx())
    refused(course, SessionStateError, course.complete, ctx=ctx())
    course.hold_session(sid, held_at=T0, ctx=ctx())
    course.complete(ctx=ctx())
    assert course.status is CourseStatus.COMPLETED
    refused(course, CourseNotOpenError, course.schedule_session, uuid4(), scheduled_for=T0, ctx=ctx())


def test_discontinuation_needs_a_reason() -> None:
    course = ipt()
    refused(course, ReasonRequiredError, course.discontinue, reason=" ", ctx=ctx())
    course.discontinue(reason="Client moved abroad", ctx=ctx())
    assert course.status is CourseStatus.DISCONTINUED
