"""Change against the course's first score of the same instrument.

Response: at least a 50% reduction. Remission: a total below the instrument's remission
bound (PHQ-9 below 5). Reliable improvement or deterioration: a change of at least the
instrument's reliable-change points (NHS Talking Therapies: 6 on the PHQ-9, 4 on the GAD-7).
Caseness: a total above the instrument's cut-off (PHQ-9 above 9, GAD-7 above 7).
Jacobson–Truax reliable change index RCI = (x2 − x1) / (SD1·√2·√(1 − r)), reliable when
|RCI| > 1.96. Each instrument's numbers are its ``ChangeNorms``, in its module.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from domain.assessment.instruments import instrument_named
from domain.assessment.instruments.definition import ChangeNorms

RCI_CRITERION = 1.96


class Change(BaseModel):
    model_config = ConfigDict(frozen=True)

    baseline_total: int
    change: int
    response: bool
    remission: bool | None
    reliable_improvement: bool
    reliable_deterioration: bool
    caseness: bool
    rci: float
    rci_reliable: bool


def norms_of(instrument: str) -> ChangeNorms | None:
    """The instrument's change norms; None when its totals are not compared over time."""
    found = instrument_named(instrument)
    return found.change if found is not None else None


def _norms(instrument: str) -> ChangeNorms:
    norms = norms_of(instrument)
    if norms is None:
        raise KeyError(f"{instrument} totals are not compared over time")
    return norms


def caseness(instrument: str, total: int) -> bool:
    return total > _norms(instrument).caseness_above


def against_baseline(instrument: str, baseline: int, current: int) -> Change:
    norms = _norms(instrument)
    delta = current - baseline
    rci = delta / (norms.sd1 * math.sqrt(2) * math.sqrt(1 - norms.retest_r))
    threshold = norms.reliable_change
    return Change(
        baseline_total=baseline,
        change=delta,
        response=baseline > 0 and (baseline - current) >= 0.5 * baseline,
        remission=(current < norms.remission_below) if norms.remission_below is not None else None,
        reliable_improvement=-delta >= threshold,
        reliable_deterioration=delta >= threshold,
        caseness=caseness(instrument, current),
        rci=round(rci, 3),
        rci_reliable=abs(rci) > RCI_CRITERION,
    )
