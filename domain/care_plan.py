"""The CarePlan aggregate: one client episode's goals, expectations, strategy, models and risk."""

from __future__ import annotations

from datetime import datetime
from typing import Self
from uuid import UUID

from pydantic import BaseModel, Field

from domain.base import (
    CRISIS_HANDS,
    Actor,
    AggregateRoot,
    CommandContext,
    Role,
    require_clinical_role,
    require_reason,
    require_role,
    require_text,
    when,
)
from domain.catalogues.care import (
    ENHANCEMENT_ORDER,
    CopingSkill,
    EnhancementStage,
    ExpectationHolder,
    ExpertBacking,
    GoalStatus,
    HarmfulEmotion,
    PlanStatus,
)
from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from domain.errors import (
    AllianceIncompleteError,
    CopingSkillError,
    EmergencySupportError,
    EnhancementStageOrderError,
    ExpectationAlreadyIdentifiedError,
    ExpectationNotIdentifiedError,
    GoalClosedError,
    InvalidStatusTransitionError,
    PlanNotActiveError,
    RiskLevelError,
    StrategyUnchangedError,
    TherapyModelError,
    UnknownExpectationError,
    UnknownGoalError,
)
from domain.events.care_plan import (
    CarePlanActivated,
    CarePlanCompleted,
    CarePlanDrafted,
    CarePlanPutOnHold,
    CarePlanResumed,
    CarePlanRevoked,
    ConfidentialityExplained,
    ConsentRecorded,
    CopingSkillProgressRecorded,
    CopingSkillTargeted,
    CrisisRaisedByClinician,
    CrisisResolutionRecorded,
    EmergencySupportActivated,
    EmergencySupportEnded,
    EnhancementStageCompleted,
    EnhancementStageStarted,
    ExpectationAdjusted,
    ExpectationIdentifiedUnrealistic,
    ExpectationRecorded,
    ExpertBackingGiven,
    GoalAbandoned,
    GoalAchieved,
    GoalAdded,
    GoalAgreed,
    GoalRevised,
    GoalTarget,
    HarmfulEmotionReleased,
    RiskLevelLowered,
    RiskLevelRaised,
    StrategyChanged,
    TherapyModelDropped,
    TherapyModelFocused,
)

CLOSED_STATUSES = frozenset({PlanStatus.COMPLETED, PlanStatus.REVOKED})


class Goal(BaseModel):
    id: UUID
    description: str
    target: GoalTarget | None = None
    status: GoalStatus = GoalStatus.PROPOSED
    revisions: int = 0


class ExpectationAdjustment(BaseModel):
    """One link of an expectation's chain: what it was, what it became, who, when, why."""

    version: int
    previous_statement: str
    adjusted_statement: str
    actor: Actor
    at: datetime
    reason: str


class BackingRecord(BaseModel):
    backing: ExpertBacking
    note: str
    actor: Actor
    at: datetime


class Expectation(BaseModel):
    id: UUID
    holder: ExpectationHolder
    original_statement: str
    statement: str
    identified_unrealistic: bool = False
    identification_rationale: str | None = None
    adjustments: list[ExpectationAdjustment] = Field(default_factory=list)
    backing: list[BackingRecord] = Field(default_factory=list)


class EmotionalValueEnhancement(BaseModel):
    current_stage: EnhancementStage | None = None
    completed_stages: list[EnhancementStage] = Field(default_factory=list)
    emotions_released: list[HarmfulEmotion] = Field(default_factory=list)

    def next_stage(self) -> EnhancementStage | None:
        done = len(self.completed_stages)
        return ENHANCEMENT_ORDER[done] if done < len(ENHANCEMENT_ORDER) else None


