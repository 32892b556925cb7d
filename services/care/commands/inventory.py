"""Commands on an interpersonal Inventory."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID, uuid4

from pydantic import Field

from domain.base import AggregateRoot, CommandContext
from domain.catalogues.problem_areas import ProblemArea, RelationshipPeriod, RelationshipRole
from domain.inventory import Inventory
from services.care.commands.base import Command, CreationCommand, Lookup


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
    areas: list[ProblemArea] = Field(max_length=20)
    rationale: str | None = None

    def execute(self, inventory: Inventory, ctx: CommandContext, lookup: Lookup) -> None:
        inventory.choose_focus(self.areas, rationale=self.rationale, ctx=ctx)
