"""Property: whatever a person or system sends along a path that carries a risk signal —
empty, at a limit, past it, huge, unicode, NULs — the API refuses it at the door (4xx,
nothing recorded), or it is decided and a risk signal in it ends in an EscalationRaised.
Never a 5xx, never a dead letter, never silence. Through the real services (the
in-memory pipeline) on SQLite; test_fault_suite runs the edges on both stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.shared.clock import ManualClock
from services.shared.settings import Settings
from tests.conftest import T0
from tests.integration.test_fault_suite import active_plan, activate, api_for
from tests.support.pipeline import Pipeline, escalated

PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.function_scoped_fixture])
LENGTHS = [0, 1, 199, 200, 201, 3970, 3999, 4000, 4001, 20_000]
PIECES = st.sampled_from(["a", " ", "ü", "—", "\u00a0", "\x00", "😀", "\u202e", "\n", "Disclosed a plan. "])
TEXTS = st.builds(lambda piece, length: (piece * (length + 1))[:length], PIECES, st.sampled_from(LENGTHS))
ANSWER = st.one_of(st.none(), st.integers(-2, 4), st.sampled_from([5, 99, 100, -1, 2**31, 2**63, 10**60, 10**3999]))
ANSWERS = st.one_of(
    st.lists(ANSWER, min_size=9, max_size=9), st.lists(ANSWER, min_size=6, max_size=7),
    st.lists(ANSWER, max_size=51), st.just([]),
)
INSTRUMENTS = st.one_of(st.sampled_from(["PHQ-9", "GAD-7", "C-SSRS-screener"]), TEXTS)


@pytest.fixture
def system(tmp_path: Path) -> Iterator[tuple[Pipeline, Any, dict[str, dict[str, str]]]]:
    pipeline = Pipeline(Settings(data_dir=tmp_path / "data"), ManualClock(T0))
    api, who = api_for(pipeline, tmp_path)
    try:
        yield pipeline, api, who
    finally:
        pipeline.close()


def carries_a_risk_signal(instrument: str, answers: list[Any]) -> bool:
    """The domain's rule, read independently: PHQ-9 item 9 above 0; a C-SSRS yes to intent or
    plan, or behaviour in the past 3 months — whether or not the rest can be scored."""
    def at(i: int) -> int:
        value = answers[i] if len(answers) > i else None
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    if instrument == "PHQ-9":
        return at(8) > 0
    if instrument == "C-SSRS-screener":
        return at(3) >= 1 or at(4) >= 1 or at(5) >= 2
    return False


def settled(pipeline: Pipeline, answer: Any, aggregate_id: str, version: int) -> list[str]:
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert answer.headers["content-type"] == "application/problem+json"
        assert pipeline.care.get_aggregate(aggregate_id).version == version, "refused, yet something was recorded"
        return []
    pipeline.pump()
    assert not list(pipeline.events(".message_dead_lettered")), "a decision on the safety path failed"
    return answer.json()["event_ids"]


@PROPERTY
@given(reason=TEXTS)
def test_a_clinician_crisis_is_escalated_or_refused(system: Any, reason: str) -> None:
    pipeline, api, who = system
    plan, _ = active_plan(pipeline)
    activate(pipeline, plan)
    version = pipeline.care.get_plan(plan).version
    answer = api.post(f"/plans/{plan}/raise-crisis", json={"reason": reason}, headers=who["clinician"])
    events = settled(pipeline, answer, plan, version)
    if events:
        assert escalated(pipeline.stream, events[0])
        assert pipeline.care.get_plan(plan).open_crises, "the care policies did not act on the crisis"


@PROPERTY
@given(instrument=INSTRUMENTS, answers=ANSWERS)
def test_a_questionnaire_with_a_risk_signal_is_escalated_or_refused(system: Any, instrument: str, answers: list[Any]) -> None:
    pipeline, api, who = system
    _, course = active_plan(pipeline)
    version = pipeline.care.get_course(course).version
    try:
        body: Any = {"instrument": instrument, "answers": answers, "answered_at": T0.isoformat()}
        answer = api.post(f"/courses/{course}/submit-questionnaire", json=body, headers=who["clinician"])
    except ValueError:  # a 4,000-digit number cannot even be written as JSON by the client
        return
    events = settled(pipeline, answer, course, version)
    if events and carries_a_risk_signal(instrument, answers):
        assert escalated(pipeline.stream, events[0])
