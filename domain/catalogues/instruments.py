"""Standardised questionnaires used to track progress (DOMAIN.md, "Assessment scoring")."""

from __future__ import annotations

from enum import Enum


class Instrument(str, Enum):
    PHQ9 = "PHQ-9"
    GAD7 = "GAD-7"
    CSSRS_SCREENER = "C-SSRS-screener"

    @property
    def item_count(self) -> int:
        return ITEM_COUNTS[self]


ITEM_COUNTS: dict[Instrument, int] = {
    Instrument.PHQ9: 9,
    Instrument.GAD7: 7,
    Instrument.CSSRS_SCREENER: 6,
}

#: Upper bound on answers accepted with a submission. The scoring service judges the
#: exact shape per instrument; the course only refuses what cannot be a questionnaire.
MAX_SUBMITTED_ITEMS = 50
#: Largest value an answer can have on any questionnaire we know of (items are scored 0–3,
#: 0–1 or 0–2). A value above it, or below 0, is not an answer: refused at the door. A value
#: within it but outside its instrument's range is recorded, and the scoring service
#: rejects the submission with the reason and keeps its risk flag.
MAX_ANSWER_VALUE = 99
