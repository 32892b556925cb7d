"""Standardised questionnaires used to track progress (DOMAIN.md, "Assessment scoring").

An instrument is defined once, in its module under ``domain/assessment/instruments/``, and
registered there by one line of ``Instrument``; this catalogue reads its names from there.
(So nothing that registry imports may import this module.)
"""

from __future__ import annotations

from domain.assessment.instruments import Instrument

ITEM_COUNTS: dict[Instrument, int] = {member: member.item_count for member in Instrument}

#: Upper bound on answers accepted with a submission. The scoring service judges the
#: exact shape per instrument; the course only refuses what cannot be a questionnaire.
MAX_SUBMITTED_ITEMS = 50
#: Largest value an answer can have on any questionnaire we know of (items are scored 0–3,
#: 0–1 or 0–2). A value above it, or below 0, is not an answer: refused at the door. A value
#: within it but outside its instrument's range is recorded, and the scoring service
#: rejects the submission with the reason and keeps its risk flag.
MAX_ANSWER_VALUE = 99

__all__ = ["ITEM_COUNTS", "MAX_ANSWER_VALUE", "MAX_SUBMITTED_ITEMS", "Instrument"]
