"""CarePlan rules, with no I/O: each rule refused leaves the plan exactly as it was."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from domain.base import Actor, Role
from domain.care_plan import CarePlan
from domain.catalogues.care import (
    CopingSkill,
    EnhancementStage,
    ExpectationHolder,
    ExpertBacking,
    GoalStatus,
    HarmfulEmotion,
    PlanStatus,
)
from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import STRATEGY_TITLES, Strategy
from domain.catalogues.therapy_models import MODEL_FOCUS, TherapyModel
from domain.errors import (
    AllianceIncompleteError,
    CopingSkillError,
    DomainError,
    EmergencySupportError,
    EnhancementStageOrderError,
    ExpectationNotIdentifiedError,
    GoalClosedError,
    InvalidStatusTransitionError,
    NotAuthorisedError,
    PlanNotActiveError,
    ReasonRequiredError,
    RiskLevelError,
    StrategyUnchangedError,
    TherapyModelError,
    UnknownExpectationError,
)
from domain.events.care_plan import EmergencySupportActivated, ExpectationAdjusted, StrategyChanged
from tests.conftest import CLINICIAN, ESCALATION, SUPERVISOR, ctx


def draft() -> CarePlan:
    return CarePlan.draft(
        uuid4(),
        client_id="client-1",
        title="Episode",
        strategy=Strategy.SHORT_TERM_MODERATE,
        therapy_models=[TherapyModel.STEADY_PROGRESS],
        ctx=ctx(),
    )


def active() -> tuple[CarePlan, UUID]:
    plan = draft()
    goal_id = uuid4()
    plan.record_consent(ctx=ctx())
    plan.explain_confidentiality(ctx=ctx())
    plan.add_goal(goal_id, description="Sleep through most nights", ctx=ctx())
    plan.agree_goal(goal_id, ctx=ctx())
    plan.activate(ctx=ctx())
    return plan, goal_id


def refused(plan: CarePlan, error: type[DomainError], command, *args, **kwargs) -> DomainError:  # type: ignore[no-untyped-def]
    """Runs a command that must be refused, and checks that it changed nothing."""
    before = plan.model_dump()
    pending = len(plan.pending_events)
    with pytest.raises(error) as info:
        command(*args, **kwargs)
    assert plan.model_dump() == before
    assert len(plan.pending_events) == pending
    assert str(info.value)
    return info.value


def test_catalogues_hold_all_seven_strategies_and_twelve_models() -> None:
    assert [s.number for s in Strategy] == [1, 2, 3, 4, 5, 6, 7]
    assert Strategy.EMERGENCY_SUPPORT.number == 6
    assert set(STRATEGY_TITLES) == set(Strategy)
    assert len(TherapyModel) == 12
    assert set(MODEL_FOCUS) == set(TherapyModel)
    assert TherapyModel.HOLINESS_OF_LIFE.title == "Holiness Of Life"


def test_drafting_records_who_and_when_and_starts_in_draft() -> None:
    plan = draft()
    (event,) = plan.collect_events()
    assert plan.status is PlanStatus.DRAFT
    assert event.originator_version == 1
    assert event.actor == CLINICIAN
    assert plan.version == 1 and plan.created_on == event.timestamp
    assert plan.collect_events() == []


def test_drafting_refuses_no_models_duplicate_models_and_emergency_support() -> None:
    with pytest.raises(TherapyModelError):
        CarePlan.draft(uuid4(), client_id="c", title="t", strategy=Strategy.SHORT_TERM_MODERATE, therapy_models=[], ctx=ctx())
    with pytest.raises(TherapyModelError):
        CarePlan.draft(
            uuid4(), client_id="c", title="t", strategy=Strategy.SHORT_TERM_MODERATE,
            therapy_models=[TherapyModel.FULFILLMENT, TherapyModel.FULFILLMENT], ctx=ctx(),
        )
    with pytest.raises(EmergencySupportError):
        CarePlan.draft(
            uuid4(), client_id="c", title="t", strategy=Strategy.EMERGENCY_SUPPORT,
            therapy_models=[TherapyModel.FULFILLMENT], ctx=ctx(),
        )


@pytest.mark.parametrize("missing", ["consent", "confidentiality", "agreed goal"])
def test_alliance_is_recorded_before_activation(missing: str) -> None:
    plan = draft()
    if missing != "consent":
        plan.record_consent(ctx=ctx())
    if missing != "confidentiality":
        plan.explain_confidentiality(ctx=ctx())
    goal_id = uuid4()
    plan.add_goal(goal_id, description="A goal", ctx=ctx())
    if missing != "agreed goal":
        plan.agree_goal(goal_id, ctx=ctx())
    error = refused(plan, AllianceIncompleteError, plan.activate, ctx=ctx())
    assert missing.split()[0] in str(error)


def test_lifecycle_active_on_hold_resumed_completed_then_closed() -> None:
    plan, goal_id = active()
    refused(plan, ReasonRequiredError, plan.put_on_hold, reason="  ", ctx=ctx())
    plan.put_on_hold(reason="Client travelling for a month", ctx=ctx())
    assert plan.status is PlanStatus.ON_HOLD
    refused(plan, InvalidStatusTransitionError, plan.activate, ctx=ctx())
    plan.resume(ctx=ctx())
    plan.complete(ctx=ctx())
    assert plan.status is PlanStatus.COMPLETED
    refused(plan, PlanNotActiveError, plan.add_goal, uuid4(), description="x", ctx=ctx())
    refused(plan, PlanNotActiveError, plan.revoke, reason="x", ctx=ctx())


def test_revoke_needs_a_reason_and_closes_the_plan() -> None:
    plan = draft()
    refused(plan, ReasonRequiredError, plan.revoke, reason=None, ctx=ctx())
    plan.revoke(reason="Referred to another service", ctx=ctx())
    assert plan.status is PlanStatus.REVOKED
    refused(plan, PlanNotActiveError, plan.record_consent, ctx=ctx())


def test_goals_are_revised_with_reason_and_closed_goals_stay_closed() -> None:
    plan, goal_id = active()
    refused(plan, ReasonRequiredError, plan.revise_goal, goal_id, description="Sleep 6 hours", reason=None, ctx=ctx())
    plan.revise_goal(goal_id, description="Sleep 6 hours on 5 nights a week", reason="More measurable", ctx=ctx())
    assert plan.goals[goal_id].description == "Sleep 6 hours on 5 nights a week"
    assert plan.goals[goal_id].revisions == 1
    plan.achieve_goal(goal_id, ctx=ctx())
    assert plan.goals[goal_id].status is GoalStatus.ACHIEVED
    refused(plan, GoalClosedError, plan.abandon_goal, goal_id, reason="x", ctx=ctx())


def test_expectation_chain_keeps_every_adjustment_with_who_when_why() -> None:
    plan, _ = active()
    eid = uuid4()
    plan.record_expectation(eid, holder=ExpectationHolder.OTHERS, statement="Everyone must always approve of me", ctx=ctx())
    refused(plan, ExpectationNotIdentifiedError, plan.adjust_expectation, eid, fair_goal="x", rationale="y", ctx=ctx())
    refused(plan, ReasonRequiredError, plan.identify_unrealistic_expectation, eid, rationale="", ctx=ctx())
    plan.identify_unrealistic_expectation(eid, rationale="No one is approved of by everyone", ctx=ctx())
    plan.adjust_expectation(eid, fair_goal="Some people will approve of me", rationale="Fairer", ctx=ctx())
    plan.adjust_expectation(
        eid, fair_goal="People who know me well mostly approve of me", rationale="Client's own wording", ctx=ctx(SUPERVISOR)
    )
    plan.give_expert_backing(expectation_id=eid, backing=ExpertBacking.EMPATHY, note="Acknowledged the fear", ctx=ctx())
    expectation = plan.expectations[eid]
    assert expectation.original_statement == "Everyone must always approve of me"
    assert expectation.statement == "People who know me well mostly approve of me"
    assert [(a.previous_statement, a.adjusted_statement, a.actor, a.reason) for a in expectation.adjustments] == [
        ("Everyone must always approve of me", "Some people will approve of me", CLINICIAN, "Fairer"),
        ("Some people will approve of me", "People who know me well mostly approve of me", SUPERVISOR, "Client's own wording"),
    ]
    assert [b.backing for b in expectation.backing] == [ExpertBacking.EMPATHY]
    adjusted = [e for e in plan.collect_events() if isinstance(e, ExpectationAdjusted)]
    assert [e.reason for e in adjusted] == ["Fairer", "Client's own wording"]
    refused(plan, UnknownExpectationError, plan.adjust_expectation, uuid4(), fair_goal="x", rationale="y", ctx=ctx())


def test_emotional_value_enhancement_goes_in_order() -> None:
    plan, _ = active()
    refused(plan, EnhancementStageOrderError, plan.start_enhancement_stage, EnhancementStage.RELEASE_HARMFUL_EMOTIONS, ctx=ctx())
    plan.start_enhancement_stage(EnhancementStage.EXPLORE_CORE_BELIEFS, ctx=ctx())
    refused(plan, EnhancementStageOrderError, plan.release_harmful_emotion, HarmfulEmotion.ANGER, ctx=ctx())
    refused(plan, EnhancementStageOrderError, plan.start_enhancement_stage, EnhancementStage.RELEASE_HARMFUL_EMOTIONS, ctx=ctx())
    plan.complete_enhancement_stage(EnhancementStage.EXPLORE_CORE_BELIEFS, ctx=ctx())
    plan.start_enhancement_stage(EnhancementStage.RELEASE_HARMFUL_EMOTIONS, ctx=ctx())
    refused(plan, EnhancementStageOrderError, plan.complete_enhancement_stage, EnhancementStage.RELEASE_HARMFUL_EMOTIONS, ctx=ctx())
    plan.release_harmful_emotion(HarmfulEmotion.FRUSTRATION, ctx=ctx())
    plan.release_harmful_emotion(HarmfulEmotion.GUILT, ctx=ctx())
    plan.complete_enhancement_stage(EnhancementStage.RELEASE_HARMFUL_EMOTIONS, ctx=ctx())
    plan.start_enhancement_stage(EnhancementStage.BUILD_EMOTIONAL_MATURITY, ctx=ctx())
    plan.complete_enhancement_stage(EnhancementStage.BUILD_EMOTIONAL_MATURITY, ctx=ctx())
    assert plan.enhancement.completed_stages == list(EnhancementStage)
    refused(plan, EnhancementStageOrderError, plan.start_enhancement_stage, EnhancementStage.EXPLORE_CORE_BELIEFS, ctx=ctx())


def test_strategy_change_records_previous_new_and_reason() -> None:
    plan, _ = active()
    refused(plan, ReasonRequiredError, plan.change_strategy, Strategy.COMBINED_APPROACH, reason=None, ctx=ctx())
    refused(plan, StrategyUnchangedError, plan.change_strategy, Strategy.SHORT_TERM_MODERATE, reason="x", ctx=ctx())
    refused(plan, EmergencySupportError, plan.change_strategy, Strategy.EMERGENCY_SUPPORT, reason="x", ctx=ctx())
    plan.change_strategy(Strategy.COMBINED_APPROACH, reason="Needs deep work and guidance", ctx=ctx())
    event = plan.collect_events()[-1]
    assert isinstance(event, StrategyChanged)
    assert (event.previous_strategy, event.strategy, event.reason) == (
        Strategy.SHORT_TERM_MODERATE, Strategy.COMBINED_APPROACH, "Needs deep work and guidance"
    )


def test_emergency_support_entered_by_crisis_left_only_by_a_supervisor_after_resolution() -> None:
    plan, _ = active()
    crisis = uuid4()
    service = ctx(ESCALATION).model_copy(update={"causation_id": "escalation-raised-event"})
    plan.activate_emergency_support(crisis, reason="PHQ-9 item 9 positive", ctx=service)
    event = plan.pending_events[-1]
    assert isinstance(event, EmergencySupportActivated)
    assert event.causation_id == "escalation-raised-event"
    assert event.previous_strategy is Strategy.SHORT_TERM_MODERATE
    assert plan.strategy is Strategy.EMERGENCY_SUPPORT
    refused(plan, EmergencySupportError, plan.activate_emergency_support, crisis, reason="again", ctx=service)
    refused(plan, NotAuthorisedError, plan.activate_emergency_support, uuid4(), reason="made up", ctx=ctx())
    refused(plan, EmergencySupportError, plan.change_strategy, Strategy.LONG_TERM_DEEP_WORK, reason="x", ctx=ctx())
    refused(plan, EmergencySupportError, plan.end_emergency_support, Strategy.SHORT_TERM_MODERATE, reason="x", ctx=ctx(SUPERVISOR))
    refused(plan, EmergencySupportError, plan.complete, ctx=ctx())
    refused(plan, EmergencySupportError, plan.put_on_hold, reason="Client abroad", ctx=ctx())
    refused(plan, EmergencySupportError, plan.revoke, reason="Client withdrew", ctx=ctx())
    refused(plan, NotAuthorisedError, plan.record_crisis_resolved, crisis, outcome="Seems fine", ctx=ctx())
    plan.record_crisis_resolved(crisis, outcome="Safety plan agreed; client safe", ctx=service)
    refused(plan, NotAuthorisedError, plan.end_emergency_support, Strategy.SHORT_TERM_MODERATE, reason="x", ctx=service)
    refused(plan, NotAuthorisedError, plan.end_emergency_support, Strategy.SHORT_TERM_MODERATE, reason="x", ctx=ctx())
    refused(plan, ReasonRequiredError, plan.end_emergency_support, Strategy.SHORT_TERM_MODERATE, reason="", ctx=ctx(SUPERVISOR))
    plan.end_emergency_support(Strategy.MID_TERM_MODERATE_DEPTH, reason="Crisis resolved; stabilising", ctx=ctx(SUPERVISOR))
    assert plan.strategy is Strategy.MID_TERM_MODERATE_DEPTH
    assert plan.open_crises == [] and plan.strategy_before_emergency is None


def test_therapy_models_keep_at_least_one() -> None:
    plan, _ = active()
    refused(plan, TherapyModelError, plan.focus_on_model, TherapyModel.STEADY_PROGRESS, ctx=ctx())
    refused(plan, TherapyModelError, plan.drop_model, TherapyModel.STEADY_PROGRESS, reason="x", ctx=ctx())
    plan.focus_on_model(TherapyModel.PERSONAL_BOUNDARIES, ctx=ctx())
    plan.drop_model(TherapyModel.STEADY_PROGRESS, reason="Boundaries are the work now", ctx=ctx())
    assert plan.therapy_models == [TherapyModel.PERSONAL_BOUNDARIES]


def test_risk_is_raised_by_anyone_with_reason_and_lowered_only_by_clinicians() -> None:
    plan, _ = active()
    refused(plan, RiskLevelError, plan.raise_risk, RiskLevel.NONE, reason="x", ctx=ctx())
    plan.raise_risk(RiskLevel.HIGH, reason="C-SSRS positive", ctx=ctx(ESCALATION))
    refused(plan, RiskLevelError, plan.raise_risk, RiskLevel.MODERATE, reason="x", ctx=ctx())
    integration = Actor(id="ehr", role=Role.INTEGRATION)
    refused(plan, NotAuthorisedError, plan.lower_risk, RiskLevel.LOW, reason="x", ctx=ctx(integration))
    refused(plan, ReasonRequiredError, plan.lower_risk, RiskLevel.LOW, reason=None, ctx=ctx())
    refused(plan, RiskLevelError, plan.lower_risk, RiskLevel.IMMINENT, reason="x", ctx=ctx())
    plan.lower_risk(RiskLevel.LOW, reason="Safety plan in place, reviewed", ctx=ctx(SUPERVISOR))
    assert plan.risk_level is RiskLevel.LOW


def test_coping_skills_are_targeted_then_practised() -> None:
    plan, _ = active()
    refused(plan, CopingSkillError, plan.record_skill_progress, CopingSkill.MINDFULNESS_EXERCISES, note="x", ctx=ctx())
    plan.target_coping_skill(CopingSkill.MINDFULNESS_EXERCISES, ctx=ctx())
    plan.record_skill_progress(CopingSkill.MINDFULNESS_EXERCISES, note="Body scan 4 of 7 days", ctx=ctx())
    assert plan.coping_skills[CopingSkill.MINDFULNESS_EXERCISES] == ["Body scan 4 of 7 days"]


def test_every_event_carries_who_when_and_story() -> None:
    plan, _ = active()
    for event in plan.collect_events():
        assert event.actor == CLINICIAN
        assert event.correlation_id == UUID(int=1)
        assert event.event_id == type(event).model_validate_json(event.model_dump_json(exclude={"event_id"})).event_id
