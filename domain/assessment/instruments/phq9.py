"""PHQ-9 (Kroenke, Spitzer & Williams, J Gen Intern Med 2001; prorating: NHS Data Dictionary)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from domain.assessment.instruments.definition import ChangeNorms, InstrumentDefinition, LoincCodes
from domain.assessment.results import Rejection, Score, Severity

SUICIDE_ITEM = 9  # "thoughts that you would be better off dead, or of hurting yourself"
MAX_MISSING = 2


def score(answers: list[int | None]) -> Score | Rejection:
    positive = PHQ9.suicide_item_positive(answers)
    answered = [a for a in answers if a is not None]
    missing = PHQ9.items - len(answered)
    if missing > MAX_MISSING:
        return Rejection(
            instrument=PHQ9.name,
            reason=f"{missing} of 9 items unanswered; PHQ-9 is prorated for one or two missing items only",
            suicide_item_positive=positive,
        )
    if missing:
        # mean of the answered items × 9, rounded half up (NHS Data Dictionary)
        total = int((Decimal(sum(answered)) * PHQ9.items / len(answered)).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    else:
        total = sum(answered)
    return Score(
        instrument=PHQ9.name,
        total=total,
        severity=PHQ9.severity(total),
        answered_items=len(answered),
        prorated=bool(missing),
        suicide_item_positive=positive,
    )


PHQ9 = InstrumentDefinition(
    name="PHQ-9",
    display_name="PHQ-9",
    answer_ranges=((0, 3),) * 9,
    score=score,
    bands=((4, Severity.MINIMAL), (9, Severity.MILD), (14, Severity.MODERATE), (19, Severity.MODERATELY_SEVERE),
           (27, Severity.SEVERE)),
    # NHS Talking Therapies: reliable change 6 points, caseness above 9, remission below 5.
    # SD1 makes the RCI agree with the 6 points given r = 0.84 (Kroenke 2001).
    change=ChangeNorms(reliable_change=6, caseness_above=9, sd1=5.41, retest_r=0.84, remission_below=5),
    loinc=LoincCodes(total="44261-6", total_display="Patient Health Questionnaire 9 item (PHQ-9) total score",
                     panel="44249-1"),
    suicide_items=(SUICIDE_ITEM,),
)
