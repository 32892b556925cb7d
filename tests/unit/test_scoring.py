"""Scoring against published cases: every band edge, prorating, rejection, change.

Sources: PHQ-9 bands (Kroenke, Spitzer & Williams 2001); PHQ-9 prorating for one or two
missing items (NHS Data Dictionary); GAD-7 bands 5/10/15 (Spitzer et al. 2006); C-SSRS
screener triage (Columbia); response, remission, reliable change 6/4 points and caseness
(NHS Talking Therapies); Jacobson–Truax RCI, reliable when |RCI| > 1.96.
"""

from __future__ import annotations

import pytest

from domain.assessment import Rejection, Score, score_submission
from domain.assessment.change import against_baseline
from domain.assessment.results import Severity, SuicideRisk


def answers_totalling(total: int, items: int) -> list[int | None]:
    out = []
    for _ in range(items):
        out.append(min(3, total))
        total -= out[-1]
    assert total == 0
    return list(reversed(out))  # keep high values away from PHQ-9 item 9 where possible


PHQ9_BANDS = [
    (0, Severity.MINIMAL), (4, Severity.MINIMAL), (5, Severity.MILD), (9, Severity.MILD),
    (10, Severity.MODERATE), (14, Severity.MODERATE), (15, Severity.MODERATELY_SEVERE),
    (19, Severity.MODERATELY_SEVERE), (20, Severity.SEVERE), (27, Severity.SEVERE),
]


@pytest.mark.parametrize(("total", "band"), PHQ9_BANDS)
def test_phq9_band_edges(total: int, band: Severity) -> None:
    answers = [0] * 9
    remaining = total
    for i in range(8):  # fill items 1-8 first; item 9 only when needed
        answers[i] = min(3, remaining)
        remaining -= answers[i]
    answers[8] = remaining
    result = score_submission("PHQ-9", answers)
    assert isinstance(result, Score)
    assert (result.total, result.severity, result.prorated) == (total, band, False)
    assert result.suicide_item_positive is (answers[8] > 0)


@pytest.mark.parametrize(
    ("answers", "total"),
    [
        ([3, 3, 3, 3, 3, 3, 3, 3, None], 27),  # one missing: mean 3 × 9
        ([1, 1, 1, 1, 1, 1, 1, 0, None], 8),  # 7/8 × 9 = 7.875 → 8
        ([1, 1, 1, 1, 0, 0, 0, 0, None], 5),  # 4/8 × 9 = 4.5 → 5 (half up, not to even)
        ([1, 2, 1, 2, 1, 2, 1, None, None], 13),  # two missing: 10/7 × 9 = 12.86 → 13
        ([None, 0, 0, 0, 0, 0, 0, 0, None], 0),
    ],
)
def test_phq9_prorates_one_or_two_missing_items(answers: list[int | None], total: int) -> None:
    result = score_submission("PHQ-9", answers)
    assert isinstance(result, Score)
    assert (result.total, result.prorated, result.answered_items) == (total, True, 9 - answers.count(None))


def test_phq9_item9_above_zero_is_flagged_whatever_the_total() -> None:
    result = score_submission("PHQ-9", [0, 0, 0, 0, 0, 0, 0, 0, 1])
    assert isinstance(result, Score) and result.total == 1 and result.severity is Severity.MINIMAL
    assert result.suicide_item_positive


@pytest.mark.parametrize(
    ("instrument", "answers", "reason", "risk_kept"),
    [
        ("PHQ-9", [1, 1, 1, 1, 1, 1, None, None, None], "3 of 9 items unanswered", False),
        ("PHQ-9", [1, 1, 1, 1, 1, None, None, None, 2], "3 of 9 items unanswered", True),  # fail-safe signal
        ("PHQ-9", [0] * 8, "9 items; 8 were given", False),
        ("PHQ-9", [0] * 8 + [3, 0], "9 items; 10 were given", True),
        ("PHQ-9", [0, 0, 4, 0, 0, 0, 0, 0, 1], "Item 3 is 4; it is scored 0 to 3", True),
        ("PHQ-9", [0, 0, -1, 0, 0, 0, 0, 0, 0], "Item 3 is -1", False),
        ("PHQ-9", [0, 0, True, 0, 0, 0, 0, 0, 0], "whole numbers", False),
        ("GAD-7", [1, 1, 1, 1, 1, 1, None], "GAD-7 is scored only when complete", False),
        ("GAD-7", [1, 1, 1, 1, 1, 1], "7 items; 6 were given", False),
        ("GAD-7", [1, 1, 1, 1, 1, 1, 9], "Item 7 is 9", False),
        ("BDI-II", [1, 2, 3], "Unknown instrument 'BDI-II'", False),
        ("C-SSRS-screener", [1, 1, 1, 1, 0], "6 items; 5 were given", True),
        ("C-SSRS-screener", [1, 0, 1, 0, 0, 0], "asked only when item 2 is yes", False),
        ("C-SSRS-screener", [1, 1, None, None, None, 0], "must be answered", False),
        ("C-SSRS-screener", [1, 1, 1, 1, 1, 3], "Item 6 is 3; it is scored 0 to 2", True),
        ("C-SSRS-screener", [1, 0, None, 1, None, 0], "asked only when item 2 is yes", True),
    ],
)
def test_rejections_say_why_and_keep_the_risk_signal(
    instrument: str, answers: list[int | None], reason: str, risk_kept: bool
) -> None:
    result = score_submission(instrument, answers)
    assert isinstance(result, Rejection)
    assert reason in result.reason
    assert result.suicide_item_positive is risk_kept


