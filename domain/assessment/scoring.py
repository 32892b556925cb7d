"""Scores a submission of any registered instrument, or rejects it with the reason."""

from __future__ import annotations

from typing import Any

from domain.assessment.instruments import INSTRUMENTS, InstrumentDefinition, instrument_named
from domain.assessment.results import Rejection, Score
from domain.base import quote


def check_answers(definition: InstrumentDefinition, answers: list[Any]) -> str | None:
    """What is wrong with the answers' shape, said in a bounded sentence: their count, or
    the first answer out of its item's range. The value is shown only when it is a short
    whole number (an answer may be any size or type on the wire)."""
    if len(answers) != definition.items:
        return f"{definition.display_name} has {definition.items} items; {len(answers)} were given"
    for number, (answer, (low, high)) in enumerate(zip(answers, definition.answer_ranges, strict=True), start=1):
        if answer is None:
            continue
        if isinstance(answer, bool) or not isinstance(answer, int):
            return f"Item {number} is not a whole number ({type(answer).__name__}); answers are whole numbers"
        if not low <= answer <= high:
            shown = str(answer) if -1000 < answer < 1000 else "out of range"
            return f"Item {number} is {shown}; it is scored {low} to {high}"
    return None


def score_submission(instrument: str, answers: list[Any]) -> Score | Rejection:
    definition = instrument_named(instrument)
    if definition is None:
        known = ", ".join(found.name for found in INSTRUMENTS.values())
        # An unknown instrument might still carry a risk signal we cannot read: say so.
        return Rejection(instrument=instrument, reason=f"Unknown instrument {quote(instrument, 40)!r}; scored instruments are {known}")
    answers = list(answers)
    problem = check_answers(definition, answers)
    if problem:
        return Rejection(instrument=definition.name, reason=problem, suicide_item_positive=definition.risk_signal(answers))
    return definition.score(answers)
