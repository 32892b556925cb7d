"""``careplan service escalation``."""

from __future__ import annotations

from services.escalation.service import SUBJECTS, EscalationApplication
from services.shared.runner import RunningService
from services.shared.settings import Settings


def make(settings: Settings) -> RunningService:
    app = EscalationApplication(settings)
    return RunningService(settings, app, SUBJECTS, tick=app.fire_due_timers, tick_interval=settings.escalation_tick_seconds)
