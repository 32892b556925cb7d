"""Events of the escalation service's PlanRisk aggregate: each plan's risk level as last seen."""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from domain.base import DomainEvent
from domain.catalogues.risk import RiskLevel

#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "escalation"
AGGREGATE = "plan_risk"


class PlanRiskNoted(DomainEvent):
    summary_template: ClassVar[str] = "Plan {plan_id} risk level noted: {level}"
    plan_id: UUID
    level: RiskLevel
