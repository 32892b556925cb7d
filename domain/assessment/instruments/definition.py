"""What defines an instrument: its items and the answers each takes, how it is scored, and
what its scores mean (severity bands, change over time, caseness, LOINC codes, suicide items).
One frozen value per instrument, made in the instrument's own module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from domain.assessment.results import Rejection, Score, Severity

#: The answers one item takes, both ends included: (0, 3) for "not at all" to "nearly every day".
AnswerRange = tuple[int, int]


@dataclass(frozen=True)
class ChangeNorms:
    """How a total is read against the course's first one (DOMAIN.md, "Change over time")."""

    #: A change of at least this many points is reliable improvement or deterioration.
    reliable_change: int
    #: A total above this is a case.
    caseness_above: int
    #: Jacobson–Truax: the standard deviation of a pre-treatment clinical sample, and the
    #: published test-retest reliability r.
    sd1: float
    retest_r: float
    #: A total below this is remission; None where no remission rule is used.
    remission_below: int | None = None


@dataclass(frozen=True)
class LoincCodes:
    """The instrument's codes in LOINC, for FHIR: its total score and its panel (the form)."""

    total: str
    total_display: str
    panel: str


@dataclass(frozen=True)
class InstrumentDefinition:
    #: The name on the wire and in events, and the ``Instrument`` member's value: "PHQ-9".
    name: str
    #: How a rejection reason names it, at the start of a sentence: "The C-SSRS screener".
    display_name: str
    #: One range per item, in item order: their number is the instrument's item count.
    answer_ranges: tuple[AnswerRange, ...]
    #: Scores answers already of the right count, each a whole number in its item's range
    #: or None (unanswered); rejects them, with the reason, by a rule of the instrument's own.
    score: Callable[[list[int | None]], Score | Rejection]
    #: Inclusive upper bound of each severity band, lowest first; empty for an instrument
    #: without a total.
    bands: tuple[tuple[int, Severity], ...] = ()
    #: None for an instrument whose totals are not compared over time.
    change: ChangeNorms | None = None
    #: None for an instrument not shown as a FHIR Observation.
    loinc: LoincCodes | None = None
    #: Items asking about thoughts of death or self-harm: an answer above 0 needs clinical
    #: review whatever the total (PHQ-9 item 9).
    suicide_items: tuple[int, ...] = ()
    #: Fail-safe reading of answers that cannot be scored, for an instrument that grades
    #: suicide risk as a whole; without it, a suicide item above 0 is the signal.
    unscorable_risk: Callable[[Sequence[object]], bool] | None = None

    @property
    def items(self) -> int:
        return len(self.answer_ranges)

    def severity(self, total: int) -> Severity:
        return next(band for upper, band in self.bands if total <= upper)

    def suicide_item_positive(self, answers: Sequence[object]) -> bool:
        return any((answer_at(answers, item) or 0) > 0 for item in self.suicide_items)

    def risk_signal(self, answers: Sequence[object]) -> bool:
        """Whether answers that cannot be scored still carry a risk signal (they escalate)."""
        if self.unscorable_risk is not None:
            return self.unscorable_risk(answers)
        return self.suicide_item_positive(answers)


def answer_at(answers: Sequence[object], item: int) -> int | None:
    """The answer to ``item`` (numbered from 1) when it was given as a whole number; answers
    that cannot be scored may be short, or hold anything."""
    value = answers[item - 1] if len(answers) >= item else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
