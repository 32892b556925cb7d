"""Scores a submission of any instrument, or rejects it with the reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.assessment import cssrs, gad7, phq9
from domain.assessment.results import RangeCheck, Rejection, Score
from domain.base import quote

SCORERS: dict[str, Callable[[list[int | None], RangeCheck], Score | Rejection]] = {
    phq9.NAME: phq9.score,
    gad7.NAME: gad7.score,
    cssrs.NAME: cssrs.score,
}


def check_range(answers: list[Any], low: int, high: int, first_item: int = 1) -> str | None:
    """The first answer out of range, said in a bounded sentence: the value is shown only
    when it is a short whole number (an answer may be any size or type on the wire)."""
    for number, answer in enumerate(answers, start=first_item):
        if answer is None:
            continue
        if isinstance(answer, bool) or not isinstance(answer, int):
            return f"Item {number} is not a whole number ({type(answer).__name__}); answers are whole numbers"
        if not low <= answer <= high:
            shown = str(answer) if -1000 < answer < 1000 else "out of range"
            return f"Item {number} is {shown}; it is scored {low} to {high}"
    return None


def score_submission(instrument: str, answers: list[Any]) -> Score | Rejection:
    scorer = SCORERS.get(instrument)
    if scorer is None:
        known = ", ".join(SCORERS)
        # An unknown instrument might still carry a risk signal we cannot read: say so.
        return Rejection(instrument=instrument, reason=f"Unknown instrument {quote(instrument, 40)!r}; scored instruments are {known}")
    return scorer(list(answers), check_range)
