"""PHQ-9 (Kroenke, Spitzer & Williams, J Gen Intern Med 2001; prorating: NHS Data Dictionary)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from domain.assessment.results import RangeCheck, Rejection, Score, Severity

NAME = "PHQ-9"
ITEMS = 9
SUICIDE_ITEM = 9  # "thoughts that you would be better off dead, or of hurting yourself"
MAX_MISSING = 2
#: Inclusive upper bounds of each severity band.
BANDS = ((4, Severity.MINIMAL), (9, Severity.MILD), (14, Severity.MODERATE), (19, Severity.MODERATELY_SEVERE), (27, Severity.SEVERE))
#: Caseness: PHQ-9 above 9 (NHS Talking Therapies).
CASENESS_ABOVE = 9
REMISSION_BELOW = 5
RELIABLE_CHANGE = 6


def severity(total: int) -> Severity:
    return next(band for upper, band in BANDS if total <= upper)


def score(answers: list[int | None], check_range: RangeCheck) -> Score | Rejection:
    item9 = answers[SUICIDE_ITEM - 1] if len(answers) >= SUICIDE_ITEM else None
    positive = isinstance(item9, int) and not isinstance(item9, bool) and item9 > 0
    if len(answers) != ITEMS:
        return Rejection(instrument=NAME, reason=f"PHQ-9 has {ITEMS} items; {len(answers)} were given", suicide_item_positive=positive)
    problem = check_range(answers, 0, 3)
    if problem:
        return Rejection(instrument=NAME, reason=problem, suicide_item_positive=positive)
    answered = [a for a in answers if a is not None]
    missing = ITEMS - len(answered)
    if missing > MAX_MISSING:
        return Rejection(
            instrument=NAME,
            reason=f"{missing} of 9 items unanswered; PHQ-9 is prorated for one or two missing items only",
            suicide_item_positive=positive,
        )
    if missing:
        # mean of the answered items × 9, rounded half up (NHS Data Dictionary)
        total = int((Decimal(sum(answered)) * ITEMS / len(answered)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    else:
        total = sum(answered)
    return Score(
        instrument=NAME,
        total=total,
        severity=severity(total),
        answered_items=len(answered),
        prorated=bool(missing),
        suicide_item_positive=positive,
    )
