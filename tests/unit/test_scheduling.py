"""Scheduling rules in virtual time: cadence, re-planning, check-ins, missed sessions."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

from domain.base import Actor, Role, project
from domain.catalogues.modalities import Modality
from domain.catalogues.strategies import Strategy
from domain.events.scheduling import (
    SessionAttendanceCorrected,
    SessionMissed,
    SessionRescheduled,
    SessionScheduled,
    SlotKind,
)
from domain.scheduling.schedule import CourseSchedule, SlotStatus
from tests.conftest import T0, ctx

SERVICE = Actor(id="scheduling-service", role=Role.SERVICE)


def opened(modality: Modality = Modality.SUPPORTIVE, strategy: Strategy = Strategy.SHORT_TERM_MODERATE) -> CourseSchedule:
    return CourseSchedule.open(
        course_id=uuid4(), plan_id=uuid4(), client_id="client-1", modality=modality, planned_sessions=4,
        strategy=strategy, ctx=ctx(SERVICE),
    )


def test_sessions_are_planned_from_the_course_weekly_for_ipt() -> None:
    ipt = opened(Modality.INTERPERSONAL, Strategy.MID_TERM_MODERATE_DEPTH)  # fortnightly strategy: IPT stays weekly
    starts = [s.starts_at for s in ipt.slots]
    assert starts == [T0 + timedelta(days=7 * (n + 1)) for n in range(4)]
    assert [e.number for e in ipt.pending_events if isinstance(e, SessionScheduled)] == [1, 2, 3, 4]


def test_a_strategy_change_replans_only_the_sessions_to_come() -> None:
    schedule = opened()
    schedule.record_held(1, ctx=ctx(SERVICE, T0 + timedelta(days=7, minutes=50)))
    schedule.follow_strategy(Strategy.MID_TERM_MODERATE_DEPTH, reason="Strategy changed", ctx=ctx(SERVICE, T0 + timedelta(days=8)))
    moved = [e for e in schedule.pending_events if isinstance(e, SessionRescheduled)]
    assert [m.number for m in moved] == [3, 4]  # 2 keeps its date and anchors the new fortnightly rhythm
    assert [s.starts_at - T0 for s in schedule.slots] == [timedelta(days=d) for d in (7, 14, 28, 42)]
    assert schedule.slots[0].status is SlotStatus.HELD


def test_emergency_support_adds_near_term_check_ins() -> None:
    schedule = opened()
    at = T0 + timedelta(days=2)
    schedule.follow_strategy(Strategy.EMERGENCY_SUPPORT, reason="Crisis raised", ctx=ctx(SERVICE, at))
    check_ins = [s for s in schedule.slots if s.kind is SlotKind.CHECK_IN]
    assert [c.starts_at for c in check_ins] == [at + timedelta(days=1), at + timedelta(days=3)]
    schedule.follow_strategy(Strategy.EMERGENCY_SUPPORT, reason="again", ctx=ctx(SERVICE, at))
    assert len([s for s in schedule.slots if s.kind is SlotKind.CHECK_IN]) == 2  # nothing changes


def test_a_slot_not_held_by_its_end_plus_grace_is_missed_once() -> None:
    schedule = opened()
    first_end = schedule.slots[0].ends_at
    assert schedule.next_due() == first_end + timedelta(hours=24)
    assert schedule.mark_missed(ctx=ctx(SERVICE, first_end + timedelta(hours=23))) == 0
    assert schedule.mark_missed(ctx=ctx(SERVICE, first_end + timedelta(hours=24))) == 1
    assert schedule.mark_missed(ctx=ctx(SERVICE, first_end + timedelta(hours=30))) == 0
    (missed,) = [e for e in schedule.pending_events if isinstance(e, SessionMissed)]
    assert (missed.number, missed.kind) == (1, SlotKind.SESSION)
    # held after all (its record arrived late): the miss is corrected by an event, once
    assert schedule.record_held(1, ctx=ctx(SERVICE))
    assert isinstance(schedule.pending_events[-1], SessionAttendanceCorrected)
    assert not schedule.record_held(1, ctx=ctx(SERVICE))
    assert schedule.slots[0].status is SlotStatus.HELD
    assert project(None, schedule.collect_events()).model_dump() == schedule.model_dump()


def test_slots_are_missed_only_as_far_as_attendance_is_known() -> None:
    schedule = opened()
    due = schedule.slots[0].ends_at + timedelta(hours=24)
    assert schedule.mark_missed(known_until=due - timedelta(seconds=1), ctx=ctx(SERVICE, due + timedelta(days=1))) == 0
    assert schedule.mark_missed(known_until=due, ctx=ctx(SERVICE, due + timedelta(days=1))) == 1
