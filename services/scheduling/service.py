"""Scheduling: plans each course's sessions, re-plans on strategy changes (emergency
support adds check-ins), records attendance, and marks sessions missed after their end
plus a grace period (durable timers) — care.scheduling.v1..."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from contracts.subjects import watermark_subject
from domain.base import Actor, AggregateRoot, CommandContext, Role, bounded
from domain.catalogues.modalities import Modality
from domain.catalogues.strategies import Strategy
from domain.events.care_plan import CarePlanDrafted, EmergencySupportActivated, EmergencySupportEnded, StrategyChanged
from domain.events.scheduling import ScheduleOpened
from domain.events.therapy_course import CourseStarted, SessionHeld
from domain.scheduling.plans import PlanStrategy, plan_strategy_id
from domain.scheduling.schedule import CourseSchedule, schedule_id
from services.shared.clock import Clock
from services.shared.processing import Inbound, ServiceApplication, Watermark, subjects_of
from services.shared.settings import Settings

NAME = "scheduling"
REACTS_TO = [CarePlanDrafted, StrategyChanged, EmergencySupportActivated, EmergencySupportEnded, CourseStarted, SessionHeld]
#: The care relay's watermarks say how far attendance has been read: sessions are marked
#: missed only behind them.
SUBJECTS = [*subjects_of(REACTS_TO), watermark_subject("care")]
_NEW_STRATEGY = {
    "strategy_changed": lambda body: Strategy(body["strategy"]),
    "emergency_support_activated": lambda body: Strategy.EMERGENCY_SUPPORT,
    "emergency_support_ended": lambda body: Strategy(body["strategy"]),
}


class PlanNotSeenError(LookupError):
    """A course or strategy change for a plan whose drafting was never seen."""


class SchedulingApplication(ServiceApplication):
    name = NAME
    actor = Actor(id="scheduling-service", role=Role.SERVICE)

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        super().__init__(settings, clock=clock)
        #: schedule id → when its next slot would become missed; rebuilt from the log at start.
        self.timers: dict[UUID, datetime] = {}
        #: Everything the care application committed before this moment has been decided here
        #: (its relay's latest watermark); None until one arrives after a start.
        self.attendance_known_until: datetime | None = None
        for schedule in self._schedules():
            self._arm(schedule)

    def reread_after_recovery(self) -> None:
        super().reread_after_recovery()
        self.timers = {}
        for schedule in self._schedules():
            self._arm(schedule)

    def _schedules(self) -> list[CourseSchedule]:
        found = [self.find(CourseSchedule, sid) for sid in self.aggregate_ids_created_by(ScheduleOpened)]
        return [s for s in found if s is not None]

    def _arm(self, schedule: CourseSchedule) -> None:
        due = schedule.next_due()
        if due is None:
            self.timers.pop(schedule.id, None)
        else:
            self.timers[schedule.id] = due

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
        strategy = Strategy(latest.body["strategy"]) if latest.event_name != "emergency_support_activated" else Strategy.EMERGENCY_SUPPORT
        return PlanStrategy.note(plan_id, strategy, ctx=self.context_for(latest))

    def note_watermark(self, watermark: Watermark) -> None:
        if watermark.source == "care":
            self.attendance_known_until = watermark.at

    def decide(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        body, ctx, event = inbound.body, self.context_for(inbound), inbound.event_name
        if event == "care_plan_drafted":
            plan_id = UUID(inbound.aggregate_id)
            if self.find(PlanStrategy, plan_strategy_id(plan_id)) is not None:
                return []
            return [PlanStrategy.note(plan_id, Strategy(body["strategy"]), ctx=ctx)]
        if event in _NEW_STRATEGY:
            plan = self._plan(UUID(inbound.aggregate_id), inbound)
            strategy = _NEW_STRATEGY[event](body)
            if not plan.follow(strategy, ctx=ctx):
                return []
            changed: list[AggregateRoot] = [plan]
            for course_id in plan.courses:
                schedule: CourseSchedule | None = self.find(CourseSchedule, schedule_id(course_id))
                if schedule is not None:
                    why = bounded(f"Plan strategy now {strategy.value}: ", body.get("reason"))
                    schedule.follow_strategy(strategy, reason=why, ctx=ctx)
                    self._arm(schedule)
                    changed.append(schedule)
            return changed
        if event == "course_started":
            course_id = UUID(inbound.aggregate_id)
            if self.find(CourseSchedule, schedule_id(course_id)) is not None:
                return []
            plan = self._plan(UUID(body["plan_id"]), inbound)
            plan.link(course_id, ctx=ctx)
            schedule = CourseSchedule.open(
                course_id=course_id, plan_id=plan.plan_id, client_id=body["client_id"], modality=Modality(body["modality"]),
                planned_sessions=int(body["planned_sessions"]), strategy=plan.strategy, ctx=ctx,
            )
            self._arm(schedule)
            return [plan, schedule]
        if event == "session_held":
            schedule = self.find(CourseSchedule, schedule_id(UUID(inbound.aggregate_id)))
            if schedule is None or not schedule.record_held(int(body["number"]), ctx=ctx):
                return []
            self._arm(schedule)
            return [schedule]
        return []

    def fire_due_timers(self) -> int:
        """Marks missed the slots due by now, but only as far as the care application's
        attendance has been read (its relay's watermark): a SessionHeld still on its way after
        an outage must not be overtaken by the timer."""
        now = self.clock()
        known = self.attendance_known_until
        if known is None:
            return 0
        fired = 0
        for sid, due in sorted(self.timers.items(), key=lambda item: item[1]):
            if due > min(now, known):
                continue
            schedule: CourseSchedule | None = self.find(CourseSchedule, sid)
            if schedule is None:
                self.timers.pop(sid, None)
                continue
            ctx = CommandContext(actor=self.actor, at=now, correlation_id=schedule.id)
            if schedule.mark_missed(known_until=known, ctx=ctx):
                self.save(schedule)
                fired += 1
            self._arm(schedule)
        return fired
