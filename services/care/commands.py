"""Every command of the care application, one small class each.

A command names its target aggregate and says what to ask of it; the application does
the rest (load, concurrency check, save). Creation commands make a new aggregate.
The same classes are the request bodies of the HTTP API and the CLI.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Protocol
from uuid import UUID, uuid4

from pydantic import BaseModel, ConfigDict, Field

from domain.base import AggregateRoot, CommandContext
from domain.care_plan import CarePlan
from domain.catalogues.care import CopingSkill, EnhancementStage, ExpectationHolder, ExpertBacking, HarmfulEmotion
from domain.catalogues.modalities import HomeworkKind, InitialPhaseTask, Modality
from domain.catalogues.problem_areas import ProblemArea, RelationshipPeriod, RelationshipRole
from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from domain.base import Role
from domain.errors import EmergencySupportError, ProblemAreaNotChosenError
from domain.events.care_plan import GoalTarget
from domain.inventory import Inventory
from domain.therapy_course import TherapyCourse


class Lookup(Protocol):
    """Read access to other aggregates, for commands whose rule spans two of them."""

    def get_plan(self, plan_id: UUID) -> CarePlan: ...
    def get_inventory(self, inventory_id: UUID) -> Inventory: ...
    def crisis_held_open(self, crisis_id: UUID) -> UUID | None:
        """The plan of ``crisis_id`` if the escalation service holds it open, else None."""
        ...


class CrisisNotHeldError(EmergencySupportError):
    """Emergency support names a crisis the escalation service does not hold open for this plan."""


class Command(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    aggregate_type: ClassVar[type[AggregateRoot]]

    def target_id(self) -> UUID:
        raise NotImplementedError

    def execute(self, aggregate: Any, ctx: CommandContext, lookup: Lookup) -> None:
        raise NotImplementedError


class CreationCommand(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    aggregate_type: ClassVar[type[AggregateRoot]]

    def create(self, ctx: CommandContext, lookup: Lookup) -> AggregateRoot:
        raise NotImplementedError


# ===================================================================== CarePlan


class DraftCarePlan(CreationCommand):
    aggregate_type: ClassVar[type[AggregateRoot]] = CarePlan
    plan_id: UUID = Field(default_factory=uuid4)
    client_id: str
    title: str
    strategy: Strategy
    therapy_models: list[TherapyModel]

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
    record it only for a crisis the escalation service does not hold open (a repair)."""

    crisis_id: UUID
    outcome: str

    def execute(self, plan: CarePlan, ctx: CommandContext, lookup: Lookup) -> None:
        if ctx.actor.role is not Role.SERVICE and lookup.crisis_held_open(self.crisis_id) is not None:
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


# ===================================================================== TherapyCourse


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
    scheduled_for: datetime
    duration_minutes: int = 50

    def execute(self, course: TherapyCourse, ctx: CommandContext, lookup: Lookup) -> None:
        course.schedule_session(
            self.session_id, scheduled_for=self.scheduled_for, duration_minutes=self.duration_minutes, ctx=ctx
        )


class HoldSession(CourseCommand):
    session_id: UUID
    held_at: datetime
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
    due: datetime | None = None

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
    answers: list[int | None]
    answered_at: datetime

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


# ===================================================================== Inventory


class OpenInventory(CreationCommand):
    aggregate_type: ClassVar[type[AggregateRoot]] = Inventory
    inventory_id: UUID = Field(default_factory=uuid4)
    plan_id: UUID

    def create(self, ctx: CommandContext, lookup: Lookup) -> AggregateRoot:
        plan = lookup.get_plan(self.plan_id)
        plan._require_open()
        return Inventory.open(self.inventory_id, client_id=plan.client_id, plan_id=plan.id, ctx=ctx)


class InventoryCommand(Command):
    aggregate_type: ClassVar[type[AggregateRoot]] = Inventory
    inventory_id: UUID

    def target_id(self) -> UUID:
        return self.inventory_id


class RecordRelationship(InventoryCommand):
    relationship_id: UUID = Field(default_factory=uuid4)
    alias: str
    role: RelationshipRole
    period: RelationshipPeriod
    closeness: int
    satisfaction: int

    def execute(self, inventory: Inventory, ctx: CommandContext, lookup: Lookup) -> None:
        inventory.record_relationship(
            self.relationship_id,
            alias=self.alias,
            role=self.role,
            period=self.period,
            closeness=self.closeness,
            satisfaction=self.satisfaction,
            ctx=ctx,
        )


class ReviseRelationship(InventoryCommand):
    relationship_id: UUID
    closeness: int
    satisfaction: int
    period: RelationshipPeriod | None = None
    reason: str | None = None

    def execute(self, inventory: Inventory, ctx: CommandContext, lookup: Lookup) -> None:
        inventory.revise_relationship(
            self.relationship_id,
            closeness=self.closeness,
            satisfaction=self.satisfaction,
            period=self.period,
            reason=self.reason,
            ctx=ctx,
        )


class NoteRelationshipPattern(InventoryCommand):
    relationship_id: UUID
    pattern: str

    def execute(self, inventory: Inventory, ctx: CommandContext, lookup: Lookup) -> None:
        inventory.note_pattern(self.relationship_id, pattern=self.pattern, ctx=ctx)


class NoteRelationshipExpectation(InventoryCommand):
    relationship_id: UUID
    expectation: str
    mutual: bool

    def execute(self, inventory: Inventory, ctx: CommandContext, lookup: Lookup) -> None:
        inventory.note_relationship_expectation(
            self.relationship_id, expectation=self.expectation, mutual=self.mutual, ctx=ctx
        )


class IdentifyProblemArea(InventoryCommand):
    area: ProblemArea
    evidence: str

    def execute(self, inventory: Inventory, ctx: CommandContext, lookup: Lookup) -> None:
        inventory.identify_problem_area(self.area, evidence=self.evidence, ctx=ctx)


class ChooseProblemAreaFocus(InventoryCommand):
    areas: list[ProblemArea]
    rationale: str | None = None

    def execute(self, inventory: Inventory, ctx: CommandContext, lookup: Lookup) -> None:
        inventory.choose_focus(self.areas, rationale=self.rationale, ctx=ctx)
