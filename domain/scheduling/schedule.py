"""CourseSchedule: the planned sessions (and emergency check-ins) of one therapy course.

Sessions are planned from the course (planned count; weekly for IPT) and the strategy in
force; a strategy change re-plans the sessions still to come; emergency support adds
near-term check-ins; a slot not recorded as held by its end plus a grace period is missed.
Each slot's due time is stored, so the service re-arms its timers from the log."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Self
from uuid import UUID, uuid5

from pydantic import BaseModel, Field

from domain.base import AggregateRoot, CommandContext, when
from domain.catalogues import cadence
from domain.catalogues.modalities import Modality
from domain.catalogues.strategies import Strategy
from domain.events.scheduling import (
    ScheduleFollowsStrategy,
    ScheduleOpened,
    SessionAttendanceCorrected,
    SessionAttendanceRecorded,
    SessionMissed,
    SessionRescheduled,
    SessionScheduled,
    SlotKind,
)

SCHEDULE_NAMESPACE = UUID("5e0b2a61-7c3d-4e8f-9a1b-2c4d6e8f0a13")


def schedule_id(course_id: UUID) -> UUID:
    return uuid5(SCHEDULE_NAMESPACE, f"schedule:{course_id}")


class SlotStatus(str, Enum):
    SCHEDULED = "scheduled"
    HELD = "held"
    MISSED = "missed"


class Slot(BaseModel):
    number: int
    kind: SlotKind
    starts_at: datetime
    ends_at: datetime
    status: SlotStatus = SlotStatus.SCHEDULED

    @property
    def missed_after(self) -> datetime:
        return self.ends_at + cadence.MISSED_AFTER


class CourseSchedule(AggregateRoot):
    created_event = ScheduleOpened

    course_id: UUID
    plan_id: UUID
    client_id: str
    modality: Modality
    planned_sessions: int
    strategy: Strategy
    slots: list[Slot] = Field(default_factory=list)

    @classmethod
    def open(
        cls, *, course_id: UUID, plan_id: UUID, client_id: str, modality: Modality, planned_sessions: int,
        strategy: Strategy, ctx: CommandContext,
    ) -> Self:
        schedule = cls._start(
            ScheduleOpened, ctx, schedule_id(course_id), course_id=course_id, plan_id=plan_id, client_id=client_id,
            modality=modality, planned_sessions=planned_sessions, strategy=strategy,
        )
        step = cadence.interval(modality, strategy)
        first = ctx.at + cadence.FIRST_SESSION_AFTER
        for n in range(planned_sessions):
            starts = first + n * step
            schedule._trigger(
                SessionScheduled, ctx, course_id=course_id, number=n + 1, kind=SlotKind.SESSION,
                starts_at=starts, ends_at=starts + cadence.SESSION_LENGTH,
            )
        return schedule

    @classmethod
    def _from_created(cls, event: ScheduleOpened) -> Self:  # type: ignore[override]
        return cls._created(
            event,
            course_id=event.course_id, plan_id=event.plan_id, client_id=event.client_id,
            modality=event.modality, planned_sessions=event.planned_sessions, strategy=event.strategy,
        )

    @when(SessionScheduled)
    def _scheduled(self, event: SessionScheduled) -> None:
        self.slots.append(Slot(number=event.number, kind=event.kind, starts_at=event.starts_at, ends_at=event.ends_at))

    def _slot(self, kind: SlotKind, number: int) -> Slot | None:
        return next((s for s in self.slots if s.kind is kind and s.number == number), None)

    # ----------------------------------------------------------------- re-planning

    def follow_strategy(self, strategy: Strategy, *, reason: str, ctx: CommandContext) -> None:
        """Re-plans the sessions still to come for the new strategy; entering emergency
        support adds near-term check-ins."""
        previous = self.strategy
        if strategy is previous:
            return
        self._trigger(
            ScheduleFollowsStrategy, ctx, course_id=self.course_id, previous_strategy=previous, strategy=strategy,
            reason=reason,
        )
        upcoming = [s for s in self.slots if s.kind is SlotKind.SESSION and s.status is SlotStatus.SCHEDULED and s.starts_at > ctx.at]
        step = cadence.interval(self.modality, strategy)
        if upcoming and step != cadence.interval(self.modality, previous):
            anchor = upcoming[0].starts_at
            for i, slot in enumerate(upcoming):
                starts = anchor + i * step
                if starts != slot.starts_at:
                    self._trigger(
                        SessionRescheduled, ctx, course_id=self.course_id, number=slot.number, kind=slot.kind,
                        previous_starts_at=slot.starts_at, starts_at=starts, ends_at=starts + cadence.SESSION_LENGTH,
                        strategy=strategy, reason=reason,
                    )
        if strategy is Strategy.EMERGENCY_SUPPORT:
            first = 1 + sum(1 for s in self.slots if s.kind is SlotKind.CHECK_IN)
            for i, after in enumerate(cadence.EMERGENCY_CHECK_INS):
                starts = ctx.at + after
                self._trigger(
                    SessionScheduled, ctx, course_id=self.course_id, number=first + i, kind=SlotKind.CHECK_IN,
                    starts_at=starts, ends_at=starts + cadence.CHECK_IN_LENGTH,
                )

    @when(ScheduleFollowsStrategy)
    def _follows(self, event: ScheduleFollowsStrategy) -> None:
        self.strategy = event.strategy

    @when(SessionRescheduled)
    def _rescheduled(self, event: SessionRescheduled) -> None:
        slot = self._slot(event.kind, event.number)
        assert slot is not None
        slot.starts_at, slot.ends_at = event.starts_at, event.ends_at

    # ----------------------------------------------------------------- attendance

    def record_held(self, number: int, *, ctx: CommandContext) -> bool:
        slot = self._slot(SlotKind.SESSION, number)
        if slot is None or slot.status is SlotStatus.HELD:
            return False  # a session held beyond the plan, or recorded already
        if slot.status is SlotStatus.MISSED:
            # Marked missed before its attendance was known here: the record is corrected.
            self._trigger(SessionAttendanceCorrected, ctx, course_id=self.course_id, plan_id=self.plan_id,
                          client_id=self.client_id, number=number, kind=slot.kind)
            return True
        self._trigger(SessionAttendanceRecorded, ctx, course_id=self.course_id, number=number)
        return True

    @when(SessionAttendanceCorrected)
    def _corrected(self, event: SessionAttendanceCorrected) -> None:
        slot = self._slot(event.kind, event.number)
        assert slot is not None
        slot.status = SlotStatus.HELD

    @when(SessionAttendanceRecorded)
    def _held(self, event: SessionAttendanceRecorded) -> None:
        slot = self._slot(SlotKind.SESSION, event.number)
        assert slot is not None
        slot.status = SlotStatus.HELD

    def next_due(self) -> datetime | None:
        """When the next slot would become missed (the timer to arm)."""
        pending = [s.missed_after for s in self.slots if s.status is SlotStatus.SCHEDULED]
        return min(pending) if pending else None

    def mark_missed(self, *, known_until: datetime | None = None, ctx: CommandContext) -> int:
        """Every slot not held by its end plus the grace period becomes missed. Attendance
        recorded up to ``known_until`` (default: now) has been read: slots due after it are
        left for later, since their attendance may still be on its way."""
        cutoff = min(ctx.at, known_until) if known_until is not None else ctx.at
        missed = 0
        for slot in sorted(self.slots, key=lambda s: s.starts_at):
            if slot.status is SlotStatus.SCHEDULED and cutoff >= slot.missed_after:
                self._trigger(
                    SessionMissed, ctx, course_id=self.course_id, plan_id=self.plan_id, client_id=self.client_id,
                    number=slot.number, kind=slot.kind, starts_at=slot.starts_at, missed_after=slot.missed_after,
                )
                missed += 1
        return missed

    @when(SessionMissed)
    def _missed(self, event: SessionMissed) -> None:
        slot = self._slot(event.kind, event.number)
        assert slot is not None
        slot.status = SlotStatus.MISSED

