"""Scheduling: plans each course's sessions, re-plans on strategy changes (emergency
support adds check-ins), records attendance, and marks sessions missed after their end
plus a grace period (durable timers) — care.scheduling.v1..."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from contracts.subjects import subject_for
from domain.base import Actor, AggregateRoot, CommandContext, Role
from domain.catalogues.modalities import Modality
from domain.catalogues.strategies import Strategy
from domain.events.care_plan import CarePlanDrafted, EmergencySupportActivated, EmergencySupportEnded, StrategyChanged
from domain.events.scheduling import ScheduleOpened
from domain.events.therapy_course import CourseStarted, SessionHeld
from domain.scheduling.plans import PlanStrategy, plan_strategy_id
from domain.scheduling.schedule import CourseSchedule, schedule_id
from services.shared.clock import Clock
from services.shared.processing import Inbound, ServiceApplication
from services.shared.settings import Settings

NAME = "scheduling"
SUBJECTS = [
    subject_for(CarePlanDrafted, "*"),
    subject_for(StrategyChanged, "*"),
    subject_for(EmergencySupportActivated, "*"),
    subject_for(EmergencySupportEnded, "*"),
    subject_for(CourseStarted, "*"),
    subject_for(SessionHeld, "*"),
]
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

    def _plan(self, plan_id: UUID) -> PlanStrategy:
        plan: PlanStrategy | None = self.find(PlanStrategy, plan_strategy_id(plan_id))
        if plan is None:
            msg = f"no CarePlanDrafted seen for plan {plan_id}"
            raise PlanNotSeenError(msg)
        return plan

    def decide(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        body, ctx, event = inbound.body, self.context_for(inbound), inbound.event_name
        if event == "care_plan_drafted":
            plan_id = UUID(inbound.aggregate_id)
            if self.find(PlanStrategy, plan_strategy_id(plan_id)) is not None:
                return []
            return [PlanStrategy.note(plan_id, Strategy(body["strategy"]), ctx=ctx)]
        if event in _NEW_STRATEGY:
            plan = self._plan(UUID(inbound.aggregate_id))
            strategy = _NEW_STRATEGY[event](body)
            if not plan.follow(strategy, ctx=ctx):
                return []
            changed: list[AggregateRoot] = [plan]
            for course_id in plan.courses:
                schedule: CourseSchedule | None = self.find(CourseSchedule, schedule_id(course_id))
                if schedule is not None:
                    schedule.follow_strategy(strategy, reason=f"Plan strategy now {strategy.value}: {body.get('reason')}", ctx=ctx)
                    self._arm(schedule)
                    changed.append(schedule)
            return changed
        if event == "course_started":
            course_id = UUID(inbound.aggregate_id)
            if self.find(CourseSchedule, schedule_id(course_id)) is not None:
                return []
            plan = self._plan(UUID(body["plan_id"]))
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
        now = self.clock()
        fired = 0
        for sid, due in sorted(self.timers.items(), key=lambda item: item[1]):
            if due > now:
                continue
            schedule: CourseSchedule | None = self.find(CourseSchedule, sid)
            if schedule is None:
                self.timers.pop(sid, None)
                continue
            ctx = CommandContext(actor=self.actor, at=now, correlation_id=schedule.id)
            if schedule.mark_missed(ctx=ctx):
                self.save(schedule)
                fired += 1
            self._arm(schedule)
        return fired

