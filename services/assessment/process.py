"""``careplan service assessment``."""

from __future__ import annotations

from services.assessment.service import SUBJECTS, AssessmentApplication
from services.shared.runner import RunningService
from services.shared.settings import Settings


def make(settings: Settings) -> RunningService:
    return RunningService(settings, AssessmentApplication(settings), SUBJECTS)
