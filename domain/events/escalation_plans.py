"""Events of the escalation service's PlanRisk aggregate: each plan's risk level as it
changed (by when the care record says it changed, not by when the news arrived), and the
sessions missed, so that a missed session is judged by the risk at the time it was missed
whichever of the two messages arrives first."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

from pydantic import Field

from domain.base import DomainEvent, ShortText
from domain.catalogues.risk import RiskLevel

#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "escalation"
AGGREGATE = "plan_risk"


class PlanRiskNoted(DomainEvent):
    summary_template: ClassVar[str] = "Plan {plan_id} risk level noted: {level}"
    plan_id: UUID
    level: RiskLevel
    #: When the care record changed the level (absent from events noted before it was kept:
    #: then the noting time stands for it).
    since: datetime | None = None


class MissedSessionNoted(DomainEvent):
    summary_template: ClassVar[str] = "Slot {number} ({kind}) of course {course_id} missed, noted for plan {plan_id}"
    plan_id: UUID
    course_id: UUID
    client_id: ShortText
    kind: ShortText
    number: int = Field(ge=1)
    starts_at: datetime
    #: When the scheduling service recorded the miss.
    missed_at: datetime
    #: The SessionMissed event (the source of an outreach escalation).
    session_missed_event_id: ShortText


class MissedSessionCorrected(DomainEvent):
    summary_template: ClassVar[str] = "Slot {number} ({kind}) of course {course_id} was held after all"
    plan_id: UUID
    course_id: UUID
    kind: ShortText
    number: int = Field(ge=1)
