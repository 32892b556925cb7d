"""Alarms (docs/operations.md, Alarms) on a real nats-server: each starts (one ERROR line,
``careplan_alarm_active`` 1, readiness names it) and clears (one INFO line, the gauge 0).

Thresholds are the settings' short values (``CAREPLAN_ALARM_*``)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from eventsourcing.persistence import OperationalError
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from services.api.app import Api, create_app
from services.api.auth import TokenRegistry
from services.api.health import Readiness
from services.api.watchdog import CrashLoopAlarms
from services.assessment.service import SUBJECTS as ASSESSMENT_SUBJECTS
from services.assessment.service import AssessmentApplication
from services.care.application import CareApplication
from services.escalation.service import SUBJECTS as ESCALATION_SUBJECTS
from services.escalation.service import EscalationApplication
from services.shared import alarms
from services.shared.bus import EmbeddedNats, apply_streams_at
from services.shared.health import StatusReporter, relay_status
from services.shared.runner import RunningService
from services.shared.settings import Settings
from tests.integration.test_assessment_service import start_course, submit
from tests.support.bus import InProcessRelay, with_streams

ALARM_LOG = "careplan.alarms"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


@pytest.fixture
def settings(backend_settings: Settings, nats_server: EmbeddedNats, tmp_path: Path) -> Settings:
    return backend_settings.model_copy(update={
        "data_dir": tmp_path / "data", "nats_url": nats_server.url, "alarm_check_seconds": 0.2,
        "alarm_risk_signal_seconds": 2.0, "alarm_relay_seconds": 1.0, "alarm_consumer_seconds": 1.0,
        "alarm_stream_check_seconds": 0.5,
        # the API, the watchdog, readiness, a relay and two services in one process: the
        # shared PostgreSQL server's connections are counted
        "postgres_pool_size": 2,
    })


def gauge(alarm: str, component: str) -> float | None:
    return REGISTRY.get_sample_value("careplan_alarm_active", {"alarm": alarm, "component": component})


def alarm_lines(caplog: pytest.LogCaptureFixture, level: int, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == ALARM_LOG and r.levelno == level and f" {name} on " in r.getMessage()]


async def until(condition: Any, timeout: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await condition()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def component(readiness: Readiness, name: str) -> dict[str, str]:
    readiness._cached = None
    return (await readiness.report())["components"][name]


class ReportingRelay(InProcessRelay):
    """The care relay in-process with its status record, as its process puts it."""

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        reporter = StatusReporter(self.relay.nats_url, [lambda: relay_status("relay:care", self.relay.stats)],
                                  interval=0.3)
        self.reporting = asyncio.create_task(reporter.run(self.stop))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await super().__aexit__(*exc)
        await self.reporting


def assessment(settings: Settings) -> RunningService:
    return RunningService(settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS)


def escalation(settings: Settings) -> RunningService:
    app = EscalationApplication(settings)
    return RunningService(settings, app, ESCALATION_SUBJECTS, tick=app.fire_due_timers, tick_interval=0.1)


# --------------------------------------------------------------------- risk_signal_not_escalated


async def test_a_risk_signal_not_escalated_raises_the_alarm_and_the_escalation_service_clears_it(
    settings: Settings, caplog: pytest.LogCaptureFixture, tmp_path: Path,
) -> None:
    caplog.set_level(logging.INFO, logger=ALARM_LOG)
    count = "careplan_risk_signal_escalation_seconds_count"
    before = REGISTRY.get_sample_value(count, {"trigger": "phq9_suicide_item"}) or 0.0
    care = CareApplication(settings)
    readiness = Readiness(settings)
    api = Api(care, TokenRegistry.load(tmp_path / "tokens.json"))
    api.readiness = readiness
    try:
        _, course = start_course(care)
        submit(care, course, "PHQ-9", [0, 0, 1, 0, 0, 1, 0, 0, 2])  # item 9 above 0
        submit(care, course, "PHQ-9", [0] * 9)  # no risk signal
        with TestClient(create_app(api)) as client:  # its lifespan runs the watchdog
            async def readyz(status: str) -> dict[str, Any] | None:
                answer = await asyncio.to_thread(client.get, "/readyz")
                body = answer.json()
                return body if body["components"]["risk-signals"]["status"] == status else None

            async with InProcessRelay(settings, settings.nats_url or ""), assessment(settings):
                # the escalation service is not running: the signal waits past the threshold
                down = await until(lambda: readyz("down"), 30, "risk-signals down")
                assert down["components"]["risk-signals"]["reason"] == (
                    "risk_signal_not_escalated: 1 risk signal not escalated within 2 s")
                assert down["status"] == "down"
                assert gauge(alarms.RISK_SIGNAL_NOT_ESCALATED, "risk-signals") == 1
                async with escalation(settings):
                    ok = await until(lambda: readyz("ok"), 60, "risk-signals ok once escalated")
            assert ok["components"]["risk-signals"]["reason"] == "every risk signal escalated in time"
            assert gauge(alarms.RISK_SIGNAL_NOT_ESCALATED, "risk-signals") == 0
            await asyncio.sleep(0.6)  # a few more passes: nothing is observed twice
    finally:
        readiness.close()
        care.close()
    assert len(alarm_lines(caplog, logging.ERROR, alarms.RISK_SIGNAL_NOT_ESCALATED)) == 1
    assert len(alarm_lines(caplog, logging.INFO, alarms.RISK_SIGNAL_NOT_ESCALATED)) == 1
    after = REGISTRY.get_sample_value(count, {"trigger": "phq9_suicide_item"}) or 0.0
    assert after == before + 1
    assert "client-5" not in caplog.text and course not in caplog.text


# --------------------------------------------------------------------- relay_not_publishing


class BreakableMapper:
    """The store's mapper, failing to read events while ``broken`` (a wrong cipher key, a
    class that no longer loads), as a deployment mistake would."""

    def __init__(self, mapper: Any) -> None:
        self.mapper, self.broken = mapper, False

    def to_public_json(self, notification: Any) -> Any:
        if self.broken:
            msg = "MAC check failed"
            raise ValueError(msg)
        return self.mapper.to_public_json(notification)

    def public_json(self, *args: Any) -> Any:  # the relay's read of a log row (the usual event)
        if self.broken:
            msg = "MAC check failed"
            raise ValueError(msg)
        return self.mapper.public_json(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.mapper, name)


async def test_an_event_the_relay_cannot_read_raises_relay_not_publishing_never_as_nats_and_clears_when_mended(
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ALARM_LOG)
    care = CareApplication(settings)
    readiness = Readiness(settings)
    try:
        _, course = start_course(care)
        async with ReportingRelay(settings, settings.nats_url or "") as relay:
            mapper = relay.relay.mapper = BreakableMapper(relay.relay.mapper)  # type: ignore[assignment]
            await relay.wait_position(2)
            mapper.broken = True
            submit(care, course, "GAD-7", [0] * 7)

            async def down() -> dict[str, str] | None:
                found = await component(readiness, "relay:care")
                return found if found["reason"].startswith("relay_not_publishing") else None

            found = await until(down, 30, "relay:care names the alarm")
            assert found == {"status": "down", "reason": "relay_not_publishing: an event in the store cannot be read "
                                                         "(cipher key or event class)"}
            assert relay.relay.stats.state.startswith("failing")
            assert gauge(alarms.RELAY_NOT_PUBLISHING, "relay:care") == 1
            mapper.broken = False
            await relay.wait_position(3)
            await until(lambda: asyncio.sleep(0, not relay.relay.not_publishing.active), 10, "cleared")
            assert gauge(alarms.RELAY_NOT_PUBLISHING, "relay:care") == 0
            await until(lambda: _is_ok(readiness, "relay:care"), 15, "relay:care ok again")
    finally:
        readiness.close()
        care.close()
    assert len(alarm_lines(caplog, logging.ERROR, alarms.RELAY_NOT_PUBLISHING)) == 1
    assert "NATS unreachable" not in "".join(alarm_lines(caplog, logging.ERROR, alarms.RELAY_NOT_PUBLISHING))
    assert len(alarm_lines(caplog, logging.INFO, alarms.RELAY_NOT_PUBLISHING)) == 1


class BreakableRecorder:
    """The store's recorder, unreachable while ``broken`` (the database down)."""

    def __init__(self, recorder: Any) -> None:
        self.recorder, self.broken = recorder, False

    def select_notifications(self, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            msg = "connection refused"
            raise OperationalError(msg)
        return self.recorder.select_notifications(*args, **kwargs)

    def select_log(self, *args: Any, **kwargs: Any) -> Any:  # the relay's lean read of the log
        if self.broken:
            msg = "connection refused"
            raise OperationalError(msg)
        return self.recorder.select_log(*args, **kwargs)

    def max_notification_id(self) -> Any:
        if self.broken:
            msg = "connection refused"
            raise OperationalError(msg)
        return self.recorder.max_notification_id()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recorder, name)


