"""Change against the course's first score of the same instrument.

Response: at least a 50% reduction. Remission: PHQ-9 below 5. Reliable improvement or
deterioration: a change of at least 6 points on the PHQ-9 or 4 on the GAD-7 (NHS Talking
Therapies). Caseness: PHQ-9 above 9, GAD-7 above 7. Jacobson–Truax reliable change index
RCI = (x2 − x1) / (SD1·√2·√(1 − r)), reliable when |RCI| > 1.96.

SD1 and r per instrument: r is the published test-retest reliability (PHQ-9 0.84,
Kroenke 2001; GAD-7 0.83, Spitzer 2006); SD1 is the standard deviation of a
pre-treatment clinical sample, set so that the RCI criterion agrees with the published
reliable-change thresholds of 6 and 4 points (PHQ-9 5.41, GAD-7 3.49).
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from domain.assessment import gad7, phq9

NORMS: dict[str, tuple[float, float]] = {phq9.NAME: (5.41, 0.84), gad7.NAME: (3.49, 0.83)}
RELIABLE_CHANGE = {phq9.NAME: phq9.RELIABLE_CHANGE, gad7.NAME: gad7.RELIABLE_CHANGE}
CASENESS_ABOVE = {phq9.NAME: phq9.CASENESS_ABOVE, gad7.NAME: gad7.CASENESS_ABOVE}
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


def caseness(instrument: str, total: int) -> bool:
    return total > CASENESS_ABOVE[instrument]


def against_baseline(instrument: str, baseline: int, current: int) -> Change:
    sd1, r = NORMS[instrument]
    delta = current - baseline
    rci = delta / (sd1 * math.sqrt(2) * math.sqrt(1 - r))
    threshold = RELIABLE_CHANGE[instrument]
    return Change(
        baseline_total=baseline,
        change=delta,
        response=baseline > 0 and (baseline - current) >= 0.5 * baseline,
        remission=(current < phq9.REMISSION_BELOW) if instrument == phq9.NAME else None,
        reliable_improvement=-delta >= threshold,
        reliable_deterioration=delta >= threshold,
        caseness=caseness(instrument, current),
        rci=round(rci, 3),
        rci_reliable=abs(rci) > RCI_CRITERION,
    )
