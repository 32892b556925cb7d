"""GAD-7 (Spitzer, Kroenke, Williams & Löwe, Arch Intern Med 2006)."""

from __future__ import annotations

from domain.assessment.results import RangeCheck, Rejection, Score, Severity

NAME = "GAD-7"
ITEMS = 7
#: 5, 10 and 15 mark mild, moderate and severe.
BANDS = ((4, Severity.MINIMAL), (9, Severity.MILD), (14, Severity.MODERATE), (21, Severity.SEVERE))
CASENESS_ABOVE = 7
RELIABLE_CHANGE = 4


def severity(total: int) -> Severity:
    return next(band for upper, band in BANDS if total <= upper)


def score(answers: list[int | None], check_range: RangeCheck) -> Score | Rejection:
    if len(answers) != ITEMS:
        return Rejection(instrument=NAME, reason=f"GAD-7 has {ITEMS} items; {len(answers)} were given")
    problem = check_range(answers, 0, 3)
    if problem:
        return Rejection(instrument=NAME, reason=problem)
    missing = sum(a is None for a in answers)
    if missing:
        # No prorating rule is published for the GAD-7 in our sources: never guess.
        return Rejection(instrument=NAME, reason=f"{missing} of 7 items unanswered; GAD-7 is scored only when complete")
    total = sum(a for a in answers if a is not None)
    return Score(instrument=NAME, total=total, severity=severity(total), answered_items=ITEMS)
