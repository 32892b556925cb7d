"""GAD-7 (Spitzer, Kroenke, Williams & Löwe, Arch Intern Med 2006)."""

from __future__ import annotations

from domain.assessment.instruments.definition import ChangeNorms, InstrumentDefinition, LoincCodes
from domain.assessment.results import Rejection, Score, Severity


def score(answers: list[int | None]) -> Score | Rejection:
    missing = sum(a is None for a in answers)
    if missing:
        # No prorating rule is published for the GAD-7 in our sources: never guess.
        return Rejection(instrument=GAD7.name, reason=f"{missing} of 7 items unanswered; GAD-7 is scored only when complete")
    total = sum(a for a in answers if a is not None)
    return Score(instrument=GAD7.name, total=total, severity=GAD7.severity(total), answered_items=GAD7.items)


GAD7 = InstrumentDefinition(
    name="GAD-7",
    display_name="GAD-7",
    answer_ranges=((0, 3),) * 7,
    score=score,
    # 5, 10 and 15 mark mild, moderate and severe.
    bands=((4, Severity.MINIMAL), (9, Severity.MILD), (14, Severity.MODERATE), (21, Severity.SEVERE)),
    # NHS Talking Therapies: reliable change 4 points, caseness above 7; no remission rule.
    # SD1 makes the RCI agree with the 4 points given r = 0.83 (Spitzer 2006).
    change=ChangeNorms(reliable_change=4, caseness_above=7, sd1=3.49, retest_r=0.83),
    loinc=LoincCodes(total="70274-6", total_display="Generalized anxiety disorder 7 item (GAD-7) total score",
                     panel="69737-5"),
)
