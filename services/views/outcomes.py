"""Outcomes of a course of treatment, the NHS Talking Therapies way (docs/outcomes.md).

Pure functions of a course's PHQ-9 and GAD-7 totals in the order they were answered:

- caseness: PHQ-9 ≥ 10 or GAD-7 ≥ 8 (the instruments' ``caseness_above`` 9 and 7);
- a measure is *paired* when it has a first and a last score (two or more); a course has
  paired scores when at least one measure is paired, and only paired measures are judged;
- case at the first score: a case on either paired measure's first score;
- recovery: a case at the first score and not a case on any paired measure's last;
- reliable improvement: either measure improves by at least its reliable change (PHQ-9 6,
  GAD-7 4) and neither deteriorates by that much; reliable deterioration: either
  deteriorates by at least that much;
- reliable recovery: recovery and reliable improvement;
- Jacobson–Truax RCI per measure, (last − first) / (SD1·√2·√(1 − r)), with each instrument's
  SD1 and r (``domain/assessment/instruments``), reliable when |RCI| > 1.96.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from domain.assessment.change import RCI_CRITERION, norms_of

PHQ9, GAD7 = "PHQ-9", "GAD-7"
MEASURES: tuple[str, ...] = (PHQ9, GAD7)


def _norms(instrument: str):  # type: ignore[no-untyped-def]
    norms = norms_of(instrument)
    if norms is None:
        raise ValueError(f"{instrument} has no change norms")
    return norms


def is_case(instrument: str, total: int) -> bool:
    """Above the clinical cut-off: PHQ-9 10 or more, GAD-7 8 or more."""
    return total > _norms(instrument).caseness_above


def reliable_change_points(instrument: str) -> int:
    return int(_norms(instrument).reliable_change)


def rci(instrument: str, first: int, last: int) -> float:
    """Jacobson–Truax reliable change index; negative is improvement (totals fall)."""
    norms = _norms(instrument)
    return (last - first) / (norms.sd1 * math.sqrt(2) * math.sqrt(1 - norms.retest_r))


class MeasureOutcome(BaseModel):
    """One measure's first and last scores in a course and what their change means."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    instrument: str
    count: int
    """How many scores the course has on this measure"""
    first: int
    last: int
    change: int
    """Last − first (negative: fewer symptoms)"""
    case_at_first: bool
    case_at_last: bool
    reliable_improvement: bool
    reliable_deterioration: bool
    rci: float
    """Jacobson–Truax reliable change index, rounded to 3 places"""
    rci_reliable: bool
    """|RCI| > 1.96"""


def measure_outcome(instrument: str, totals: Sequence[int]) -> MeasureOutcome | None:
    """None unless the measure is paired (two or more scores)."""
    if len(totals) < 2:
        return None
    first, last = totals[0], totals[-1]
    points = reliable_change_points(instrument)
    index = rci(instrument, first, last)
    return MeasureOutcome(
        instrument=instrument, count=len(totals), first=first, last=last, change=last - first,
        case_at_first=is_case(instrument, first), case_at_last=is_case(instrument, last),
        reliable_improvement=first - last >= points, reliable_deterioration=last - first >= points,
        rci=round(index, 3), rci_reliable=abs(index) > RCI_CRITERION,
    )


class CourseResult(BaseModel):
    """A course's outcome from its paired measures (all False when it has none)."""

    model_config = ConfigDict(frozen=True, use_attribute_docstrings=True)

    paired: bool
    """At least one measure has two or more scores"""
    measures: dict[str, MeasureOutcome] = Field(default_factory=dict)
    """Per measure, only the paired ones"""
    case_at_first: bool = False
    recovered: bool = False
    reliable_improvement: bool = False
    reliable_deterioration: bool = False
    reliable_recovery: bool = False


def course_result(scores: dict[str, Sequence[int]]) -> CourseResult:
    """``scores``: each measure's totals in the order answered (PHQ-9, GAD-7; others ignored)."""
    measures = {m: o for m in MEASURES if (o := measure_outcome(m, scores.get(m, ()))) is not None}
    if not measures:
        return CourseResult(paired=False)
    outcomes = measures.values()
    case_at_first = any(o.case_at_first for o in outcomes)
    recovered = case_at_first and not any(o.case_at_last for o in outcomes)
    deteriorated = any(o.reliable_deterioration for o in outcomes)
    improved = any(o.reliable_improvement for o in outcomes) and not deteriorated
    return CourseResult(
        paired=True, measures=measures, case_at_first=case_at_first, recovered=recovered,
        reliable_improvement=improved, reliable_deterioration=deteriorated,
        reliable_recovery=recovered and improved,
    )


def rate(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 4) if denominator else None
