"""``careplan service scheduling``."""

from __future__ import annotations

from services.scheduling.service import SUBJECTS, SchedulingApplication
from services.shared.runner import RunningService
from services.shared.settings import Settings


def make(settings: Settings) -> RunningService:
    app = SchedulingApplication(settings)
    return RunningService(settings, app, SUBJECTS, tick=app.fire_due_timers, tick_interval=settings.escalation_tick_seconds)
