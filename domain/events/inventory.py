"""Events of the Inventory aggregate (the IPT interpersonal inventory).

People in the client's life appear only by alias; real names never enter an event.
"""

from __future__ import annotations

from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import Field

from domain.base import DomainEvent, RequiresReason, ShortText, Text
from domain.catalogues.problem_areas import ProblemArea, RelationshipPeriod, RelationshipRole

Rating = Annotated[int, Field(ge=1, le=5)]
Alias = Annotated[str, Field(min_length=1, max_length=40)]


#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "clinical"
AGGREGATE = "inventory"

class InventoryOpened(DomainEvent):
    summary_template: ClassVar[str] = "Interpersonal inventory opened for client {client_id}"
    client_id: ShortText
    plan_id: UUID


class RelationshipRecorded(DomainEvent):
    summary_template: ClassVar[str] = "Relationship recorded: {alias} ({role}, {period})"
    relationship_id: UUID
    alias: Alias
    role: RelationshipRole
    period: RelationshipPeriod
    closeness: Rating
    satisfaction: Rating


class RelationshipRevised(DomainEvent):
    summary_template: ClassVar[str] = "Relationship {alias} revised: closeness {closeness}, satisfaction {satisfaction}"
    relationship_id: UUID
    alias: Alias
    period: RelationshipPeriod
    closeness: Rating
    satisfaction: Rating


class RelationshipPatternNoted(DomainEvent):
    summary_template: ClassVar[str] = "Recurring pattern with {alias}: '{pattern}'"
    relationship_id: UUID
    alias: Alias
    pattern: Text


class RelationshipExpectationNoted(DomainEvent):
    summary_template: ClassVar[str] = "Expectation in relationship with {alias}: '{expectation}' (mutual: {mutual})"
    relationship_id: UUID
    alias: Alias
    expectation: Text
    mutual: bool


class ProblemAreaIdentified(DomainEvent):
    summary_template: ClassVar[str] = "Problem area identified: {area}"
    area: ProblemArea
    evidence: Text


class ProblemAreaFocusChosen(RequiresReason):
    summary_template: ClassVar[str] = "Focus chosen: {areas}"
    areas: list[ProblemArea] = Field(min_length=1, max_length=2)
    previous_areas: list[ProblemArea] = Field(default_factory=list, max_length=2)
