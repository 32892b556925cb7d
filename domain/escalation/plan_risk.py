"""PlanRisk: a plan's risk level over time as the escalation service learnt it, and the
sessions missed in it (for the "missed session while risk is high or imminent" trigger).

Messages from two services arrive in any order: a session missed at 10:05 may be read
before the risk raised at 10:00, or after the risk lowered at 10:10. So the risk is kept
as a history of changes dated by the care record, and a miss is judged by the level in
force when it was missed, both when it arrives and whenever a change it preceded arrives
later."""

from __future__ import annotations

from datetime import datetime
from typing import Self
from uuid import UUID, uuid5

from pydantic import BaseModel, Field

from domain.base import AggregateRoot, CommandContext, when
from domain.catalogues.risk import RiskLevel
from domain.events.escalation_plans import MissedSessionCorrected, MissedSessionNoted, PlanRiskNoted

PLAN_RISK_NAMESPACE = UUID("7a1c3e5f-2b4d-4f6a-8c0e-9d1b3f5a7c92")
OUTREACH_LEVELS = frozenset({RiskLevel.HIGH, RiskLevel.IMMINENT})


def plan_risk_id(plan_id: UUID) -> UUID:
    return uuid5(PLAN_RISK_NAMESPACE, f"plan-risk:{plan_id}")


class RiskChange(BaseModel):
    since: datetime
    level: RiskLevel


class MissedSlot(BaseModel):
    course_id: UUID
    client_id: str
    kind: str
    number: int
    starts_at: datetime
    missed_at: datetime
    session_missed_event_id: str
    corrected: bool = False


class PlanRisk(AggregateRoot):
    created_event = PlanRiskNoted

    plan_id: UUID
    #: The level in force now (the latest change by date).
    level: RiskLevel
    changes: list[RiskChange] = Field(default_factory=list)
    misses: list[MissedSlot] = Field(default_factory=list)

    @classmethod
    def note_first(cls, plan_id: UUID, level: RiskLevel, *, since: datetime | None, ctx: CommandContext) -> Self:
        return cls._start(PlanRiskNoted, ctx, plan_risk_id(plan_id), plan_id=plan_id, level=level, since=since)

    @classmethod
    def unknown(cls, plan_id: UUID, *, ctx: CommandContext) -> Self:
        """A plan whose risk has not been seen changing yet (first news: a missed session)."""
        return cls.note_first(plan_id, RiskLevel.NONE, since=None, ctx=ctx)

    @classmethod
    def _from_created(cls, event: PlanRiskNoted) -> Self:  # type: ignore[override]
        plan = cls._created(event, plan_id=event.plan_id, level=RiskLevel.NONE)
        plan._noted(event)
        return plan

    def note(self, level: RiskLevel, *, since: datetime | None, ctx: CommandContext) -> bool:
        if since is not None and any(c.since == since and c.level is level for c in self.changes):
            return False
        if since is None and level is self.level:
            return False
        self._trigger(PlanRiskNoted, ctx, plan_id=self.plan_id, level=level, since=since)
        return True

    @when(PlanRiskNoted)
    def _noted(self, event: PlanRiskNoted) -> None:
        if event.since is None and event.level is RiskLevel.NONE and not self.changes:
            return  # "not seen changing yet"
        self.changes.append(RiskChange(since=event.since or event.timestamp, level=event.level))
        self.changes.sort(key=lambda c: c.since)
        self.level = self.changes[-1].level

    def level_at(self, moment: datetime) -> RiskLevel:
        level = RiskLevel.NONE
        for change in self.changes:
            if change.since > moment:
                break
            level = change.level
        return level

    def note_miss(self, slot: MissedSlot, *, ctx: CommandContext) -> bool:
        if any(m.session_missed_event_id == slot.session_missed_event_id for m in self.misses):
            return False
        self._trigger(MissedSessionNoted, ctx, plan_id=self.plan_id, **slot.model_dump(exclude={"corrected"}))
        return True

    @when(MissedSessionNoted)
    def _missed(self, event: MissedSessionNoted) -> None:
        self.misses.append(MissedSlot(**event.model_dump(include=set(MissedSlot.model_fields))))

    def note_held_after_all(self, course_id: UUID, kind: str, number: int, *, ctx: CommandContext) -> bool:
        if not any(self._is(m, course_id, kind, number) and not m.corrected for m in self.misses):
            return False
        self._trigger(MissedSessionCorrected, ctx, plan_id=self.plan_id, course_id=course_id, kind=kind, number=number)
        return True

    @when(MissedSessionCorrected)
    def _corrected(self, event: MissedSessionCorrected) -> None:
        for miss in self.misses:
            if self._is(miss, event.course_id, event.kind, event.number):
                miss.corrected = True

    @staticmethod
    def _is(miss: MissedSlot, course_id: UUID, kind: str, number: int) -> bool:
        return miss.course_id == course_id and miss.kind == kind and miss.number == number

    def misses_at_outreach_risk(self, since: datetime | None = None) -> list[MissedSlot]:
        """Misses (not held after all) while the risk in force was high or imminent;
        ``since``: only those missed at or after that moment."""
        return [
            m for m in self.misses
            if not m.corrected and (since is None or m.missed_at >= since) and self.level_at(m.missed_at) in OUTREACH_LEVELS
        ]
