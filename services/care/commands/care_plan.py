"""Commands on a CarePlan."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID, uuid4

from pydantic import Field

from domain.base import AggregateRoot, CommandContext, Role
from domain.care_plan import CarePlan
from domain.catalogues.care import CopingSkill, EnhancementStage, ExpectationHolder, ExpertBacking, HarmfulEmotion
from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from domain.events.care_plan import GoalTarget
from services.care.commands.base import Command, CreationCommand, CrisisNotHeldError, Lookup


class DraftCarePlan(CreationCommand):
    aggregate_type: ClassVar[type[AggregateRoot]] = CarePlan
    plan_id: UUID = Field(default_factory=uuid4)
    client_id: str
    title: str
    strategy: Strategy
    therapy_models: list[TherapyModel] = Field(max_length=20)

    def create(self, ctx: CommandContext, lookup: Lookup) -> AggregateRoot:
        return CarePlan.draft(
            self.plan_id,
            client_id=self.client_id,
            title=self.title,
            strategy=self.strategy,
            therapy_models=self.therapy_models,
            ctx=ctx,
        )


class PlanCommand(Command):
    aggregate_type: ClassVar[type[AggregateRoot]] = CarePlan
    plan_id: UUID

    def target_id(self) -> UUID:
        return self.plan_id


class RecordConsent(PlanCommand):
    note: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.record_consent(note=self.note, ctx=ctx)


class ExplainConfidentiality(PlanCommand):
    note: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.explain_confidentiality(note=self.note, ctx=ctx)


class ActivatePlan(PlanCommand):
    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.activate(ctx=ctx)


class PutPlanOnHold(PlanCommand):
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.put_on_hold(reason=self.reason, ctx=ctx)


class ResumePlan(PlanCommand):
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.resume(reason=self.reason, ctx=ctx)


class CompletePlan(PlanCommand):
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.complete(reason=self.reason, ctx=ctx)


class RevokePlan(PlanCommand):
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.revoke(reason=self.reason, ctx=ctx)


class AddGoal(PlanCommand):
    goal_id: UUID = Field(default_factory=uuid4)
    description: str
    target: GoalTarget | None = None
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.add_goal(self.goal_id, description=self.description, target=self.target, reason=self.reason, ctx=ctx)


class AgreeGoal(PlanCommand):
    goal_id: UUID

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.agree_goal(self.goal_id, ctx=ctx)


class ReviseGoal(PlanCommand):
    goal_id: UUID
    description: str
    target: GoalTarget | None = None
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.revise_goal(self.goal_id, description=self.description, target=self.target, reason=self.reason, ctx=ctx)


class AchieveGoal(PlanCommand):
    goal_id: UUID
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.achieve_goal(self.goal_id, reason=self.reason, ctx=ctx)


class AbandonGoal(PlanCommand):
    goal_id: UUID
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.abandon_goal(self.goal_id, reason=self.reason, ctx=ctx)


class RecordExpectation(PlanCommand):
    expectation_id: UUID = Field(default_factory=uuid4)
    holder: ExpectationHolder
    statement: str

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.record_expectation(self.expectation_id, holder=self.holder, statement=self.statement, ctx=ctx)


class IdentifyUnrealisticExpectation(PlanCommand):
    expectation_id: UUID
    rationale: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.identify_unrealistic_expectation(self.expectation_id, rationale=self.rationale, ctx=ctx)


class AdjustExpectation(PlanCommand):
    expectation_id: UUID
    fair_goal: str
    rationale: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.adjust_expectation(self.expectation_id, fair_goal=self.fair_goal, rationale=self.rationale, ctx=ctx)


class GiveExpertBacking(PlanCommand):
    backing: ExpertBacking
    note: str
    expectation_id: UUID | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.give_expert_backing(backing=self.backing, note=self.note, expectation_id=self.expectation_id, ctx=ctx)


class StartEnhancementStage(PlanCommand):
    stage: EnhancementStage

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.start_enhancement_stage(self.stage, ctx=ctx)


class ReleaseHarmfulEmotion(PlanCommand):
    emotion: HarmfulEmotion
    note: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.release_harmful_emotion(self.emotion, note=self.note, ctx=ctx)


class CompleteEnhancementStage(PlanCommand):
    stage: EnhancementStage
    note: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.complete_enhancement_stage(self.stage, note=self.note, ctx=ctx)


class ChangeStrategy(PlanCommand):
    strategy: Strategy
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.change_strategy(self.strategy, reason=self.reason, ctx=ctx)


class ActivateEmergencySupport(PlanCommand):
    """Entered by the care policies when escalation raises a crisis; a supervisor may enter
    it only for a crisis the escalation service holds open for this plan."""

    crisis_id: UUID
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        if ctx.actor.role is not Role.SERVICE and lookup.crisis_held_open(self.crisis_id) != plan.id:
            msg = (f"The escalation service holds no open crisis {self.crisis_id} for this plan; raise a crisis "
                   "instead (RaiseCrisis): escalation enters emergency support with it.")
            raise CrisisNotHeldError(msg)
        plan.activate_emergency_support(self.crisis_id, reason=self.reason, ctx=ctx)


class RaiseCrisis(PlanCommand):
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.raise_crisis(reason=self.reason, ctx=ctx)


class RecordCrisisResolved(PlanCommand):
    """Recorded by the care policies when escalation resolves a crisis; a supervisor may
    record it only for a crisis the escalation service does not hold open (a repair). A
    crisis held open for another plan is not this plan's: the plan answers as for any crisis
    it does not have (telling it apart would confirm another client's open crisis)."""

    crisis_id: UUID
    outcome: str

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        if ctx.actor.role is not Role.SERVICE and lookup.crisis_held_open(self.crisis_id) == plan.id:
            msg = (f"The escalation service still holds crisis {self.crisis_id} open; resolve it there "
                   f"(POST /escalations/{self.crisis_id}/resolve), and the plan records it.")
            raise CrisisNotHeldError(msg)
        plan.record_crisis_resolved(self.crisis_id, outcome=self.outcome, ctx=ctx)


class EndEmergencySupport(PlanCommand):
    strategy: Strategy
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.end_emergency_support(self.strategy, reason=self.reason, ctx=ctx)


class FocusOnTherapyModel(PlanCommand):
    model: TherapyModel
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.focus_on_model(self.model, reason=self.reason, ctx=ctx)


class DropTherapyModel(PlanCommand):
    model: TherapyModel
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.drop_model(self.model, reason=self.reason, ctx=ctx)


class RaiseRisk(PlanCommand):
    level: RiskLevel
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.raise_risk(self.level, reason=self.reason, ctx=ctx)


class LowerRisk(PlanCommand):
    level: RiskLevel
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.lower_risk(self.level, reason=self.reason, ctx=ctx)


class TargetCopingSkill(PlanCommand):
    skill: CopingSkill
    reason: str | None = None

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.target_coping_skill(self.skill, reason=self.reason, ctx=ctx)


class RecordSkillProgress(PlanCommand):
    skill: CopingSkill
    note: str

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        plan.record_skill_progress(self.skill, note=self.note, ctx=ctx)