async def test_a_store_the_relay_cannot_reach_is_named_as_such_not_as_nats(
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ALARM_LOG)
    care = CareApplication(settings)
    try:
        _, course = start_course(care)
        async with InProcessRelay(settings, settings.nats_url or "") as relay:
            await relay.wait_position(2)
            recorder = relay.relay.recorder = BreakableRecorder(relay.relay.recorder)  # type: ignore[assignment]
            recorder.broken = True  # the relay's connection to its store is gone
            submit(care, course, "GAD-7", [0] * 7)
            await until(lambda: asyncio.sleep(0, relay.relay.not_publishing.active), 30, "the alarm")
            assert relay.relay.stats.state == "waiting for the store"
            assert relay.relay.not_publishing.reason == "the store cannot be reached"
            recorder.broken = False
            await relay.wait_position(3)
            await until(lambda: asyncio.sleep(0, not relay.relay.not_publishing.active), 10, "cleared")
    finally:
        care.close()
    assert alarm_lines(caplog, logging.ERROR, alarms.RELAY_NOT_PUBLISHING) == [
        "ALARM relay_not_publishing on relay:care: the store cannot be reached (docs/operations.md, Alarms)"]
    assert len(alarm_lines(caplog, logging.INFO, alarms.RELAY_NOT_PUBLISHING)) == 1


