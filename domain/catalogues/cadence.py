"""Session cadence: how far apart sessions are, by modality and strategy (DOMAIN.md,
"Scheduling"). IPT is weekly whatever the strategy (seed 001); other courses follow the
strategy in force. Emergency support keeps the cadence and adds near-term check-ins."""

from __future__ import annotations

from datetime import timedelta

from domain.catalogues.modalities import Modality
from domain.catalogues.strategies import Strategy

WEEKLY = timedelta(days=7)

INTERVAL_BY_STRATEGY: dict[Strategy, timedelta] = {
    Strategy.LONG_TERM_DEEP_WORK: WEEKLY,
    Strategy.MID_TERM_IN_DEPTH: WEEKLY,
    Strategy.MID_TERM_MODERATE_DEPTH: timedelta(days=14),
    Strategy.SHORT_TERM_DEEP_IMPACT: timedelta(days=3, hours=12),  # twice a week
    Strategy.SHORT_TERM_MODERATE: WEEKLY,
    Strategy.EMERGENCY_SUPPORT: WEEKLY,
    Strategy.COMBINED_APPROACH: WEEKLY,
}

#: Check-ins added when emergency support begins, counted from that moment.
EMERGENCY_CHECK_INS: tuple[timedelta, ...] = (timedelta(days=1), timedelta(days=3))
SESSION_LENGTH = timedelta(minutes=50)
CHECK_IN_LENGTH = timedelta(minutes=20)
#: A session not marked held by its end plus this becomes missed.
MISSED_AFTER = timedelta(hours=24)
#: The first session of a course, counted from the course's start.
FIRST_SESSION_AFTER = timedelta(days=7)


def interval(modality: Modality, strategy: Strategy) -> timedelta:
    return WEEKLY if modality is Modality.INTERPERSONAL else INTERVAL_BY_STRATEGY[strategy]
