"""PlanStrategy: the strategy in force on a plan and its courses, as scheduling needs them."""

from __future__ import annotations

from typing import Self
from uuid import UUID, uuid5

from pydantic import Field

from domain.base import AggregateRoot, CommandContext, when
from domain.catalogues.strategies import Strategy
from domain.events.scheduling_plans import CourseOfPlanNoted, PlanStrategyNoted

PLAN_NAMESPACE = UUID("0c9e8d7f-6a5b-4c3d-8e2f-1a0b9c8d7e65")


def plan_strategy_id(plan_id: UUID) -> UUID:
    return uuid5(PLAN_NAMESPACE, f"plan:{plan_id}")


class PlanStrategy(AggregateRoot):
    created_event = PlanStrategyNoted

    plan_id: UUID
    strategy: Strategy
    courses: list[UUID] = Field(default_factory=list)

    @classmethod
    def note(cls, plan_id: UUID, strategy: Strategy, *, ctx: CommandContext) -> Self:
        return cls._start(PlanStrategyNoted, ctx, plan_strategy_id(plan_id), plan_id=plan_id, strategy=strategy)

    @classmethod
    def _from_created(cls, event: PlanStrategyNoted) -> Self:  # type: ignore[override]
        return cls._created(
            event,
            plan_id=event.plan_id, strategy=event.strategy,
        )

    def follow(self, strategy: Strategy, *, ctx: CommandContext) -> bool:
        if strategy is self.strategy:
            return False
        self._trigger(PlanStrategyNoted, ctx, plan_id=self.plan_id, strategy=strategy)
        return True

    @when(PlanStrategyNoted)
    def _noted(self, event: PlanStrategyNoted) -> None:
        self.strategy = event.strategy

    def link(self, course_id: UUID, *, ctx: CommandContext) -> None:
        if course_id not in self.courses:
            self._trigger(CourseOfPlanNoted, ctx, plan_id=self.plan_id, course_id=course_id)

    @when(CourseOfPlanNoted)
    def _linked(self, event: CourseOfPlanNoted) -> None:
        self.courses.append(event.course_id)