async def _is_ok(readiness: Readiness, name: str) -> bool:
    return (await component(readiness, name))["status"] == "ok"


async def test_nats_away_with_events_waiting_raises_relay_not_publishing_naming_nats(
    settings: Settings, nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ALARM_LOG)
    # the relay notices a lost server within its ack timeouts (5 s; a chain head's publish
    # waits as long), which the threshold exceeds (30 s by default)
    settings = settings.model_copy(update={"alarm_relay_seconds": 7.0})
    care = CareApplication(settings)
    try:
        _, course = start_course(care)
        async with InProcessRelay(settings, nats_server.url) as relay:
            await relay.wait_position(2)
            await asyncio.to_thread(nats_server.stop)
            submit(care, course, "GAD-7", [0] * 7)
            await until(lambda: asyncio.sleep(0, relay.relay.not_publishing.active), 30, "the alarm")
            assert relay.relay.not_publishing.reason == "NATS unreachable"
            assert gauge(alarms.RELAY_NOT_PUBLISHING, "relay:care") == 1
            await asyncio.to_thread(nats_server.start)
            await relay.wait_position(3)
            await until(lambda: asyncio.sleep(0, not relay.relay.not_publishing.active), 10, "cleared")
    finally:
        care.close()
    assert alarm_lines(caplog, logging.ERROR, alarms.RELAY_NOT_PUBLISHING) == [
        "ALARM relay_not_publishing on relay:care: NATS unreachable (docs/operations.md, Alarms)"]
    assert len(alarm_lines(caplog, logging.INFO, alarms.RELAY_NOT_PUBLISHING)) == 1


# --------------------------------------------------------------------- consumer_not_advancing


async def test_a_consumer_that_cannot_record_raises_consumer_not_advancing_and_clears_when_it_can(
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ALARM_LOG)
    care = CareApplication(settings)
    readiness = Readiness(settings)
    service = assessment(settings)
    insert, failing = service.app.recorder.insert_events, [True]

    def flaky_insert(*args: Any, **kwargs: Any) -> Any:
        if failing[0]:
            msg = "the store is unreachable"
            raise OperationalError(msg)
        return insert(*args, **kwargs)

    service.app.recorder.insert_events = flaky_insert
    try:
        start_course(care)
        async with InProcessRelay(settings, settings.nats_url or ""), service:
            async def down() -> dict[str, str] | None:
                found = await component(readiness, "service:assessment")
                return found if found["reason"].startswith("consumer_not_advancing") else None

            found = await until(down, 30, "service:assessment names the alarm")
            assert found == {"status": "down",
                             "reason": "consumer_not_advancing: stuck on one message: the store or NATS fails"}
            assert gauge(alarms.CONSUMER_NOT_ADVANCING, "service:assessment") == 1
            failing[0] = False
            await until(lambda: asyncio.sleep(0, not service.consumer.not_advancing.active), 30, "cleared")
            assert gauge(alarms.CONSUMER_NOT_ADVANCING, "service:assessment") == 0
            await until(lambda: _is_ok(readiness, "service:assessment"), 15, "service:assessment ok again")
            assert service.consumer.stats.processed >= 1
    finally:
        readiness.close()
        care.close()
    assert len(alarm_lines(caplog, logging.ERROR, alarms.CONSUMER_NOT_ADVANCING)) == 1
    assert len(alarm_lines(caplog, logging.INFO, alarms.CONSUMER_NOT_ADVANCING)) == 1


