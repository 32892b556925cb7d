"""``careplan service care-policies``: the care application reacting to other services."""

from __future__ import annotations

from services.care.application import CareApplication
from services.care.policies import NAME, SUBJECTS
from services.shared.runner import RunningService
from services.shared.settings import Settings


def make(settings: Settings) -> RunningService:
    # The care application's log is relayed by `careplan relay`; this process only consumes.
    return RunningService(settings, CareApplication(settings), SUBJECTS, name=NAME, with_relay=False)
