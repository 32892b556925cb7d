"""Alarms (services/shared/alarms.py) and the risk-signal watchdog's matching
(services/api/watchdog.py), without NATS: the watchdog reads the stores the in-memory
pipeline's applications write."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.api.watchdog import RiskWatchdog
from services.care import commands as c
from services.care.application import CommandMeta
from services.shared import alarms
from services.shared.clock import ManualClock
from services.shared.health import Status
from services.shared.settings import Settings
from tests.conftest import CLINICIAN, T0
from tests.support.pipeline import Pipeline

ME = CommandMeta(actor=CLINICIAN)


def gauge(alarm: str, component: str) -> float | None:
    return REGISTRY.get_sample_value("careplan_alarm_active", {"alarm": alarm, "component": component})


def samples(trigger: str) -> float:
    return REGISTRY.get_sample_value("careplan_risk_signal_escalation_seconds_count", {"trigger": trigger}) or 0.0


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "careplan.alarms" and r.levelno == level]


# --------------------------------------------------------------------- the mechanism


def test_an_alarm_logs_once_when_raised_and_once_when_cleared_and_sets_its_gauge(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alarm = alarms.Alarm(alarms.RELAY_NOT_PUBLISHING, "relay:unit")
    assert gauge(alarms.RELAY_NOT_PUBLISHING, "relay:unit") == 0
    record = Status("relay:unit", "waiting for NATS", "degraded", "starting")
    with caplog.at_level(logging.INFO, logger="careplan.alarms"):
        assert alarm.raise_("NATS unreachable")
        assert not alarm.raise_("NATS unreachable")  # still raised: no second line
        assert gauge(alarms.RELAY_NOT_PUBLISHING, "relay:unit") == 1
        shown = alarms.overlay(record)
        assert (shown.status, shown.reason) == ("down", "relay_not_publishing: NATS unreachable")
        assert alarms.overlay(Status("relay:other", "publishing", "ok")).status == "ok"  # another component
        assert alarm.clear()
        assert not alarm.clear()
    assert gauge(alarms.RELAY_NOT_PUBLISHING, "relay:unit") == 0
    assert alarms.overlay(record) == record
    assert lines(caplog, logging.ERROR) == [
        "ALARM relay_not_publishing on relay:unit: NATS unreachable (docs/operations.md, Alarms)"]
    assert len(lines(caplog, logging.INFO)) == 1 and "cleared" in lines(caplog, logging.INFO)[0]


def test_a_degraded_alarm_does_not_hide_a_worse_record() -> None:
    alarm = alarms.Alarm(alarms.CONSUMER_NOT_ADVANCING, "service:unit", status="degraded")
    alarm.raise_("messages wait")
    try:
        down = Status("service:unit", "halted", "down", "halted: a source went backwards")
        assert alarms.overlay(down) == down
        assert alarms.overlay(Status("service:unit", "consuming", "ok")).reason == "consumer_not_advancing: messages wait"
    finally:
        alarm.retire()
    assert not alarms.raised("service:unit")


# --------------------------------------------------------------------- the watchdog's matching


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, alarm_risk_signal_seconds=60)


@pytest.fixture
def watchdog(settings: Settings) -> Iterator[RiskWatchdog]:
    w = RiskWatchdog(settings)
    w.matcher.observe_from = T0  # the pipeline's clock: every escalation is "seen while running"
    try:
        yield w
    finally:
        w.close()


def course_of(p: Pipeline) -> tuple[Any, Any]:
    plan = p.care.handle(c.DraftCarePlan(client_id="client-1", title="Low mood", strategy="short_term_moderate",
                                         therapy_models=["steady_drive"]), ME).aggregate_id
    course = p.care.handle(c.StartCourse(plan_id=plan, modality="interpersonal", planned_sessions=12), ME).aggregate_id
    return plan, course


def submit(p: Pipeline, course: Any, answers: list[int | None], instrument: str = "PHQ-9") -> Any:
    return p.care.handle(c.SubmitQuestionnaire(course_id=course, instrument=instrument, answers=answers,
                                               answered_at=T0), ME)


def test_a_positive_suicide_item_not_escalated_raises_the_alarm_after_the_threshold_and_its_escalation_clears_it(
    settings: Settings, watchdog: RiskWatchdog, caplog: pytest.LogCaptureFixture,
) -> None:
    p = Pipeline(settings, ManualClock(T0), services=("assessment", "care-policies", "scheduling"))
    try:
        _, course = course_of(p)
        submit(p, course, [1] * 8 + [2])  # item 9 above 0
        submit(p, course, [0] * 9)  # no signal
        p.pump()
        before = samples("phq9_suicide_item")
        with caplog.at_level(logging.INFO, logger="careplan.alarms"):
            assert watchdog.read() >= 3  # the submissions and the assessment's decisions
            watchdog.check(T0 + timedelta(seconds=59))
            assert not watchdog.alarm.active
            watchdog.check(T0 + timedelta(seconds=61))
            assert watchdog.alarm.active
            assert watchdog.component() == {
                "status": "down", "reason": "risk_signal_not_escalated: 1 risk signal not escalated within 60 s"}
            assert gauge(alarms.RISK_SIGNAL_NOT_ESCALATED, "risk-signals") == 1
            watchdog.check(T0 + timedelta(seconds=90))  # still raised: no second line
            p.clock.advance(seconds=2)  # type: ignore[attr-defined]
            p.start_consumer("escalation")
            p.pump()
            watchdog.read()
            watchdog.check(T0 + timedelta(seconds=120))
        assert not watchdog.alarm.active
        assert gauge(alarms.RISK_SIGNAL_NOT_ESCALATED, "risk-signals") == 0
        assert watchdog.component()["status"] == "ok"
        assert len(lines(caplog, logging.ERROR)) == 1 and len(lines(caplog, logging.INFO)) == 1
        assert samples("phq9_suicide_item") == before + 1
        watchdog.read()  # nothing new: nothing observed twice
        assert samples("phq9_suicide_item") == before + 1
        assert "client-1" not in caplog.text and str(course) not in caplog.text
    finally:
        p.close()


def test_a_clinicians_crisis_and_a_fail_safe_dead_letter_are_matched_with_their_escalations(
    settings: Settings, watchdog: RiskWatchdog,
) -> None:
    def failing_assessment(name: str, app: Any) -> Any:
        if name == "assessment":
            def fail(inbound: Any) -> Any:
                if inbound.event_name == "questionnaire_submitted":
                    raise ValueError("cannot decide")
                return decide(inbound)
            decide = app.decide
            app.decide = fail
        return app

    p = Pipeline(settings, ManualClock(T0), wrap=failing_assessment)
    try:
        plan, course = course_of(p)
        p.care.handle(c.RaiseCrisis(plan_id=plan, reason="Called the clinic"), ME)
        submit(p, course, [1] * 8 + [2])  # dead-lettered by the assessment: the fail-safe escalates it
        watchdog.read()
        watchdog.check(T0 + timedelta(seconds=61))
        assert watchdog.component()["reason"].endswith("2 risk signals not escalated within 60 s")
        p.pump()
        watchdog.read()
        watchdog.check(T0 + timedelta(seconds=61))
        assert not watchdog.alarm.active, watchdog.matcher.pending(T0 + timedelta(seconds=61), 60)
    finally:
        p.close()


def test_the_watchdog_reads_only_from_where_it_was(settings: Settings, watchdog: RiskWatchdog) -> None:
    p = Pipeline(settings, ManualClock(T0))
    try:
        _, course = course_of(p)
        submit(p, course, [1] * 8 + [2])
        p.pump()
        first = watchdog.read()
        assert first > 0 and watchdog.read() == 0
        stored = sum(app.recorder.max_notification_id() or 0 for app in p.sources.values())
        assert first < stored / 2  # only the classes it matches are decoded (selected by topic)
        assert set(watchdog.positions) >= {"care", "assessment", "escalation"}
        watchdog.check(T0 + timedelta(hours=1))
        assert not watchdog.alarm.active
    finally:
        p.close()


def test_an_escalation_read_before_its_signal_is_matched_after_the_pass(settings: Settings, watchdog: RiskWatchdog) -> None:
    """The escalation store read in one pass, the decision it follows from only in the next."""
    p = Pipeline(settings, ManualClock(T0))
    try:
        _, course = course_of(p)
        submit(p, course, [1] * 8 + [2])
        p.pump()
        order = ("escalation", "care", "assessment")
        watchdog.store_names = order
        watchdog.read()
        watchdog.check(T0 + timedelta(seconds=61))
        assert not watchdog.alarm.active, watchdog.matcher.pending(T0 + timedelta(seconds=61), 60)
    finally:
        p.close()
