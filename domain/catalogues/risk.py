"""Risk levels of a care plan, ordered from none to imminent."""

from __future__ import annotations

from enum import Enum


class RiskLevel(str, Enum):
    NONE = "none"
    LOW = "low"
    MODERATE = "moderate"
    HIGH = "high"
    IMMINENT = "imminent"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)


_ORDER = list(RiskLevel)