# --------------------------------------------------------------------- stream_drift


async def test_a_stream_changed_under_a_running_relay_raises_stream_drift_until_it_is_applied_again(
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=ALARM_LOG)
    url = settings.nats_url or ""
    readiness = Readiness(settings)
    try:
        async with ReportingRelay(settings, url) as relay:
            await until(lambda: asyncio.sleep(0, relay.relay.stats.state == "publishing"), 30, "publishing")
            await apply_streams_at(url, settings.model_copy(update={"stream_max_age_days": 1}))

            async def down() -> dict[str, str] | None:
                found = await component(readiness, "relay:care")
                return found if found["reason"].startswith("stream_drift") else None

            found = await until(down, 30, "relay:care names stream_drift")
            assert found == {"status": "down",
                             "reason": "stream_drift: the streams differ from their configuration: CARE max_age"}
            assert gauge(alarms.STREAM_DRIFT, "relay:care") == 1
            await apply_streams_at(url, settings)  # `careplan nats streams apply` with the right settings
            await until(lambda: asyncio.sleep(0, not relay.relay.drift.active), 15, "cleared")
            assert gauge(alarms.STREAM_DRIFT, "relay:care") == 0
            await until(lambda: _is_ok(readiness, "relay:care"), 15, "relay:care ok again")
    finally:
        readiness.close()
    assert len(alarm_lines(caplog, logging.ERROR, alarms.STREAM_DRIFT)) == 1
    assert len(alarm_lines(caplog, logging.INFO, alarms.STREAM_DRIFT)) == 1


# --------------------------------------------------------------------- crash_looping


def test_a_crash_looping_child_is_alarmed_once_by_the_supervisor_and_its_gauge_is_the_apis(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from services.system import Child, System

    caplog.set_level(logging.INFO, logger=ALARM_LOG)
    supervisor = tmp_path / "supervisor.json"
    settings = Settings(data_dir=tmp_path / "data", supervisor_file=supervisor)
    child = Child("service:scheduling", [sys.executable, "-c", "pass"], dict(os.environ), tmp_path / "ready")
    system = System(settings, children=[child], supervisor_file=supervisor)
    gauges = CrashLoopAlarms(settings)
    now = time.monotonic()
    child.restarted_at = [now - 3, now - 2, now - 1]
    system._crash_looping()
    system._crash_looping()
    system.write_supervisor_file()
    gauges.refresh()
    assert json.loads(supervisor.read_text())["children"]["service:scheduling"]["state"] == "crash-looping"
    assert gauge(alarms.CRASH_LOOPING, "service:scheduling") == 1
    assert gauge(alarms.CRASH_LOOPING, "api") == 0
    readiness = Readiness(settings)
    try:
        body = asyncio.run(readiness.report())
    finally:
        readiness.close()
    assert body["components"]["service:scheduling"] == {"status": "down", "reason": "crash-looping (0 restarts)"}

    class Running:
        def poll(self) -> None:
            return None

    child.restarted_at, child.process = [], Running()  # type: ignore[assignment]
    system._crash_looping()
    system.write_supervisor_file()
    gauges.refresh()
    assert gauge(alarms.CRASH_LOOPING, "service:scheduling") == 0
    assert alarm_lines(caplog, logging.ERROR, alarms.CRASH_LOOPING) == [
        "ALARM crash_looping on service:scheduling: restarted 3 times within 60 s (docs/operations.md, Alarms)"]
    assert len(alarm_lines(caplog, logging.INFO, alarms.CRASH_LOOPING)) == 1
