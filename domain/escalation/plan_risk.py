"""PlanRisk: the risk level of a plan as the escalation service last saw it (for the
"missed session while risk is high or imminent" trigger)."""

from __future__ import annotations

from typing import Self
from uuid import UUID, uuid5

from domain.base import AggregateRoot, CommandContext, when
from domain.catalogues.risk import RiskLevel
from domain.events.escalation_plans import PlanRiskNoted

PLAN_RISK_NAMESPACE = UUID("7a1c3e5f-2b4d-4f6a-8c0e-9d1b3f5a7c92")
OUTREACH_LEVELS = frozenset({RiskLevel.HIGH, RiskLevel.IMMINENT})


def plan_risk_id(plan_id: UUID) -> UUID:
    return uuid5(PLAN_RISK_NAMESPACE, f"plan-risk:{plan_id}")


class PlanRisk(AggregateRoot):
    created_event = PlanRiskNoted

    plan_id: UUID
    level: RiskLevel

    @classmethod
    def note_first(cls, plan_id: UUID, level: RiskLevel, *, ctx: CommandContext) -> Self:
        return cls._start(PlanRiskNoted, ctx, plan_risk_id(plan_id), plan_id=plan_id, level=level)

    @classmethod
    def _from_created(cls, event: PlanRiskNoted) -> Self:  # type: ignore[override]
        return cls._created(
            event,
            plan_id=event.plan_id, level=event.level,
        )

    def note(self, level: RiskLevel, *, ctx: CommandContext) -> bool:
        if level is self.level:
            return False
        self._trigger(PlanRiskNoted, ctx, plan_id=self.plan_id, level=level)
        return True

    @when(PlanRiskNoted)
    def _noted(self, event: PlanRiskNoted) -> None:
        self.level = event.level
