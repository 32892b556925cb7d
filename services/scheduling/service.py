"""Scheduling: plans each course's sessions, re-plans on strategy changes (emergency
support adds check-ins), records attendance, and marks sessions missed after their end
plus a grace period (durable timers) — care.scheduling.v1..."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from uuid import UUID

from domain.base import Actor, AggregateRoot, CommandContext, Role, bounded
from domain.catalogues.strategies import Strategy
from domain.events.care_plan import CarePlanDrafted, EmergencySupportActivated, EmergencySupportEnded, StrategyChanged
from domain.events.scheduling import ScheduleOpened
from domain.events.therapy_course import CourseStarted, SessionHeld
from domain.scheduling.plans import PlanStrategy, plan_strategy_id
from domain.scheduling.schedule import CourseSchedule, schedule_id
from services.shared.clock import Clock
from services.shared.cloudevents import Inbound, Watermark
from services.shared.reactions import Reactions
from services.shared.settings import Settings
from services.shared.timers import Fired, Timers
from services.shared.tracking import ServiceApplication

NAME = "scheduling"
_SETS_STRATEGY = (StrategyChanged, EmergencySupportActivated, EmergencySupportEnded)


def strategy_set_by(event: CarePlanDrafted | StrategyChanged | EmergencySupportActivated | EmergencySupportEnded) -> Strategy:
    """The plan's strategy after ``event``."""
    return Strategy.EMERGENCY_SUPPORT if isinstance(event, EmergencySupportActivated) else event.strategy


class PlanNotSeenError(LookupError):
    """A course or strategy change for a plan whose drafting was never seen."""