@pytest.mark.parametrize(
    ("total", "band"),
    [(0, Severity.MINIMAL), (4, Severity.MINIMAL), (5, Severity.MILD), (9, Severity.MILD), (10, Severity.MODERATE),
     (14, Severity.MODERATE), (15, Severity.SEVERE), (21, Severity.SEVERE)],
)
def test_gad7_band_edges(total: int, band: Severity) -> None:
    result = score_submission("GAD-7", answers_totalling(total, 7))
    assert isinstance(result, Score) and (result.total, result.severity) == (total, band)


@pytest.mark.parametrize(
    ("answers", "risk"),
    [
        ([0, 0, None, None, None, 0], SuicideRisk.NONE),
        ([1, 0, None, None, None, 0], SuicideRisk.LOW),
        ([0, 1, 0, 0, 0, 0], SuicideRisk.LOW),
        ([1, 1, 1, 0, 0, 0], SuicideRisk.MODERATE),
        ([0, 0, None, None, None, 1], SuicideRisk.MODERATE),  # lifetime behaviour, not in 3 months
        ([1, 1, 1, 1, 0, 0], SuicideRisk.HIGH),  # intent without specific plan
        ([1, 1, 1, 0, 1, 0], SuicideRisk.HIGH),  # plan with intent
        ([0, 0, None, None, None, 2], SuicideRisk.HIGH),  # behaviour within 3 months
    ],
)
def test_cssrs_screener_triage(answers: list[int | None], risk: SuicideRisk) -> None:
    result = score_submission("C-SSRS-screener", answers)
    assert isinstance(result, Score) and result.suicide_risk is risk
    assert result.suicide_item_positive is (risk is not SuicideRisk.NONE)


@pytest.mark.parametrize(
    ("instrument", "baseline", "current", "expected"),
    [
        ("PHQ-9", 20, 10, {"response": True, "reliable_improvement": True, "caseness": True, "remission": False, "rci_reliable": True}),
        ("PHQ-9", 12, 7, {"response": False, "reliable_improvement": False, "caseness": False, "remission": False, "rci_reliable": False}),
        ("PHQ-9", 10, 4, {"response": True, "reliable_improvement": True, "caseness": False, "remission": True, "rci_reliable": True}),
        ("PHQ-9", 10, 9, {"response": False, "reliable_improvement": False, "caseness": False, "remission": False}),
        ("PHQ-9", 5, 11, {"reliable_deterioration": True, "caseness": True, "rci_reliable": True}),
        ("PHQ-9", 5, 10, {"reliable_deterioration": False, "caseness": True, "rci_reliable": False}),
        ("PHQ-9", 0, 0, {"response": False, "remission": True}),
        ("GAD-7", 15, 11, {"reliable_improvement": True, "caseness": True, "remission": None, "rci_reliable": True}),
        ("GAD-7", 15, 12, {"reliable_improvement": False, "rci_reliable": False}),
        ("GAD-7", 8, 7, {"caseness": False}),
        ("GAD-7", 6, 10, {"reliable_deterioration": True, "caseness": True}),
    ],
)
def test_change_against_the_first_score(instrument: str, baseline: int, current: int, expected: dict[str, object]) -> None:
    change = against_baseline(instrument, baseline, current)
    assert change.change == current - baseline
    for name, value in expected.items():
        assert getattr(change, name) == value, name


def test_rci_criterion_agrees_with_the_published_reliable_change_thresholds() -> None:
    for instrument, threshold in (("PHQ-9", 6), ("GAD-7", 4)):
        assert against_baseline(instrument, 20, 20 - threshold).rci_reliable
        assert not against_baseline(instrument, 20, 20 - threshold + 1).rci_reliable
