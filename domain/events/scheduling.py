"""Events of the scheduling service (its CourseSchedule aggregate, one per course)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import ClassVar
from uuid import UUID

from pydantic import Field

from domain.base import DomainEvent, RequiresReason, ShortText
from domain.catalogues.modalities import Modality
from domain.catalogues.strategies import Strategy

#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "scheduling"
AGGREGATE = "course_schedule"


class SlotKind(str, Enum):
    SESSION = "session"
    CHECK_IN = "check_in"


class ScheduleOpened(DomainEvent):
    summary_template: ClassVar[str] = "Schedule opened: {modality} course of {planned_sessions} sessions"
    course_id: UUID
    plan_id: UUID
    client_id: ShortText
    modality: Modality
    planned_sessions: int = Field(ge=1)
    strategy: Strategy


class ScheduleFollowsStrategy(RequiresReason):
    summary_template: ClassVar[str] = "Schedule follows strategy {strategy} (was {previous_strategy})"
    course_id: UUID
    previous_strategy: Strategy
    strategy: Strategy


class SessionScheduled(DomainEvent):
    summary_template: ClassVar[str] = "Slot {number} ({kind}) scheduled for {starts_at}"
    course_id: UUID
    number: int = Field(ge=1)
    kind: SlotKind
    starts_at: datetime
    ends_at: datetime


class SessionRescheduled(RequiresReason):
    summary_template: ClassVar[str] = "Slot {number} ({kind}) moved from {previous_starts_at} to {starts_at}"
    course_id: UUID
    number: int = Field(ge=1)
    kind: SlotKind
    previous_starts_at: datetime
    starts_at: datetime
    ends_at: datetime
    strategy: Strategy


class SessionAttendanceRecorded(DomainEvent):
    summary_template: ClassVar[str] = "Session {number} recorded as held"
    course_id: UUID
    number: int = Field(ge=1)


class SessionMissed(DomainEvent):
    summary_template: ClassVar[str] = "Slot {number} ({kind}) missed (due {starts_at}, not held by {missed_after})"
    course_id: UUID
    plan_id: UUID
    client_id: ShortText
    number: int = Field(ge=1)
    kind: SlotKind
    starts_at: datetime
    missed_after: datetime


class SessionAttendanceCorrected(DomainEvent):
    """A session recorded as held after it had been marked missed (the clinician recorded it
    late, or the record of it reached the service late): the miss is corrected."""

    summary_template: ClassVar[str] = "Slot {number} ({kind}) was held after all; the miss is corrected"
    course_id: UUID
    plan_id: UUID
    client_id: ShortText
    number: int = Field(ge=1)
    kind: SlotKind
