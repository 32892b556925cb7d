"""The fault suite, part two: the faults that need the transport (issue 10).

A forged message, the store failing mid-decision, a restored store, two instances on one
durable: each on a real nats-server and on both stores, and each asserting the same
invariant as test_fault_suite: every accepted risk signal ends in an EscalationRaised on
the stream (``escalated``), or was refused at the door.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import nats
import pytest
from eventsourcing.persistence import OperationalError

from services.assessment.service import SUBJECTS as ASSESSMENT_SUBJECTS
from services.assessment.service import AssessmentApplication
from services.care import policies
from services.care.application import CareApplication
from services.shared.errors import StoreBehindError
from services.escalation.service import SUBJECTS as ESCALATION_SUBJECTS
from services.escalation.service import EscalationApplication
from services.operations.recovery import StoreRecovery
from services.shared.bus import EmbeddedNats
from services.shared.runner import RunningService
from services.shared.settings import Settings
from tests.integration.test_assessment_service import start_course, submit, wait_for_messages
from tests.support.bus import InProcessRelay, read_stream, with_streams
from tests.support.pipeline import escalated


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


@pytest.fixture
def settings(backend_settings: Settings, nats_server: EmbeddedNats, tmp_path: Path) -> Settings:
    return backend_settings.model_copy(update={
        "data_dir": tmp_path / "data", "nats_url": nats_server.url, "relay_check_interval": 0.5,
    })


def assessment(settings: Settings, **options: Any) -> RunningService:
    return RunningService(settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS, **options)


def escalation(settings: Settings, app: EscalationApplication | None = None) -> RunningService:
    app = app or EscalationApplication(settings)
    return RunningService(settings, app, ESCALATION_SUBJECTS, tick=app.fire_due_timers, tick_interval=0.1)


def care_policies(settings: Settings) -> RunningService:
    return RunningService(settings, CareApplication(settings), policies.SUBJECTS, name=policies.NAME, with_relay=False)


async def until(condition: Any, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        await asyncio.sleep(0.1)


async def until_escalated(url: str, signal: str, timeout: float = 60) -> list[Any]:
    """The stream, once an EscalationRaised follows from ``signal``."""
    deadline = time.monotonic() + timeout
    while not escalated(messages := await read_stream(url), signal):
        assert time.monotonic() < deadline, f"{signal} was not escalated"
        await asyncio.sleep(0.2)
    return messages


# --------------------------------------------------------------------- 2. forged positions


async def test_a_forged_source_moves_no_position_and_the_next_real_item_9_is_escalated(
    settings: Settings, nats_server: EmbeddedNats
) -> None:
    care = CareApplication(settings)
    try:
        _, course = start_course(care)
        async with InProcessRelay(settings, nats_server.url) as relay, assessment(settings), escalation(settings) as esc:
            await relay.wait_position(2)
            nc = await nats.connect(nats_server.url)
            js = nc.jetstream()
            huge = str(10**15)
            forged_ids = [str(uuid4()), str(uuid4())]
            # a "decision" claiming to come from the care application, on the assessment's subject
            await js.publish(f"care.assessment.v1.assessment_record.{course}.assessment_scored", b"{}", headers={
                "ce-source": "urn:careplan:care", "ce-sequence": huge, "ce-id": forged_ids[0], "ce-subject": course,
                "ce-type": "org.careplan.assessment.v1.assessment_record.assessment_scored"})
            # a submission claiming to come from the assessment service, on the care application's subject
            await js.publish(f"care.clinical.v1.therapy_course.{course}.questionnaire_submitted", b"{}", headers={
                "ce-source": "urn:careplan:assessment", "ce-sequence": huge, "ce-id": forged_ids[1], "ce-subject": course,
                "ce-type": "org.careplan.clinical.v1.therapy_course.questionnaire_submitted"})
            await nc.close()
            real = submit(care, course, "PHQ-9", [0, 0, 1, 0, 0, 1, 0, 0, 2])
            await relay.wait_position(3)
            await until_escalated(nats_server.url, real)
            app: EscalationApplication = esc.app  # type: ignore[assignment]
            positions = await asyncio.to_thread(app.positions, settings.stream_name, "escalation")
        messages = await read_stream(nats_server.url)
    finally:
        care.close()
    assert escalated(messages, real)
    assert all(p < 10**6 for p in positions.sources.values()), positions  # no forged position was recorded
    dead = [json.loads(m.body) for m in messages if m.subject.endswith(".message_dead_lettered")]
    assert sorted(d["failed_event_id"] for d in dead) == sorted(forged_ids)
    assert all(d["error_class"] == "MalformedMessageError" and d["position"] is None for d in dead)


# --------------------------------------------------------------------- 3. the store failing


async def test_the_store_failing_for_five_seconds_mid_decision_delays_the_escalation_and_loses_nothing(
    settings: Settings, nats_server: EmbeddedNats
) -> None:
    care = CareApplication(settings)
    esc_app = EscalationApplication(settings)
    insert, failing_until = esc_app.recorder.insert_events, [0.0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if not failing_until[0]:
            failing_until[0] = time.monotonic() + 5
        if time.monotonic() < failing_until[0]:
            raise OperationalError("database is locked")
        return insert(*args, **kwargs)

    esc_app.recorder.insert_events = flaky  # type: ignore[method-assign]
    try:
        _, course = start_course(care)
        submitted = submit(care, course, "PHQ-9", [1, 1, 1, 1, 1, 1, 1, 1, 3])
        async with InProcessRelay(settings, nats_server.url), assessment(settings), escalation(settings, esc_app) as esc:
            raised = await wait_for_messages(nats_server.url, "care.escalation.v1.crisis.", 2, timeout=60)
            assert esc.consumer.stats.stuck_since is None and esc.consumer.dead_lettered == 0
        messages = await read_stream(nats_server.url)
    finally:
        care.close()
    assert failing_until[0] and time.monotonic() > failing_until[0]
    assert [m.subject.rsplit(".", 1)[1] for m in raised] == ["escalation_raised", "escalation_level_notified"]
    assert escalated(messages, submitted)
    assert not [m for m in messages if m.subject.endswith(".message_dead_lettered")]


# --------------------------------------------------------------------- restored stores


class Backup:
    """A copy of one application's store, taken and put back as an operator's backup would be."""

    def __init__(self, settings: Settings, application: str) -> None:
        self.settings, self.application = settings, application
        if settings.database == "sqlite":
            import sqlite3

            self.copy = settings.data_dir / f"{application}.sqlite.backup"
            with sqlite3.connect(settings.sqlite_path(application)) as live, sqlite3.connect(self.copy) as copy:
                live.backup(copy)  # SQLite's online backup: a consistent copy, what is in the WAL included
        else:
            self.schema = settings.postgres_schema(application)
            self.saved = self.schema + "_backup"
            with _pg(settings) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{self.saved}" CASCADE')
                conn.execute(f'CREATE SCHEMA "{self.saved}"')
                for table in _pg_tables(conn, self.schema, exclude_relay=True):
                    conn.execute(f'CREATE TABLE "{self.saved}"."{table}" AS TABLE "{self.schema}"."{table}"')

    def restore(self) -> None:
        if self.settings.database == "sqlite":
            import sqlite3

            with sqlite3.connect(self.copy) as copy, sqlite3.connect(self.settings.sqlite_path(self.application)) as live:
                copy.backup(live)  # as `.restore` does
            return
        with _pg(self.settings) as conn:
            for table in _pg_tables(conn, self.saved, exclude_relay=True):
                conn.execute(f'TRUNCATE "{self.schema}"."{table}"')
                conn.execute(f'INSERT INTO "{self.schema}"."{table}" SELECT * FROM "{self.saved}"."{table}"')
            # a restored database's sequence is the backup's
            events = f'"{self.schema}"."{self.application}_events"'
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{events}', 'notification_id'), "
                         f"(SELECT COALESCE(MAX(notification_id), 1) FROM {events}))")
            conn.execute(f'DROP SCHEMA "{self.saved}" CASCADE')


def _pg(settings: Settings) -> Any:
    from services.shared.persistence import _admin_connection

    return _admin_connection(settings)


def _pg_tables(conn: Any, schema: str, *, exclude_relay: bool) -> list[str]:
    rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)).fetchall()
    return [r[0] for r in rows if not (exclude_relay and r[0].startswith("relay_"))]


async def test_a_restored_store_halts_its_relay_and_consumers_and_the_recovery_restores_the_flow(
    settings: Settings, nats_server: EmbeddedNats
) -> None:
    care = CareApplication(settings)
    try:
        plan_id, course = start_course(care)
        plan = UUID(plan_id)
        first = submit(care, course, "PHQ-9", [1, 1, 1, 1, 1, 1, 1, 1, 1])
        async with InProcessRelay(settings, nats_server.url), assessment(settings), escalation(settings), \
                care_policies(settings):
            await until(lambda: care.get_plan(plan).open_crises, what="the first crisis on the plan")
            backup = Backup(settings, "care")
            # after the backup: a second crisis, and the care policies' reaction to it, in the care store
            second = submit(care, course, "PHQ-9", [0, 0, 0, 0, 0, 0, 0, 0, 2])
            await until(lambda: len(care.get_plan(plan).open_crises) == 2, what="the second crisis on the plan")
        care.close()
        backup.restore()  # the care store goes back; the relay's position and the stream stay ahead
        care = CareApplication(settings)
        with pytest.raises(StoreBehindError):  # nothing can be written on the restored store
            submit(care, course, "PHQ-9", [3] * 9)
        async with InProcessRelay(settings, nats_server.url) as relay, assessment(settings) as scoring, \
                escalation(settings), care_policies(settings) as reacting:
            await until(lambda: relay.relay.stats.halted is not None, what="the relay to halt")
            await until(lambda: reacting.consumer.stats.halted is not None, what="the care policies to halt")
            before = scoring.consumer.stats.processed + scoring.consumer.stats.skipped
            # the recovery procedure (docs/operations.md): `careplan store recover care`
            nc = await nats.connect(nats_server.url)
            recovery = StoreRecovery(settings, "care", nc.jetstream())
            try:
                diagnosis = await recovery.recover()
            finally:
                recovery.close()
                await nc.close()
            assert diagnosis.lost and not diagnosis.conflicts
            await until(lambda: relay.relay.stats.halted is None, what="the relay to resume")
            await until(lambda: reacting.consumer.stats.halted is None, what="the care policies to resume")
            care.close()
            care = CareApplication(settings)
            third = submit(care, course, "PHQ-9", [1, 1, 1, 1, 1, 1, 1, 1, 3])  # written again once recovered
            await until_escalated(nats_server.url, third)
            assert scoring.consumer.stats.processed + scoring.consumer.stats.skipped > before
        messages = await read_stream(nats_server.url)
    finally:
        care.close()
    for signal in (first, third):
        assert escalated(messages, signal)
    assert second in {json.loads(m.body)["event_id"] for m in messages}  # the lost event was published ...
    reopened = CareApplication(settings)
    try:
        assert second in {str(e.event_id) for e in reopened.history(UUID(course))}  # ... with its original id
        from services.audit.integrity import verify_store

        assert verify_store(settings, "care").ok  # and the hash chain is whole
    finally:
        reopened.close()
    # nothing was decided twice
    scored = [json.loads(m.body)["submission_id"] for m in messages if m.subject.endswith(".assessment_scored")]
    assert len(scored) == len(set(scored)) == 3


# --------------------------------------------------------------------- 6. two instances


async def test_two_instances_on_one_durable_decide_every_message_once(settings: Settings, nats_server: EmbeddedNats,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    care = CareApplication(settings)
    try:
        _, course = start_course(care)
        count = 1000
        submissions = [submit(care, course, "PHQ-9", [1] * 9) for _ in range(count)]
        async with InProcessRelay(settings, nats_server.url) as relay:
            await relay.wait_position(count + 2)
            first = assessment(settings, lease_ttl=3.0)
            second = assessment(settings, lease_ttl=3.0)
            await first.start()
            waiting = asyncio.create_task(second.start())
            await until(lambda: first.consumer.stats.processed >= count // 3, what="the first instance to make progress")
            assert not waiting.done(), "the second instance consumed alongside the first"
            await first.stop()  # the first goes away mid-stream: the second takes over
            await asyncio.wait_for(waiting, 30)
            await wait_for_messages(nats_server.url, "care.assessment.v1.assessment_record.", count + 1, timeout=120)
            await second.stop()
        messages = await read_stream(nats_server.url)
    finally:
        care.close()
    scored = [json.loads(m.body)["causation_id"] for m in messages if m.subject.endswith(".assessment_scored")]
    assert sorted(scored) == sorted(submissions) and len(set(scored)) == count
    assert "another instance" in caplog.text and "waiting to take over" in caplog.text
