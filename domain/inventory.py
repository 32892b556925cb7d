"""The Inventory aggregate: the IPT interpersonal inventory of a client (seed 001)."""

from __future__ import annotations

from typing import Self
from uuid import UUID

from pydantic import BaseModel, Field

from domain.base import AggregateRoot, CommandContext, require_reason, require_text, when
from domain.catalogues.problem_areas import MAX_FOCUS_AREAS, ProblemArea, RelationshipPeriod, RelationshipRole
from domain.errors import InvalidValueError, ProblemAreaError, UnknownRelationshipError
from domain.events.inventory import (
    InventoryOpened,
    ProblemAreaFocusChosen,
    ProblemAreaIdentified,
    RelationshipExpectationNoted,
    RelationshipPatternNoted,
    RelationshipRecorded,
    RelationshipRevised,
)

MAX_ALIAS_LENGTH = 40


class RelationshipExpectation(BaseModel):
    expectation: str
    mutual: bool


class Relationship(BaseModel):
    id: UUID
    alias: str
    role: RelationshipRole
    period: RelationshipPeriod
    closeness: int
    satisfaction: int
    patterns: list[str] = Field(default_factory=list)
    expectations: list[RelationshipExpectation] = Field(default_factory=list)
    revisions: int = 0


class Inventory(AggregateRoot):
    created_event = InventoryOpened

    client_id: str
    plan_id: UUID
    relationships: dict[UUID, Relationship] = Field(default_factory=dict)
    problem_areas: dict[ProblemArea, str] = Field(default_factory=dict)
    focus: list[ProblemArea] = Field(default_factory=list)

    @classmethod
    def open(cls, inventory_id: UUID, *, client_id: str, plan_id: UUID, ctx: CommandContext) -> Self:
        return cls._start(
            InventoryOpened, ctx, inventory_id, client_id=require_text(client_id, "client_id", 200), plan_id=plan_id
        )

    @classmethod
    def _from_created(cls, event: InventoryOpened) -> Self:  # type: ignore[override]
        return cls._created(
            event,
            client_id=event.client_id,
            plan_id=event.plan_id,
        )

    def _relationship(self, relationship_id: UUID) -> Relationship:
        try:
            return self.relationships[relationship_id]
        except KeyError:
            msg = f"The inventory has no relationship {relationship_id}; record it first."
            raise UnknownRelationshipError(msg) from None

    @staticmethod
    def _rating(value: int, field: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            msg = f"'{field}' is rated 1 (lowest) to 5 (highest), not {value!r}."
            raise InvalidValueError(msg)
        return value

    # ----------------------------------------------------------------- relationships

    def record_relationship(
        self,
        relationship_id: UUID,
        *,
        alias: str,
        role: RelationshipRole,
        period: RelationshipPeriod,
        closeness: int,
        satisfaction: int,
        ctx: CommandContext,
    ) -> None:
        if relationship_id in self.relationships:
            msg = f"Relationship {relationship_id} is already recorded; revise it instead."
            raise InvalidValueError(msg)
        alias = require_text(alias, "alias (a pseudonym, never a real name)", MAX_ALIAS_LENGTH)
        if any(r.alias == alias for r in self.relationships.values()):
            msg = f"Alias {alias!r} is already used in this inventory; choose a distinct alias."
            raise InvalidValueError(msg)
        self._trigger(
            RelationshipRecorded,
            ctx,
            relationship_id=relationship_id,
            alias=alias,
            role=role,
            period=period,
            closeness=self._rating(closeness, "closeness"),
            satisfaction=self._rating(satisfaction, "satisfaction"),
        )

    @when(RelationshipRecorded)
    def _relationship_recorded(self, event: RelationshipRecorded) -> None:
        self.relationships[event.relationship_id] = Relationship(
            id=event.relationship_id,
            alias=event.alias,
            role=event.role,
            period=event.period,
            closeness=event.closeness,
            satisfaction=event.satisfaction,
        )

    def revise_relationship(
        self,
        relationship_id: UUID,
        *,
        closeness: int,
        satisfaction: int,
        period: RelationshipPeriod | None = None,
        reason: str | None = None,
        ctx: CommandContext,
    ) -> None:
        relationship = self._relationship(relationship_id)
        period = period or relationship.period
        closeness = self._rating(closeness, "closeness")
        satisfaction = self._rating(satisfaction, "satisfaction")
        if (closeness, satisfaction, period) == (relationship.closeness, relationship.satisfaction, relationship.period):
            msg = "The revision changes nothing; give the new closeness, satisfaction or period."
            raise InvalidValueError(msg)
        self._trigger(
            RelationshipRevised,
            ctx,
            relationship_id=relationship_id,
            alias=relationship.alias,
            period=period,
            closeness=closeness,
            satisfaction=satisfaction,
            reason=reason,
        )

    @when(RelationshipRevised)
    def _relationship_revised(self, event: RelationshipRevised) -> None:
        relationship = self.relationships[event.relationship_id]
        relationship.period = event.period
        relationship.closeness = event.closeness
        relationship.satisfaction = event.satisfaction
        relationship.revisions += 1

    def note_pattern(self, relationship_id: UUID, *, pattern: str, ctx: CommandContext) -> None:
        relationship = self._relationship(relationship_id)
        self._trigger(
            RelationshipPatternNoted,
            ctx,
            relationship_id=relationship_id,
            alias=relationship.alias,
            pattern=require_text(pattern, "pattern"),
        )

    @when(RelationshipPatternNoted)
    def _pattern_noted(self, event: RelationshipPatternNoted) -> None:
        self.relationships[event.relationship_id].patterns.append(event.pattern)

    def note_relationship_expectation(
        self, relationship_id: UUID, *, expectation: str, mutual: bool, ctx: CommandContext
    ) -> None:
        relationship = self._relationship(relationship_id)
        self._trigger(
            RelationshipExpectationNoted,
            ctx,
            relationship_id=relationship_id,
            alias=relationship.alias,
            expectation=require_text(expectation, "expectation"),
            mutual=bool(mutual),
        )

    @when(RelationshipExpectationNoted)
    def _expectation_noted(self, event: RelationshipExpectationNoted) -> None:
        self.relationships[event.relationship_id].expectations.append(
            RelationshipExpectation(expectation=event.expectation, mutual=event.mutual)
        )

    # ----------------------------------------------------------------- problem areas

    def identify_problem_area(self, area: ProblemArea, *, evidence: str, ctx: CommandContext) -> None:
        if area in self.problem_areas:
            msg = f"Problem area {area.value} is already identified."
            raise ProblemAreaError(msg)
        self._trigger(ProblemAreaIdentified, ctx, area=area, evidence=require_text(evidence, "evidence"))

    @when(ProblemAreaIdentified)
    def _area_identified(self, event: ProblemAreaIdentified) -> None:
        self.problem_areas[event.area] = event.evidence

    def choose_focus(self, areas: list[ProblemArea], *, rationale: str | None, ctx: CommandContext) -> None:
        if not areas or len(areas) > MAX_FOCUS_AREAS or len(set(areas)) != len(areas):
            msg = f"Choose one or two distinct problem areas as the focus, not {[a.value for a in areas]}."
            raise ProblemAreaError(msg)
        unidentified = [a.value for a in areas if a not in self.problem_areas]
        if unidentified:
            msg = f"Identify {', '.join(unidentified)} as a problem area (with evidence) before choosing it as the focus."
            raise ProblemAreaError(msg)
        if list(areas) == self.focus:
            msg = "That focus is already chosen."
            raise ProblemAreaError(msg)
        self._trigger(
            ProblemAreaFocusChosen,
            ctx,
            areas=list(areas),
            previous_areas=list(self.focus),
            reason=require_reason(rationale, "choose the problem-area focus"),
        )

    @when(ProblemAreaFocusChosen)
    def _focus_chosen(self, event: ProblemAreaFocusChosen) -> None:
        self.focus = list(event.areas)
