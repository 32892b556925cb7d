"""Hypothesis strategies that draw care commands (valid and invalid) from small id pools,
so random sequences hit both the accepted and the refused paths of every rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from hypothesis import strategies as st

from domain.catalogues.care import CopingSkill, EnhancementStage, ExpectationHolder, ExpertBacking, HarmfulEmotion
from domain.catalogues.modalities import HomeworkKind, InitialPhaseTask
from domain.catalogues.problem_areas import ProblemArea, RelationshipPeriod, RelationshipRole
from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from services.care import commands as c


def pool(tag: int, n: int = 3) -> list[UUID]:
    return [UUID(int=(tag << 32) + i + 1) for i in range(n)]


GOALS, EXPECTATIONS, CRISES = pool(1), pool(2), pool(3, 2)
SESSIONS, HOMEWORK, RELATIONSHIPS, SUBMISSIONS = pool(4, 5), pool(5), pool(6), pool(7)
WHEN = datetime(2026, 5, 4, 10, tzinfo=UTC)

texts = st.sampled_from(["", "  ", "Sleep better", "Feel calmer with family", "x" * 4001])
reasons = st.sampled_from([None, "", " ", "Clinical judgement after review"])
times = st.integers(0, 20).map(lambda w: WHEN + timedelta(weeks=w))


def plan_commands(plan_id: UUID) -> st.SearchStrategy[c.Command]:
    p = {"plan_id": st.just(plan_id)}
    return st.one_of(
        st.builds(c.RecordConsent, **p),
        st.builds(c.ExplainConfidentiality, **p),
        st.builds(c.ActivatePlan, **p),
        st.builds(c.PutPlanOnHold, reason=reasons, **p),
        st.builds(c.ResumePlan, **p),
        st.builds(c.CompletePlan, **p),
        st.builds(c.RevokePlan, reason=reasons, **p),
        st.builds(c.AddGoal, goal_id=st.sampled_from(GOALS), description=texts, **p),
        st.builds(c.AgreeGoal, goal_id=st.sampled_from(GOALS), **p),
        st.builds(c.ReviseGoal, goal_id=st.sampled_from(GOALS), description=texts, reason=reasons, **p),
        st.builds(c.AchieveGoal, goal_id=st.sampled_from(GOALS), **p),
        st.builds(c.AbandonGoal, goal_id=st.sampled_from(GOALS), reason=reasons, **p),
        st.builds(
            c.RecordExpectation, expectation_id=st.sampled_from(EXPECTATIONS),
            holder=st.sampled_from(ExpectationHolder), statement=texts, **p,
        ),
        st.builds(c.IdentifyUnrealisticExpectation, expectation_id=st.sampled_from(EXPECTATIONS), rationale=reasons, **p),
        st.builds(
            c.AdjustExpectation, expectation_id=st.sampled_from(EXPECTATIONS), fair_goal=texts, rationale=reasons, **p
        ),
        st.builds(
            c.GiveExpertBacking, backing=st.sampled_from(ExpertBacking), note=texts,
            expectation_id=st.sampled_from([None, *EXPECTATIONS]), **p,
        ),
        st.builds(c.StartEnhancementStage, stage=st.sampled_from(EnhancementStage), **p),
        st.builds(c.ReleaseHarmfulEmotion, emotion=st.sampled_from(HarmfulEmotion), **p),
        st.builds(c.CompleteEnhancementStage, stage=st.sampled_from(EnhancementStage), **p),
        st.builds(c.ChangeStrategy, strategy=st.sampled_from(Strategy), reason=reasons, **p),
        st.builds(c.ActivateEmergencySupport, crisis_id=st.sampled_from(CRISES), reason=reasons, **p),
        st.builds(c.RecordCrisisResolved, crisis_id=st.sampled_from(CRISES), outcome=texts, **p),
        st.builds(c.EndEmergencySupport, strategy=st.sampled_from(Strategy), reason=reasons, **p),
        st.builds(c.FocusOnTherapyModel, model=st.sampled_from(TherapyModel), **p),
        st.builds(c.DropTherapyModel, model=st.sampled_from(TherapyModel), reason=reasons, **p),
        st.builds(c.RaiseRisk, level=st.sampled_from(RiskLevel), reason=reasons, **p),
        st.builds(c.LowerRisk, level=st.sampled_from(RiskLevel), reason=reasons, **p),
        st.builds(c.TargetCopingSkill, skill=st.sampled_from(CopingSkill), **p),
        st.builds(c.RecordSkillProgress, skill=st.sampled_from(CopingSkill), note=texts, **p),
    )


def course_commands(course_id: UUID, inventory_id: UUID) -> st.SearchStrategy[c.Command]:
    p = {"course_id": st.just(course_id)}
    return st.one_of(
        st.builds(c.CompleteInitialTask, task=st.sampled_from(InitialPhaseTask), **p),
        st.builds(c.EnterMiddlePhase, inventory_id=st.just(inventory_id), **p),
        st.builds(c.EnterTerminationPhase, **p),
        st.builds(c.ExtendCourse, planned_sessions=st.integers(10, 20), reason=reasons, **p),
        st.builds(c.ScheduleSession, session_id=st.sampled_from(SESSIONS), scheduled_for=times, **p),
        st.builds(c.HoldSession, session_id=st.sampled_from(SESSIONS), held_at=times, **p),
        st.builds(c.MissSession, session_id=st.sampled_from(SESSIONS), **p),
        st.builds(c.CancelSession, session_id=st.sampled_from(SESSIONS), reason=reasons, **p),
        st.builds(
            c.AssignHomework, homework_id=st.sampled_from(HOMEWORK), kind=st.sampled_from(HomeworkKind), description=texts, **p
        ),
        st.builds(c.ReviewHomework, homework_id=st.sampled_from(HOMEWORK), completed=st.booleans(), **p),
        st.builds(
            c.SubmitQuestionnaire, submission_id=st.sampled_from(SUBMISSIONS),
            instrument=st.sampled_from(["PHQ-9", "GAD-7", "", "UNKNOWN"]),
            answers=st.lists(st.one_of(st.none(), st.integers(-1, 4)), max_size=12), answered_at=times, **p,
        ),
        st.builds(c.CompleteCourse, **p),
        st.builds(c.DiscontinueCourse, reason=reasons, **p),
    )


def inventory_commands(inventory_id: UUID) -> st.SearchStrategy[c.Command]:
    p = {"inventory_id": st.just(inventory_id)}
    ratings = st.integers(0, 6)
    return st.one_of(
        st.builds(
            c.RecordRelationship, relationship_id=st.sampled_from(RELATIONSHIPS),
            alias=st.sampled_from(["Partner-A", "Mother-B", "", "Friend-C"]), role=st.sampled_from(RelationshipRole),
            period=st.sampled_from(RelationshipPeriod), closeness=ratings, satisfaction=ratings, **p,
        ),
        st.builds(
            c.ReviseRelationship, relationship_id=st.sampled_from(RELATIONSHIPS), closeness=ratings,
            satisfaction=ratings, **p,
        ),
        st.builds(c.NoteRelationshipPattern, relationship_id=st.sampled_from(RELATIONSHIPS), pattern=texts, **p),
        st.builds(
            c.NoteRelationshipExpectation, relationship_id=st.sampled_from(RELATIONSHIPS), expectation=texts,
            mutual=st.booleans(), **p,
        ),
        st.builds(c.IdentifyProblemArea, area=st.sampled_from(ProblemArea), evidence=texts, **p),
        st.builds(
            c.ChooseProblemAreaFocus, areas=st.lists(st.sampled_from(ProblemArea), max_size=3), rationale=reasons, **p
        ),
    )
