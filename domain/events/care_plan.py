"""Events of the CarePlan aggregate."""

from __future__ import annotations

from datetime import date
from typing import ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.base import DomainEvent, RequiresReason, ShortText, Text
from domain.catalogues.care import (
    CopingSkill,
    EnhancementStage,
    ExpectationHolder,
    ExpertBacking,
    GoalComparator,
    HarmfulEmotion,
)
from domain.catalogues.instruments import Instrument
from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel


#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "clinical"
AGGREGATE = "care_plan"

class GoalTarget(BaseModel):
    """A measurable target for a goal, e.g. PHQ-9 total below 5 by a date."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    instrument: Instrument
    comparator: GoalComparator
    threshold: float = Field(ge=0, le=100)
    by: date | None = None

    def describe(self) -> str:
        by = f" by {self.by.isoformat()}" if self.by else ""
        return f"{self.instrument.value} total {self.comparator.value.replace('_', ' ')} {self.threshold:g}{by}"


class CarePlanDrafted(DomainEvent):
    summary_template: ClassVar[str] = "Care plan '{title}' drafted for client {client_id} ({strategy})"
    client_id: ShortText
    title: ShortText
    strategy: Strategy
    therapy_models: list[TherapyModel] = Field(min_length=1)


class ConsentRecorded(DomainEvent):
    summary_template: ClassVar[str] = "Client consent to treatment recorded"
    note: str | None = Field(default=None, max_length=4000)


class ConfidentialityExplained(DomainEvent):
    summary_template: ClassVar[str] = "Confidentiality and its limits explained to the client"
    note: str | None = Field(default=None, max_length=4000)


class GoalAdded(DomainEvent):
    summary_template: ClassVar[str] = "Goal added: '{description}'"
    goal_id: UUID
    description: Text
    target: GoalTarget | None = None


class GoalAgreed(DomainEvent):
    summary_template: ClassVar[str] = "Client agreed goal {goal_id}"
    goal_id: UUID


class GoalRevised(RequiresReason):
    summary_template: ClassVar[str] = "Goal revised: '{previous_description}' → '{description}'"
    goal_id: UUID
    previous_description: Text
    description: Text
    previous_target: GoalTarget | None = None
    target: GoalTarget | None = None


class GoalAchieved(DomainEvent):
    summary_template: ClassVar[str] = "Goal {goal_id} achieved"
    goal_id: UUID


class GoalAbandoned(RequiresReason):
    summary_template: ClassVar[str] = "Goal {goal_id} abandoned"
    goal_id: UUID


class CarePlanActivated(DomainEvent):
    summary_template: ClassVar[str] = "Care plan activated"


class CarePlanPutOnHold(RequiresReason):
    summary_template: ClassVar[str] = "Care plan put on hold"


class CarePlanResumed(DomainEvent):
    summary_template: ClassVar[str] = "Care plan resumed"


class CarePlanCompleted(DomainEvent):
    summary_template: ClassVar[str] = "Care plan completed"


class CarePlanRevoked(RequiresReason):
    summary_template: ClassVar[str] = "Care plan revoked"


class ExpectationRecorded(DomainEvent):
    summary_template: ClassVar[str] = "Expectation about {holder} recorded: '{statement}'"
    expectation_id: UUID
    holder: ExpectationHolder
    statement: Text


class ExpectationIdentifiedUnrealistic(RequiresReason):
    summary_template: ClassVar[str] = "Expectation '{statement}' identified as unrealistic"
    expectation_id: UUID
    statement: Text


class ExpectationAdjusted(RequiresReason):
    summary_template: ClassVar[str] = "Expectation adjusted: '{previous_statement}' → '{adjusted_statement}'"
    expectation_id: UUID
    previous_statement: Text
    adjusted_statement: Text


class ExpertBackingGiven(DomainEvent):
    summary_template: ClassVar[str] = "Expert backing given ({backing})"
    expectation_id: UUID | None = None
    backing: ExpertBacking
    note: Text


class EnhancementStageStarted(DomainEvent):
    summary_template: ClassVar[str] = "Emotional-value enhancement stage started: {stage}"
    stage: EnhancementStage


class HarmfulEmotionReleased(DomainEvent):
    summary_template: ClassVar[str] = "Harmful emotion released: {emotion}"
    emotion: HarmfulEmotion
    note: str | None = Field(default=None, max_length=4000)


class EnhancementStageCompleted(DomainEvent):
    summary_template: ClassVar[str] = "Emotional-value enhancement stage completed: {stage}"
    stage: EnhancementStage
    note: str | None = Field(default=None, max_length=4000)


class StrategyChanged(RequiresReason):
    summary_template: ClassVar[str] = "Strategy changed: {previous_strategy} → {strategy}"
    previous_strategy: Strategy
    strategy: Strategy


class EmergencySupportActivated(RequiresReason):
    summary_template: ClassVar[str] = "Emergency support activated for crisis {crisis_id} (was {previous_strategy})"
    crisis_id: UUID
    previous_strategy: Strategy


class CrisisRaisedByClinician(RequiresReason):
    """A clinician judges the client to be in crisis; the escalation service escalates it
    at immediate severity (and the plan then enters emergency support)."""

    summary_template: ClassVar[str] = "Crisis raised by a clinician"
    client_id: ShortText


class CrisisResolutionRecorded(DomainEvent):
    summary_template: ClassVar[str] = "Crisis {crisis_id} recorded as resolved"
    crisis_id: UUID
    outcome: Text


class EmergencySupportEnded(RequiresReason):
    summary_template: ClassVar[str] = "Emergency support ended; strategy now {strategy}"
    strategy: Strategy


class TherapyModelFocused(DomainEvent):
    summary_template: ClassVar[str] = "Plan now focuses on the {model} model"
    model: TherapyModel


class TherapyModelDropped(RequiresReason):
    summary_template: ClassVar[str] = "Plan no longer focuses on the {model} model"
    model: TherapyModel


class RiskLevelRaised(RequiresReason):
    summary_template: ClassVar[str] = "Risk level raised: {previous_level} → {level}"
    previous_level: RiskLevel
    level: RiskLevel


class RiskLevelLowered(RequiresReason):
    summary_template: ClassVar[str] = "Risk level lowered: {previous_level} → {level}"
    previous_level: RiskLevel
    level: RiskLevel


class CopingSkillTargeted(DomainEvent):
    summary_template: ClassVar[str] = "Coping skill being built: {skill}"
    skill: CopingSkill


class CopingSkillProgressRecorded(DomainEvent):
    summary_template: ClassVar[str] = "Progress on {skill}: {note}"
    skill: CopingSkill
    note: Text

