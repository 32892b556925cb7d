"""What scoring returns: a score, or a rejection that says why."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict


class Severity(str, Enum):
    MINIMAL = "minimal"
    MILD = "mild"
    MODERATE = "moderate"
    MODERATELY_SEVERE = "moderately_severe"
    SEVERE = "severe"


class SuicideRisk(str, Enum):
    """C-SSRS screener triage."""

    NONE = "none"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"


class Score(BaseModel):
    model_config = ConfigDict(frozen=True)

    instrument: str
    total: int | None = None
    severity: Severity | None = None
    answered_items: int
    prorated: bool = False
    #: PHQ-9 item 9 above 0: clinical review whatever the total.
    suicide_item_positive: bool = False
    suicide_risk: SuicideRisk | None = None


class Rejection(BaseModel):
    model_config = ConfigDict(frozen=True)

    instrument: str
    reason: str
    #: A risk signal found in answers that could not be scored (fail-safe: still escalates).
    suicide_item_positive: bool = False
