"""Outcomes against a table of hand-computed cases (NHS Talking Therapies definitions,
docs/outcomes.md): caseness edges, recovery, reliable improvement vs. deterioration on each
measure, reliable recovery, pairing, and the Jacobson–Truax index."""

from __future__ import annotations

import pytest

from services.views.outcomes import GAD7, PHQ9, course_result, is_case, measure_outcome, rate


@pytest.mark.parametrize(("instrument", "total", "case"), [
    (PHQ9, 9, False), (PHQ9, 10, True), (PHQ9, 0, False), (PHQ9, 27, True),
    (GAD7, 7, False), (GAD7, 8, True), (GAD7, 0, False), (GAD7, 21, True),
])
def test_caseness_edges(instrument: str, total: int, case: bool) -> None:
    assert is_case(instrument, total) is case


# phq9 totals, gad7 totals → paired, case at first, recovered, reliable improvement, reliable deterioration, reliable recovery
CASES = [
    # PHQ-9 only
    ([9, 3], [], (True, False, False, True, False, False)),       # not a case at first; −6 is reliable
    ([10, 9], [], (True, True, True, False, False, False)),       # 10 a case, 9 not: recovered; −1 not reliable
    ([16, 10], [], (True, True, False, True, False, False)),      # −6 reliable but 10 still a case
    ([14, 9], [], (True, True, True, False, False, False)),       # −5: recovered, not reliably
    ([15, 9], [], (True, True, True, True, False, True)),         # −6 and below caseness: reliable recovery
    ([5, 11], [], (True, False, False, False, True, False)),      # +6: reliable deterioration
    ([5, 10], [], (True, False, False, False, False, False)),     # +5: not reliable
    ([12, 14, 4], [], (True, True, True, True, False, True)),     # first and last count, not the middle
    ([12], [], (False, False, False, False, False, False)),       # one score: not paired
    # GAD-7 only
    ([], [7, 2], (True, False, False, True, False, False)),       # 7 not a case; −5 reliable
    ([], [8, 7], (True, True, True, False, False, False)),        # 8 a case, 7 not
    ([], [12, 8], (True, True, False, True, False, False)),       # −4 reliable, 8 still a case
    ([], [11, 7], (True, True, True, True, False, True)),         # −4 and below caseness
    ([], [3, 7], (True, False, False, False, True, False)),       # +4: reliable deterioration
    ([], [3, 6], (True, False, False, False, False, False)),      # +3: not reliable
    # both measures
    ([15, 9], [12, 7], (True, True, True, True, False, True)),    # both improve, neither a case at last
    ([15, 9], [12, 8], (True, True, False, True, False, False)),  # GAD-7 still a case: not recovered
    ([20, 10], [5, 9], (True, True, False, False, True, False)),  # PHQ-9 improves, GAD-7 deteriorates: deterioration only
    ([12, 7], [10, 6], (True, True, True, True, False, True)),    # PHQ-9 −5 not reliable, GAD-7 −4 reliable
    ([8, 8], [6, 6], (True, False, False, False, False, False)),  # no case, no change
    ([9, 9], [8, 5], (True, True, True, False, False, False)),    # a case on GAD-7 only at first
    ([12], [9, 5], (True, True, True, True, False, True)),        # PHQ-9 unpaired: judged on GAD-7 alone
]


@pytest.mark.parametrize(("phq9", "gad7", "expected"), CASES)
def test_course_outcomes(phq9: list[int], gad7: list[int], expected: tuple[bool, ...]) -> None:
    r = course_result({PHQ9: phq9, GAD7: gad7})
    assert (r.paired, r.case_at_first, r.recovered, r.reliable_improvement, r.reliable_deterioration,
            r.reliable_recovery) == expected


@pytest.mark.parametrize(("instrument", "first", "last", "rci", "reliable"), [
    # PHQ-9: SD1 5.41, r 0.84 → 5.41·√2·√0.16 = 3.06036
    (PHQ9, 16, 10, -1.961, True),
    (PHQ9, 14, 9, -1.634, False),
    (PHQ9, 5, 11, 1.961, True),
    # GAD-7: SD1 3.49, r 0.83 → 3.49·√2·√0.17 = 2.03503
    (GAD7, 12, 8, -1.966, True),
    (GAD7, 3, 6, 1.474, False),
    (GAD7, 10, 10, 0.0, False),
])
def test_jacobson_truax_index(instrument: str, first: int, last: int, rci: float, reliable: bool) -> None:
    outcome = measure_outcome(instrument, [first, last])
    assert outcome is not None
    assert outcome.rci == rci
    assert outcome.rci_reliable is reliable
    assert outcome.change == last - first


def test_unpaired_measures_have_no_outcome_and_rates_need_a_denominator() -> None:
    assert measure_outcome(PHQ9, [14]) is None
    assert course_result({}).paired is False
    assert rate(1, 0) is None
    assert rate(1, 3) == 0.3333