class SchedulingApplication(ServiceApplication):
    name = NAME
    actor = Actor(id="scheduling-service", role=Role.SERVICE)

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        super().__init__(settings, clock=clock)
        #: schedule id → when its next slot would become missed; rebuilt from the log at start.
        self.timers = Timers()
        #: Everything the care application committed before this moment has been decided here
        #: (its relay's latest watermark); None until one arrives after a start.
        self.attendance_known_until: datetime | None = None
        #: Partitioned (services/shared/partitions.py): the lowest stream position recorded
        #: by any of the service's partitions, whichever instance decides them. A watermark
        #: one partition has decided says nothing of the others, so the timers trust one only
        #: once every partition has recorded a position at or past it. None: unpartitioned.
        self.stream_floor: Callable[[], int] | None = None
        #: Partitioned: the care watermarks seen (stream sequence → moment), not yet behind the floor.
        self._watermarks: dict[int, datetime] = {}
        self._watermarks_lock = threading.Lock()
        for schedule in self._schedules():
            self._arm(schedule)

    def reread_after_recovery(self) -> None:
        super().reread_after_recovery()
        self.timers.clear()
        for schedule in self._schedules():
            self._arm(schedule)

    def follow_timers(self, after: int) -> int:
        touched: dict[UUID, None] = {}
        for notification in self.notifications_after(after):
            after = notification.id
            touched[notification.originator_id] = None
        for aggregate_id in touched:
            schedule = self.find(CourseSchedule, aggregate_id)
            if schedule is not None:
                self._arm(schedule)
        return after

    def _schedules(self) -> list[CourseSchedule]:
        found = [self.find(CourseSchedule, sid) for sid in self.aggregate_ids_created_by(ScheduleOpened)]
        return [s for s in found if s is not None]

    def _arm(self, schedule: CourseSchedule) -> None:
        self.timers.arm(schedule.id, schedule.next_due())

    def _plan(self, plan_id: UUID, inbound: Inbound) -> PlanStrategy:
        plan: PlanStrategy | None = self.find(PlanStrategy, plan_strategy_id(plan_id))
        if plan is None:
            plan = self._catch_up(plan_id, inbound)
        return plan

    def _catch_up(self, plan_id: UUID, inbound: Inbound) -> PlanStrategy:
        """The plan's drafting was never decided here (dead-lettered, or older than this
        consumer's stream): its strategy is read from the stream — the latest of the events
        that set it — instead of failing on every course and change of the plan."""
        found = [
            event for event_class in (CarePlanDrafted, StrategyChanged, EmergencySupportActivated, EmergencySupportEnded)
            if self.history is not None and (event := self.history.last(event_class, plan_id)) is not None
        ]
        if not found:
            msg = f"no CarePlanDrafted seen for plan {plan_id}, and none on the stream"
            raise PlanNotSeenError(msg)
        latest = max(found, key=lambda e: e.stream_sequence)
        event = self.reactions.decode(latest)
        assert isinstance(event, (CarePlanDrafted, *_SETS_STRATEGY))
        return PlanStrategy.note(plan_id, strategy_set_by(event), ctx=self.context_for(latest))

    def note_watermark(self, watermark: Watermark) -> None:
        if watermark.source != "care":
            return
        if self.stream_floor is None:
            self.attendance_known_until = watermark.at
            return
        with self._watermarks_lock:
            self._watermarks[watermark.stream_sequence] = watermark.at

    def _attendance_known_until(self) -> datetime | None:
        """How far attendance has been read: the latest care watermark that every partition
        has passed (partitioned), else the latest this consumer decided."""
        if self.stream_floor is None:
            return self.attendance_known_until
        floor = self.stream_floor()
        with self._watermarks_lock:
            passed = [sequence for sequence in self._watermarks if sequence <= floor]
            if passed:
                at = self._watermarks[max(passed)]
                for sequence in passed:
                    del self._watermarks[sequence]
                if self.attendance_known_until is None or at > self.attendance_known_until:
                    self.attendance_known_until = at
        return self.attendance_known_until

    def _drafted(self, drafted: CarePlanDrafted, inbound: Inbound) -> Sequence[AggregateRoot]:
        if self.find(PlanStrategy, plan_strategy_id(drafted.originator_id)) is not None:
            return []
        return [PlanStrategy.note(drafted.originator_id, drafted.strategy, ctx=self.context_for(inbound))]

    def _new_strategy(self, event: StrategyChanged | EmergencySupportActivated | EmergencySupportEnded,
                      inbound: Inbound) -> Sequence[AggregateRoot]:
        ctx = self.context_for(inbound)
        plan = self._plan(event.originator_id, inbound)
        strategy = strategy_set_by(event)
        if not plan.follow(strategy, ctx=ctx):
            return []
        changed: list[AggregateRoot] = [plan]
        for course_id in plan.courses:
            schedule: CourseSchedule | None = self.find(CourseSchedule, schedule_id(course_id))
            if schedule is not None:
                why = bounded(f"Plan strategy now {strategy.value}: ", event.reason)
                schedule.follow_strategy(strategy, reason=why, ctx=ctx)
                self._arm(schedule)
                changed.append(schedule)
        return changed

    def _course_started(self, started: CourseStarted, inbound: Inbound) -> Sequence[AggregateRoot]:
        course_id = started.originator_id
        if self.find(CourseSchedule, schedule_id(course_id)) is not None:
            return []
        ctx = self.context_for(inbound)
        plan = self._plan(started.plan_id, inbound)
        plan.link(course_id, ctx=ctx)
        schedule = CourseSchedule.open(
            course_id=course_id, plan_id=plan.plan_id, client_id=started.client_id, modality=started.modality,
            planned_sessions=started.planned_sessions, strategy=plan.strategy, ctx=ctx,
        )
        self._arm(schedule)
        return [plan, schedule]

    def _session_held(self, held: SessionHeld, inbound: Inbound) -> Sequence[AggregateRoot]:
        schedule = self.find(CourseSchedule, schedule_id(held.originator_id))
        if schedule is None or not schedule.record_held(held.number, ctx=self.context_for(inbound)):
            return []
        self._arm(schedule)
        return [schedule]

    reactions = Reactions(
        {
            CarePlanDrafted: _drafted,
            StrategyChanged: _new_strategy,
            EmergencySupportActivated: _new_strategy,
            EmergencySupportEnded: _new_strategy,
            CourseStarted: _course_started,
            SessionHeld: _session_held,
        },
        # The care relay's watermarks say how far attendance has been read: sessions are
        # marked missed only behind them.
        watermarks=["care"],
    )

    def fire_due_timers(self) -> int:
        """Marks missed the slots due by now, but only as far as the care application's
        attendance has been read (its relay's watermark): a SessionHeld still on its way after
        an outage must not be overtaken by the timer."""
        now = self.clock()
        known = self._attendance_known_until()
        if known is None:
            return 0
        return self.timers.fire(min(now, known), lambda sid: self._mark_missed(sid, now, known))

    def _mark_missed(self, sid: UUID, now: datetime, known: datetime) -> Fired:
        schedule: CourseSchedule | None = self.find(CourseSchedule, sid)
        if schedule is None:
            return Fired(recorded=False, next_due=None)
        recorded = bool(schedule.mark_missed(known_until=known, ctx=CommandContext(actor=self.actor, at=now,
                                                                                  correlation_id=schedule.id)))
        if recorded:
            self.save(schedule)
        return Fired(recorded=recorded, next_due=schedule.next_due())


SUBJECTS = SchedulingApplication.reactions.subjects
