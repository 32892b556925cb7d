"""A care history that emits every public event type at least once (after the demo story)."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

from domain.catalogues.care import CopingSkill, EnhancementStage
from domain.catalogues.modalities import Modality
from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.demo import _story
from tests.conftest import CLINICIAN, ESCALATION, SUPERVISOR

WHEN = datetime(2026, 6, 1, 10, tzinfo=UTC)


def every_event_story(app: CareApplication) -> tuple[UUID, UUID, UUID]:
    plan_id, course_id, inventory_id = _story(app)
    me, service, supervisor = CommandMeta(actor=CLINICIAN), CommandMeta(actor=ESCALATION), CommandMeta(actor=SUPERVISOR)
    run = app.handle
    plan = app.get_plan(plan_id)
    goal_id = next(iter(plan.goals))
    run(c.ReviseGoal(plan_id=plan_id, goal_id=goal_id, description="Enjoy most weekends", reason="Client's words"), me)
    extra = c.AddGoal(plan_id=plan_id, description="Run a 5k")
    run(extra, me)
    run(c.AbandonGoal(plan_id=plan_id, goal_id=extra.goal_id, reason="Knee injury"), me)
    run(c.ReleaseHarmfulEmotion(plan_id=plan_id, emotion="anger"), me)
    run(c.CompleteEnhancementStage(plan_id=plan_id, stage=EnhancementStage.RELEASE_HARMFUL_EMOTIONS), me)
    run(c.RecordSkillProgress(plan_id=plan_id, skill=CopingSkill.COMMUNICATION, note="Used an I-statement"), me)
    run(c.FocusOnTherapyModel(plan_id=plan_id, model=TherapyModel.PERSONAL_BOUNDARIES), me)
    run(c.DropTherapyModel(plan_id=plan_id, model=TherapyModel.STEADY_PROGRESS, reason="Boundaries now"), me)
    crisis = uuid4()
    run(c.RaiseRisk(plan_id=plan_id, level=RiskLevel.HIGH, reason="PHQ-9 item 9 positive"), service)
    run(c.ActivateEmergencySupport(plan_id=plan_id, crisis_id=crisis, reason="Crisis raised"), service)
    run(c.RecordCrisisResolved(plan_id=plan_id, crisis_id=crisis, outcome="Safety plan agreed"), service)
    run(c.EndEmergencySupport(plan_id=plan_id, strategy=Strategy.MID_TERM_IN_DEPTH, reason="Crisis over"), supervisor)
    run(c.LowerRisk(plan_id=plan_id, level=RiskLevel.LOW, reason="Reviewed"), supervisor)
    run(c.RaiseCrisis(plan_id=plan_id, reason="Client disclosed a plan to overdose"), me)
    run(c.PutPlanOnHold(plan_id=plan_id, reason="Client abroad"), me)
    run(c.ResumePlan(plan_id=plan_id), me)
    run(c.AchieveGoal(plan_id=plan_id, goal_id=goal_id), me)

    inventory = app.get_inventory(inventory_id)
    rel = next(iter(inventory.relationships))
    run(c.ReviseRelationship(inventory_id=inventory_id, relationship_id=rel, closeness=4, satisfaction=3), me)

    course = app.get_course(course_id)
    pending = [s.id for s in course.sessions.values() if s.status.value == "scheduled"]
    run(c.MissSession(course_id=course_id, session_id=pending[0]), me)
    run(c.ExtendCourse(course_id=course_id, planned_sessions=16, reason="Late start on the dispute"), me)
    cancelled = c.ScheduleSession(course_id=course_id, scheduled_for=WHEN)
    run(cancelled, me)
    run(c.CancelSession(course_id=course_id, session_id=cancelled.session_id, reason="Therapist ill"), me)
    run(c.EnterTerminationPhase(course_id=course_id), me)
    run(c.CompleteCourse(course_id=course_id), me)
    second = run(c.StartCourse(plan_id=plan_id, modality=Modality.MINDFULNESS_BASED, planned_sessions=8), me)
    run(c.DiscontinueCourse(course_id=second.aggregate_id, reason="Client preferred group sessions"), me)
    run(c.CompletePlan(plan_id=plan_id, reason="Goals met"), me)

    other = run(
        c.DraftCarePlan(client_id="client-43", title="Brief", strategy="short_term_deep_impact", therapy_models=["steady_drive"]),
        me,
    )
    run(c.RevokePlan(plan_id=other.aggregate_id, reason="Opened in error"), me)
    return plan_id, course_id, inventory_id