class CarePlan(AggregateRoot):
    created_event = CarePlanDrafted

    client_id: str
    title: str
    status: PlanStatus = PlanStatus.DRAFT
    consent_recorded: bool = False
    confidentiality_explained: bool = False
    goals: dict[UUID, Goal] = Field(default_factory=dict)
    expectations: dict[UUID, Expectation] = Field(default_factory=dict)
    enhancement: EmotionalValueEnhancement = Field(default_factory=EmotionalValueEnhancement)
    strategy: Strategy
    strategy_before_emergency: Strategy | None = None
    open_crises: list[UUID] = Field(default_factory=list)
    therapy_models: list[TherapyModel]
    risk_level: RiskLevel = RiskLevel.NONE
    coping_skills: dict[CopingSkill, list[str]] = Field(default_factory=dict)

    # ----------------------------------------------------------------- creation

    @classmethod
    def draft(
        cls,
        plan_id: UUID,
        *,
        client_id: str,
        title: str,
        strategy: Strategy,
        therapy_models: list[TherapyModel],
        ctx: CommandContext,
    ) -> Self:
        if not therapy_models:
            msg = "A care plan focuses on at least one therapy model; name one in 'therapy_models'."
            raise TherapyModelError(msg)
        if len(set(therapy_models)) != len(therapy_models):
            msg = "Each therapy model may be named only once."
            raise TherapyModelError(msg)
        if strategy is Strategy.EMERGENCY_SUPPORT:
            msg = "Emergency support is entered by raising a crisis, not chosen when drafting a plan."
            raise EmergencySupportError(msg)
        return cls._start(
            CarePlanDrafted,
            ctx,
            plan_id,
            client_id=require_text(client_id, "client_id", 200),
            title=require_text(title, "title", 200),
            strategy=strategy,
            therapy_models=list(therapy_models),
        )

    @classmethod
    def _from_created(cls, event: CarePlanDrafted) -> Self:  # type: ignore[override]
        return cls._created(
            event,
            client_id=event.client_id,
            title=event.title,
            strategy=event.strategy,
            therapy_models=list(event.therapy_models),
        )

    # ----------------------------------------------------------------- guards

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED_STATUSES

    @property
    def alliance_complete(self) -> bool:
        return (
            self.consent_recorded
            and self.confidentiality_explained
            and any(g.status in (GoalStatus.AGREED, GoalStatus.ACHIEVED) for g in self.goals.values())
        )

    def _require_open(self) -> None:
        if not self.is_open:
            msg = f"Care plan {self.id} is {self.status.value}; a closed plan takes no further changes. Draft a new plan instead."
            raise PlanNotActiveError(msg)

    def _goal(self, goal_id: UUID) -> Goal:
        try:
            return self.goals[goal_id]
        except KeyError:
            msg = f"Care plan {self.id} has no goal {goal_id}; add the goal first."
            raise UnknownGoalError(msg) from None

    def _open_goal(self, goal_id: UUID) -> Goal:
        goal = self._goal(goal_id)
        if goal.status in (GoalStatus.ACHIEVED, GoalStatus.ABANDONED):
            msg = f"Goal {goal_id} is {goal.status.value}; add a new goal instead of changing a closed one."
            raise GoalClosedError(msg)
        return goal

    def _expectation(self, expectation_id: UUID) -> Expectation:
        try:
            return self.expectations[expectation_id]
        except KeyError:
            msg = f"Care plan {self.id} has no expectation {expectation_id}; record it first."
            raise UnknownExpectationError(msg) from None

    # ----------------------------------------------------------------- therapeutic alliance

    def record_consent(self, *, note: str | None = None, ctx: CommandContext) -> None:
        self._require_open()
        if self.consent_recorded:
            msg = "Consent is already recorded for this plan."
            raise InvalidStatusTransitionError(msg)
        self._trigger(ConsentRecorded, ctx, note=note)

    @when(ConsentRecorded)
    def _consent_recorded(self, _: ConsentRecorded) -> None:
        self.consent_recorded = True

    def explain_confidentiality(self, *, note: str | None = None, ctx: CommandContext) -> None:
        self._require_open()
        if self.confidentiality_explained:
            msg = "Confidentiality has already been explained and recorded for this plan."
            raise InvalidStatusTransitionError(msg)
        self._trigger(ConfidentialityExplained, ctx, note=note)

    @when(ConfidentialityExplained)
    def _confidentiality_explained(self, _: ConfidentialityExplained) -> None:
        self.confidentiality_explained = True

    # ----------------------------------------------------------------- lifecycle

    def activate(self, *, ctx: CommandContext) -> None:
        if self.status is not PlanStatus.DRAFT:
            msg = f"Only a draft plan can be activated; this plan is {self.status.value}."
            raise InvalidStatusTransitionError(msg)
        missing = [
            what
            for what, done in (
                ("client consent", self.consent_recorded),
                ("confidentiality explained", self.confidentiality_explained),
                (
                    "at least one goal agreed with the client",
                    any(g.status in (GoalStatus.AGREED, GoalStatus.ACHIEVED) for g in self.goals.values()),
                ),
            )
            if not done
        ]
        if missing:
            msg = "The therapeutic alliance is not yet recorded; first record: " + ", ".join(missing) + "."
            raise AllianceIncompleteError(msg)
        self._trigger(CarePlanActivated, ctx)

    @when(CarePlanActivated)
    def _activated(self, _: CarePlanActivated) -> None:
        self.status = PlanStatus.ACTIVE

    def _require_no_open_crisis(self, what: str) -> None:
        """A plan in crisis stays followed (escalation, care policies) until the crisis is resolved."""
        if self.open_crises:
            msg = (f"This plan has an unresolved crisis ({', '.join(str(c) for c in self.open_crises)}); "
                   f"resolve it first, then {what}.")
            raise EmergencySupportError(msg)

    def put_on_hold(self, *, reason: str | None, ctx: CommandContext) -> None:
        if self.status is not PlanStatus.ACTIVE:
            msg = f"Only an active plan can be put on hold; this plan is {self.status.value}."
            raise InvalidStatusTransitionError(msg)
        self._require_no_open_crisis("put the plan on hold")
        self._trigger(CarePlanPutOnHold, ctx, reason=require_reason(reason, "put a plan on hold"))

    @when(CarePlanPutOnHold)
    def _put_on_hold(self, _: CarePlanPutOnHold) -> None:
        self.status = PlanStatus.ON_HOLD

    def resume(self, *, reason: str | None = None, ctx: CommandContext) -> None:
        if self.status is not PlanStatus.ON_HOLD:
            msg = f"Only a plan on hold can be resumed; this plan is {self.status.value}."
            raise InvalidStatusTransitionError(msg)
        self._trigger(CarePlanResumed, ctx, reason=reason)

    @when(CarePlanResumed)
    def _resumed(self, _: CarePlanResumed) -> None:
        self.status = PlanStatus.ACTIVE

    def complete(self, *, reason: str | None = None, ctx: CommandContext) -> None:
        if self.status not in (PlanStatus.ACTIVE, PlanStatus.ON_HOLD):
            msg = f"Only an active or on-hold plan can be completed; this plan is {self.status.value}."
            raise InvalidStatusTransitionError(msg)
        if self.open_crises:
            msg = "A plan with an unresolved crisis cannot be completed; resolve the crisis first."
            raise EmergencySupportError(msg)
        self._trigger(CarePlanCompleted, ctx, reason=reason)

    @when(CarePlanCompleted)
    def _completed(self, _: CarePlanCompleted) -> None:
        self.status = PlanStatus.COMPLETED

    def revoke(self, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_open()
        self._require_no_open_crisis("revoke the plan")
        self._trigger(CarePlanRevoked, ctx, reason=require_reason(reason, "revoke a plan"))

    @when(CarePlanRevoked)
    def _revoked(self, _: CarePlanRevoked) -> None:
        self.status = PlanStatus.REVOKED

    # ----------------------------------------------------------------- goals

    def add_goal(
        self,
        goal_id: UUID,
        *,
        description: str,
        target: GoalTarget | None = None,
        reason: str | None = None,
        ctx: CommandContext,
    ) -> None:
        self._require_open()
        if goal_id in self.goals:
            msg = f"Goal {goal_id} already exists on this plan; revise it instead."
            raise InvalidStatusTransitionError(msg)
        self._trigger(
            GoalAdded, ctx, goal_id=goal_id, description=require_text(description, "description"), target=target, reason=reason
        )

    @when(GoalAdded)
    def _goal_added(self, event: GoalAdded) -> None:
        self.goals[event.goal_id] = Goal(id=event.goal_id, description=event.description, target=event.target)

    def agree_goal(self, goal_id: UUID, *, ctx: CommandContext) -> None:
        self._require_open()
        goal = self._open_goal(goal_id)
        if goal.status is GoalStatus.AGREED:
            msg = f"Goal {goal_id} is already agreed."
            raise InvalidStatusTransitionError(msg)
        self._trigger(GoalAgreed, ctx, goal_id=goal_id)

    @when(GoalAgreed)
    def _goal_agreed(self, event: GoalAgreed) -> None:
        self.goals[event.goal_id].status = GoalStatus.AGREED

    def revise_goal(
        self,
        goal_id: UUID,
        *,
        description: str,
        target: GoalTarget | None = None,
        reason: str | None,
        ctx: CommandContext,
    ) -> None:
        self._require_open()
        goal = self._open_goal(goal_id)
        description = require_text(description, "description")
        if description == goal.description and target == goal.target:
            msg = "The revision changes nothing; give a new description or target."
            raise InvalidStatusTransitionError(msg)
        self._trigger(
            GoalRevised,
            ctx,
            goal_id=goal_id,
            previous_description=goal.description,
            description=description,
            previous_target=goal.target,
            target=target,
            reason=require_reason(reason, "revise a goal"),
        )

    @when(GoalRevised)
    def _goal_revised(self, event: GoalRevised) -> None:
        goal = self.goals[event.goal_id]
        goal.description = event.description
        goal.target = event.target
        goal.revisions += 1

    def achieve_goal(self, goal_id: UUID, *, reason: str | None = None, ctx: CommandContext) -> None:
        self._require_open()
        self._open_goal(goal_id)
        self._trigger(GoalAchieved, ctx, goal_id=goal_id, reason=reason)

    @when(GoalAchieved)
    def _goal_achieved(self, event: GoalAchieved) -> None:
        self.goals[event.goal_id].status = GoalStatus.ACHIEVED

    def abandon_goal(self, goal_id: UUID, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_open()
        self._open_goal(goal_id)
        self._trigger(GoalAbandoned, ctx, goal_id=goal_id, reason=require_reason(reason, "abandon a goal"))

    @when(GoalAbandoned)
    def _goal_abandoned(self, event: GoalAbandoned) -> None:
        self.goals[event.goal_id].status = GoalStatus.ABANDONED

    # ----------------------------------------------------------------- expectations (supportive therapy)

    def record_expectation(
        self, expectation_id: UUID, *, holder: ExpectationHolder, statement: str, ctx: CommandContext
    ) -> None:
        self._require_open()
        if expectation_id in self.expectations:
            msg = f"Expectation {expectation_id} is already recorded; adjust it instead."
            raise InvalidStatusTransitionError(msg)
        self._trigger(
            ExpectationRecorded,
            ctx,
            expectation_id=expectation_id,
            holder=holder,
            statement=require_text(statement, "statement"),
        )

    @when(ExpectationRecorded)
    def _expectation_recorded(self, event: ExpectationRecorded) -> None:
        self.expectations[event.expectation_id] = Expectation(
            id=event.expectation_id,
            holder=event.holder,
            original_statement=event.statement,
            statement=event.statement,
        )

    def identify_unrealistic_expectation(
        self, expectation_id: UUID, *, rationale: str | None, ctx: CommandContext
    ) -> None:
        self._require_open()
        expectation = self._expectation(expectation_id)
        if expectation.identified_unrealistic and not expectation.adjustments:
            msg = f"Expectation {expectation_id} is already identified as unrealistic; adjust it to a fair goal."
            raise ExpectationAlreadyIdentifiedError(msg)
        self._trigger(
            ExpectationIdentifiedUnrealistic,
            ctx,
            expectation_id=expectation_id,
            statement=expectation.statement,
            reason=require_reason(rationale, "identify an expectation as unrealistic"),
        )

    @when(ExpectationIdentifiedUnrealistic)
    def _expectation_identified(self, event: ExpectationIdentifiedUnrealistic) -> None:
        expectation = self.expectations[event.expectation_id]
        expectation.identified_unrealistic = True
        expectation.identification_rationale = event.reason

    def adjust_expectation(
        self, expectation_id: UUID, *, fair_goal: str, rationale: str | None, ctx: CommandContext
    ) -> None:
        """Re-words an expectation identified as unrealistic into a fair goal."""
        self._require_open()
        expectation = self._expectation(expectation_id)
        if not expectation.identified_unrealistic:
            msg = (
                f"Expectation {expectation_id} has not been identified as unrealistic; "
                "identify it (with a rationale) before adjusting it."
            )
            raise ExpectationNotIdentifiedError(msg)
        fair_goal = require_text(fair_goal, "fair_goal")
        if fair_goal == expectation.statement:
            msg = "The adjusted wording is the same as the current one; give the fair goal it becomes."
            raise InvalidStatusTransitionError(msg)
        self._trigger(
            ExpectationAdjusted,
            ctx,
            expectation_id=expectation_id,
            previous_statement=expectation.statement,
            adjusted_statement=fair_goal,
            reason=require_reason(rationale, "adjust an expectation"),
        )

    @when(ExpectationAdjusted)
    def _expectation_adjusted(self, event: ExpectationAdjusted) -> None:
        expectation = self.expectations[event.expectation_id]
        expectation.adjustments.append(
            ExpectationAdjustment(
                version=event.originator_version,
                previous_statement=event.previous_statement,
                adjusted_statement=event.adjusted_statement,
                actor=event.actor,
                at=event.timestamp,
                reason=event.reason or "",
            )
        )
        expectation.statement = event.adjusted_statement

    def give_expert_backing(
        self,
        *,
        backing: ExpertBacking,
        note: str,
        expectation_id: UUID | None = None,
        ctx: CommandContext,
    ) -> None:
        self._require_open()
        if expectation_id is not None:
            self._expectation(expectation_id)
        self._trigger(
            ExpertBackingGiven, ctx, expectation_id=expectation_id, backing=backing, note=require_text(note, "note")
        )

    @when(ExpertBackingGiven)
    def _backing_given(self, event: ExpertBackingGiven) -> None:
        if event.expectation_id is not None:
            self.expectations[event.expectation_id].backing.append(
                BackingRecord(backing=event.backing, note=event.note, actor=event.actor, at=event.timestamp)
            )

    # ----------------------------------------------------------------- emotional-value enhancement

    def start_enhancement_stage(self, stage: EnhancementStage, *, ctx: CommandContext) -> None:
        self._require_open()
        state = self.enhancement
        if state.current_stage is not None:
            msg = f"Stage {state.current_stage.value} is still in progress; complete it before starting {stage.value}."
            raise EnhancementStageOrderError(msg)
        expected = state.next_stage()
        if expected is None:
            msg = "All three emotional-value enhancement stages are complete."
            raise EnhancementStageOrderError(msg)
        if stage is not expected:
            msg = f"Emotional-value enhancement goes in order; the next stage is {expected.value}, not {stage.value}."
            raise EnhancementStageOrderError(msg)
        self._trigger(EnhancementStageStarted, ctx, stage=stage)

    @when(EnhancementStageStarted)
    def _stage_started(self, event: EnhancementStageStarted) -> None:
        self.enhancement.current_stage = event.stage

    def release_harmful_emotion(self, emotion: HarmfulEmotion, *, note: str | None = None, ctx: CommandContext) -> None:
        self._require_open()
        if self.enhancement.current_stage is not EnhancementStage.RELEASE_HARMFUL_EMOTIONS:
            msg = "Harmful emotions are released during the 'release_harmful_emotions' stage; start that stage first."
            raise EnhancementStageOrderError(msg)
        self._trigger(HarmfulEmotionReleased, ctx, emotion=emotion, note=note)

    @when(HarmfulEmotionReleased)
    def _emotion_released(self, event: HarmfulEmotionReleased) -> None:
        if event.emotion not in self.enhancement.emotions_released:
            self.enhancement.emotions_released.append(event.emotion)

    def complete_enhancement_stage(
        self, stage: EnhancementStage, *, note: str | None = None, ctx: CommandContext
    ) -> None:
        self._require_open()
        if self.enhancement.current_stage is not stage:
            current = self.enhancement.current_stage.value if self.enhancement.current_stage else "none"
            msg = f"Stage {stage.value} is not in progress (current: {current}); start it before completing it."
            raise EnhancementStageOrderError(msg)
        if stage is EnhancementStage.RELEASE_HARMFUL_EMOTIONS and not self.enhancement.emotions_released:
            msg = "Record at least one harmful emotion released before completing the release stage."
            raise EnhancementStageOrderError(msg)
        self._trigger(EnhancementStageCompleted, ctx, stage=stage, note=note)

    @when(EnhancementStageCompleted)
    def _stage_completed(self, event: EnhancementStageCompleted) -> None:
        self.enhancement.completed_stages.append(event.stage)
        self.enhancement.current_stage = None

    # ----------------------------------------------------------------- strategy

    def change_strategy(self, strategy: Strategy, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_open()
        if strategy is Strategy.EMERGENCY_SUPPORT:
            msg = "Emergency support is entered by raising a crisis, which links the cause; raise a crisis instead."
            raise EmergencySupportError(msg)
        if self.strategy is Strategy.EMERGENCY_SUPPORT:
            msg = "The plan is in emergency support; leave it with end_emergency_support once the crisis is resolved."
            raise EmergencySupportError(msg)
        if strategy is self.strategy:
            msg = f"Strategy {strategy.value} is already in force."
            raise StrategyUnchangedError(msg)
        self._trigger(
            StrategyChanged,
            ctx,
            previous_strategy=self.strategy,
            strategy=strategy,
            reason=require_reason(reason, "change the strategy"),
        )

    @when(StrategyChanged)
    def _strategy_changed(self, event: StrategyChanged) -> None:
        self.strategy = event.strategy

    def activate_emergency_support(self, crisis_id: UUID, *, reason: str | None, ctx: CommandContext) -> None:
        """Entered when a crisis is escalated; ``ctx.causation_id`` links the causing event."""
        self._require_open()
        require_role(ctx.actor, CRISIS_HANDS, "enter emergency support",
                     "Raise a crisis instead: escalation enters emergency support with it.")
        if crisis_id in self.open_crises:
            msg = f"Emergency support is already active for crisis {crisis_id}."
            raise EmergencySupportError(msg)
        self._trigger(
            EmergencySupportActivated,
            ctx,
            crisis_id=crisis_id,
            previous_strategy=self.strategy,
            reason=require_reason(reason, "activate emergency support"),
        )

    @when(EmergencySupportActivated)
    def _emergency_activated(self, event: EmergencySupportActivated) -> None:
        if self.strategy is not Strategy.EMERGENCY_SUPPORT:
            self.strategy_before_emergency = self.strategy
        self.strategy = Strategy.EMERGENCY_SUPPORT
        self.open_crises.append(event.crisis_id)

    def raise_crisis(self, *, reason: str | None, ctx: CommandContext) -> None:
        """A clinician's judgement that the client is in crisis (escalated immediately)."""
        self._require_open()
        require_clinical_role(ctx.actor, "raise a crisis")
        self._trigger(CrisisRaisedByClinician, ctx, client_id=self.client_id, reason=require_reason(reason, "raise a crisis"))

    def record_crisis_resolved(self, crisis_id: UUID, *, outcome: str, ctx: CommandContext) -> None:
        self._require_open()
        require_role(ctx.actor, CRISIS_HANDS, "record a crisis as resolved",
                     "Resolve the crisis with the escalation service; the plan records it then.")
        if crisis_id not in self.open_crises:
            msg = f"Crisis {crisis_id} is not open on this plan."
            raise EmergencySupportError(msg)
        self._trigger(CrisisResolutionRecorded, ctx, crisis_id=crisis_id, outcome=require_text(outcome, "outcome"))

    @when(CrisisResolutionRecorded)
    def _crisis_resolved(self, event: CrisisResolutionRecorded) -> None:
        self.open_crises.remove(event.crisis_id)

    def end_emergency_support(self, strategy: Strategy, *, reason: str | None, ctx: CommandContext) -> None:
        """A supervisor's clinical decision, once every crisis that caused emergency support is resolved."""
        self._require_open()
        require_role(ctx.actor, frozenset({Role.SUPERVISOR}), "end emergency support")
        if self.strategy is not Strategy.EMERGENCY_SUPPORT:
            msg = f"The plan is not in emergency support (strategy: {self.strategy.value})."
            raise EmergencySupportError(msg)
        if self.open_crises:
            msg = "Emergency support can end only once its crisis is resolved; open: " + ", ".join(
                str(c) for c in self.open_crises
            )
            raise EmergencySupportError(msg)
        if strategy is Strategy.EMERGENCY_SUPPORT:
            msg = "Name the strategy that follows emergency support."
            raise EmergencySupportError(msg)
        self._trigger(EmergencySupportEnded, ctx, strategy=strategy, reason=require_reason(reason, "end emergency support"))

    @when(EmergencySupportEnded)
    def _emergency_ended(self, event: EmergencySupportEnded) -> None:
        self.strategy = event.strategy
        self.strategy_before_emergency = None

    # ----------------------------------------------------------------- therapy models

    def focus_on_model(self, model: TherapyModel, *, reason: str | None = None, ctx: CommandContext) -> None:
        self._require_open()
        if model in self.therapy_models:
            msg = f"The plan already focuses on {model.value}."
            raise TherapyModelError(msg)
        self._trigger(TherapyModelFocused, ctx, model=model, reason=reason)

    @when(TherapyModelFocused)
    def _model_focused(self, event: TherapyModelFocused) -> None:
        self.therapy_models.append(event.model)

    def drop_model(self, model: TherapyModel, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_open()
        if model not in self.therapy_models:
            msg = f"The plan does not focus on {model.value}."
            raise TherapyModelError(msg)
        if len(self.therapy_models) == 1:
            msg = "A plan focuses on at least one therapy model; focus on another before dropping this one."
            raise TherapyModelError(msg)
        self._trigger(TherapyModelDropped, ctx, model=model, reason=require_reason(reason, "drop a therapy model"))

    @when(TherapyModelDropped)
    def _model_dropped(self, event: TherapyModelDropped) -> None:
        self.therapy_models.remove(event.model)

    # ----------------------------------------------------------------- risk

    def raise_risk(self, level: RiskLevel, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_open()
        if level.rank <= self.risk_level.rank:
            msg = f"Risk level is {self.risk_level.value}; raising means a higher level than that, not {level.value}."
            raise RiskLevelError(msg)
        self._trigger(
            RiskLevelRaised,
            ctx,
            previous_level=self.risk_level,
            level=level,
            reason=require_reason(reason, "raise the risk level"),
        )

    @when(RiskLevelRaised)
    def _risk_raised(self, event: RiskLevelRaised) -> None:
        self.risk_level = event.level

    def lower_risk(self, level: RiskLevel, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_open()
        require_clinical_role(ctx.actor, "lower a risk level")
        if level.rank >= self.risk_level.rank:
            msg = f"Risk level is {self.risk_level.value}; lowering means a lower level than that, not {level.value}."
            raise RiskLevelError(msg)
        self._trigger(
            RiskLevelLowered,
            ctx,
            previous_level=self.risk_level,
            level=level,
            reason=require_reason(reason, "lower the risk level"),
        )

    @when(RiskLevelLowered)
    def _risk_lowered(self, event: RiskLevelLowered) -> None:
        self.risk_level = event.level

    # ----------------------------------------------------------------- coping skills

    def target_coping_skill(self, skill: CopingSkill, *, reason: str | None = None, ctx: CommandContext) -> None:
        self._require_open()
        if skill in self.coping_skills:
            msg = f"{skill.value} is already being built; record progress on it instead."
            raise CopingSkillError(msg)
        self._trigger(CopingSkillTargeted, ctx, skill=skill, reason=reason)

    @when(CopingSkillTargeted)
    def _skill_targeted(self, event: CopingSkillTargeted) -> None:
        self.coping_skills[event.skill] = []

    def record_skill_progress(self, skill: CopingSkill, *, note: str, ctx: CommandContext) -> None:
        self._require_open()
        if skill not in self.coping_skills:
            msg = f"{skill.value} is not being built on this plan; target it first."
            raise CopingSkillError(msg)
        self._trigger(CopingSkillProgressRecorded, ctx, skill=skill, note=require_text(note, "note"))

    @when(CopingSkillProgressRecorded)
    def _skill_progress(self, event: CopingSkillProgressRecorded) -> None:
        self.coping_skills[event.skill].append(event.note)
