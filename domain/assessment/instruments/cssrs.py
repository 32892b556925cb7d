"""Columbia Suicide Severity Rating Scale, screener version.

Answers, in order: 1 wish to be dead; 2 active suicidal thoughts; 3 thoughts with method;
4 intent without specific plan; 5 plan with intent (3–5 asked only when 2 is yes, else
null); 6 suicidal behaviour: 0 never, 1 in the lifetime but not within the past 3 months,
2 within the past 3 months. Items 1–5 are 0 (no) or 1 (yes).

Triage: yes to 4 or 5, or behaviour within 3 months → high (immediate safety response);
yes to 3, or lifetime behaviour → moderate; yes to 1 or 2 only → low; otherwise none.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.assessment.instruments.definition import InstrumentDefinition, answer_at
from domain.assessment.results import Rejection, Score, SuicideRisk


def score(answers: list[int | None]) -> Score | Rejection:
    high_signal = high_risk_signal(answers)
    q1, q2, q3, q4, q5, q6 = answers
    if q1 is None or q2 is None or q6 is None:
        return Rejection(instrument=CSSRS_SCREENER.name, reason="Items 1, 2 and 6 are always asked; one is unanswered",
                         suicide_item_positive=high_signal)
    if q2 == 0 and any(a is not None for a in (q3, q4, q5)):
        return Rejection(instrument=CSSRS_SCREENER.name,
                         reason="Items 3 to 5 are asked only when item 2 is yes; answers conflict",
                         suicide_item_positive=high_signal)
    if q2 == 1 and any(a is None for a in (q3, q4, q5)):
        return Rejection(instrument=CSSRS_SCREENER.name, reason="Item 2 is yes, so items 3 to 5 must be answered",
                         suicide_item_positive=high_signal)
    if q4 == 1 or q5 == 1 or q6 == 2:
        risk = SuicideRisk.HIGH
    elif q3 == 1 or q6 == 1:
        risk = SuicideRisk.MODERATE
    elif q1 == 1 or q2 == 1:
        risk = SuicideRisk.LOW
    else:
        risk = SuicideRisk.NONE
    return Score(
        instrument=CSSRS_SCREENER.name,
        answered_items=sum(a is not None for a in answers),
        suicide_risk=risk,
        suicide_item_positive=risk is not SuicideRisk.NONE,
    )


def high_risk_signal(answers: Sequence[object]) -> bool:
    """Fail-safe reading of answers that cannot be scored: any yes to intent or plan, or
    recent behaviour, counts."""
    return (answer_at(answers, 4) or 0) >= 1 or (answer_at(answers, 5) or 0) >= 1 or (answer_at(answers, 6) or 0) >= 2


CSSRS_SCREENER = InstrumentDefinition(
    name="C-SSRS-screener",
    display_name="The C-SSRS screener",
    answer_ranges=((0, 1),) * 5 + ((0, 2),),
    score=score,
    # Every item is about suicide, and the screener grades the risk as a whole (triage,
    # above), so it has no single suicide item; its high risk escalates on its own.
    unscorable_risk=high_risk_signal,
)
