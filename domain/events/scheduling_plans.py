"""Events of the scheduling service's PlanStrategy aggregate: what it knows of each plan."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from domain.base import DomainEvent
from domain.catalogues.strategies import Strategy

#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "scheduling"
AGGREGATE = "plan_strategy"


class PlanStrategyNoted(DomainEvent):
    summary_template: ClassVar[str] = "Plan {plan_id} follows {strategy}"
    plan_id: UUID
    strategy: Strategy


class CourseOfPlanNoted(DomainEvent):
    summary_template: ClassVar[str] = "Course {course_id} belongs to plan {plan_id}"
    plan_id: UUID
    course_id: UUID
