"""The relay against a real nats-server (started here, on free ports) and both stores.

Every stored event arrives once in the stream, in commit order, with its CloudEvents
headers and a body that validates against its contract; a relay killed with SIGKILL at
random points, or a NATS server stopped mid-run, loses nothing and doubles nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import threading
import time
from datetime import datetime
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import jsonschema
import pytest

from contracts.generate import CONTRACTS_DIR, SCHEMA_BASE_URI
from contracts.subjects import ce_type, subject_for
from domain.catalogues.care import CopingSkill
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.shared.bus import EmbeddedNats
from services.shared.settings import Settings
from tests.conftest import CLINICIAN
from tests.support.bus import (
    InProcessRelay,
    StreamMessage,
    TrackedPosition,
    read_stream,
    start_relay_process,
    with_streams,
)
from tests.support.story import every_event_story

META = CommandMeta(actor=CLINICIAN)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = with_streams(EmbeddedNats(store_dir=tmp_path / "nats").start())
    try:
        yield server
    finally:
        server.stop()


def assert_exactly_once_in_commit_order(messages: list[StreamMessage], app: CareApplication) -> None:
    notifications = app.recorder.select_notifications(start=1, limit=1_000_000)
    expected = [n.id for n in notifications]
    got = [int(m.headers["ce-sequence"]) for m in messages]
    assert len(got) == len(set(got)), "a notification reached the stream twice"
    assert got == expected, "stream order differs from commit order, or a notification is missing"
    assert [m.headers["Nats-Msg-Id"] for m in messages] == [f"care:{i}" for i in expected]
    previous = [int(m.headers["ce-previoussequence"]) for m in messages]
    assert previous == [0, *expected[:-1]]


def write_plans(app: CareApplication, plans: int) -> list[UUID]:
    ids = []
    for i in range(plans):
        plan_id = app.handle(
            c.DraftCarePlan(client_id=f"client-{i}", title="Load", strategy="short_term_moderate", therapy_models=["steady_drive"]),
            META,
        ).aggregate_id
        app.handle(c.TargetCopingSkill(plan_id=plan_id, skill=CopingSkill.STRESS_MANAGEMENT), META)
        ids.append(plan_id)
    return ids


def write_load(app: CareApplication, plan_ids: list[UUID], events: int) -> None:
    for i in range(events):
        app.handle(
            c.RecordSkillProgress(plan_id=plan_ids[i % len(plan_ids)], skill=CopingSkill.STRESS_MANAGEMENT, note=f"practice {i}"),
            META,
        )


def test_the_relays_read_of_the_log_is_the_librarys(backend_settings: Settings) -> None:
    """The relay reads the log as plain rows (``select_log``): from any position, the same events,
    positions, versions, topics and stored bytes as ``select_notifications``, the aggregate id as
    ``str(UUID)`` writes it (the subject and ``ce-subject`` are made from it)."""
    from services.shared.persistence import OutboxStores

    app = CareApplication(backend_settings)
    try:
        write_load(app, write_plans(app, 3), 7)
        end = app.recorder.max_notification_id()
        stores = OutboxStores(backend_settings, "care")
        try:
            for start, limit in ((1, 1000), (1, 1), (4, 5), (end, 10), (end + 1, 10)):
                expected = [(n.id, str(n.originator_id), n.originator_version, n.topic, bytes(n.state))
                            for n in stores.recorder.select_notifications(start=start, limit=limit)]
                rows = stores.recorder.select_log(start, limit)
                assert [(p, a, v, t, bytes(s)) for p, a, v, t, s in rows] == expected
                assert all(type(p) is int and type(a) is str and type(v) is int and type(s) is bytes for p, a, v, _, s in rows)
            assert len(stores.recorder.select_log(1, 1000)) == end == 13
        finally:
            stores.close()
    finally:
        app.close()


async def test_every_stored_event_arrives_once_in_commit_order_with_a_valid_cloudevent(
    backend_settings: Settings, nats_server: EmbeddedNats
) -> None:
    app = CareApplication(backend_settings)
    try:
        every_event_story(app)
        last = app.recorder.max_notification_id()
        async with InProcessRelay(backend_settings, nats_server.url) as relay:
            await relay.wait_position(last)
        messages = await read_stream(nats_server.url)
        assert_exactly_once_in_commit_order(messages, app)
        versions: dict[str, int] = {}
        for message in messages:
            event = app.mapper.to_domain_event(app.recorder.select_notifications(start=int(message.headers["ce-sequence"]), limit=1)[0])
            body = json.loads(message.body)
            h = message.headers
            assert h["ce-specversion"] == "1.0"
            assert h["ce-source"] == "urn:careplan:care"
            assert h["ce-id"] == body["event_id"] == str(event.event_id)
            assert h["ce-type"] == ce_type(type(event))
            assert h["ce-subject"] == body["originator_id"]
            trace_id, span_id = UUID(body["correlation_id"]).hex, UUID(body["event_id"]).hex[:16]
            assert h["traceparent"] == f"00-{trace_id}-{span_id}-01"
            assert datetime.fromisoformat(h["ce-time"]) == event.timestamp
            assert message.subject == subject_for(type(event), event.originator_id)
            schema_file = h["ce-dataschema"].removeprefix(SCHEMA_BASE_URI + "/")
            schema = json.loads((CONTRACTS_DIR / schema_file).read_text())
            jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(body)
            assert versions.get(h["ce-subject"], 0) + 1 == body["originator_version"], "per-aggregate order broken"
            versions[h["ce-subject"]] = body["originator_version"]
        assert {m.subject.split(".")[3] for m in messages} == {"care_plan", "therapy_course", "inventory"}
    finally:
        app.close()


async def test_a_relay_that_lost_its_position_republishes_and_the_stream_drops_the_replay(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    app = CareApplication(settings)
    try:
        plan_ids = write_plans(app, 3)
        write_load(app, plan_ids, 200)
        async with InProcessRelay(settings, nats_server.url) as relay:
            await relay.wait_position(206)
        # As if the relay had died after publishing everything but before recording any of it.
        (settings.data_dir / "relay-care.sqlite").unlink()
        write_load(app, plan_ids, 50)
        async with InProcessRelay(settings, nats_server.url) as relay:
            await relay.wait_position(256)
            assert relay.relay.stats.duplicates == 206
        assert_exactly_once_in_commit_order(await read_stream(nats_server.url), app)
    finally:
        app.close()


async def test_relay_killed_at_random_points_under_load_loses_and_doubles_nothing(
    backend_settings: Settings, nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    events = 5000
    app = CareApplication(backend_settings)
    rng = random.Random(20261124)
    log = tmp_path / "relay.log"
    tracked_position = TrackedPosition(backend_settings)
    try:
        plan_ids = write_plans(app, 20)
        writer = threading.Thread(target=write_load, args=(app, plan_ids, events))
        writer.start()
        kills_while_publishing = 0
        relay = start_relay_process(backend_settings, nats_server.url, log)
        while writer.is_alive() or kills_while_publishing < 3:
            # Kill only once this incarnation has made progress, at a random moment after.
            seen = tracked_position()
            deadline = time.monotonic() + 60
            while tracked_position() == seen and seen < app.recorder.max_notification_id():
                assert relay.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, "relay made no progress"
                time.sleep(0.02)
            time.sleep(rng.uniform(0, 0.3))
            relay.send_signal(signal.SIGKILL)
            relay.wait()
            kills_while_publishing += 1
            ready = tmp_path / f"relay-{kills_while_publishing}.ready"
            relay = start_relay_process(backend_settings, nats_server.url, log, ready)
        writer.join()
        last = app.recorder.max_notification_id()
        deadline = time.monotonic() + 90
        while tracked_position() < last:
            assert relay.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "relay did not catch up"
            time.sleep(0.1)
        while not ready.exists():  # a clean stop is asked of a relay that is up, not one still importing
            assert relay.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
        relay.terminate()
        assert relay.wait(timeout=30) == 0
        messages = await read_stream(nats_server.url)
        assert len(messages) == last == events + 40
        assert_exactly_once_in_commit_order(messages, app)
        assert kills_while_publishing >= 3
    finally:
        tracked_position.close()
        app.close()


async def test_nats_stopped_mid_run_then_restarted_on_the_same_store(
    backend_settings: Settings, nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="services.shared.relay")
    app = CareApplication(backend_settings)
    try:
        plan_ids = write_plans(app, 5)
        writer = threading.Thread(target=write_load, args=(app, plan_ids, 1500))
        async with InProcessRelay(backend_settings, nats_server.url) as relay:
            writer.start()
            await relay.wait_position(300)
            nats_server.stop()
            while relay.relay.stats.state != "waiting for NATS":
                await asyncio.sleep(0.02)
            stopped_at = relay.relay.stats.position
            while relay.relay.stats.failed_connects < 3:  # several attempts fail while NATS is down
                await asyncio.sleep(0.02)
            assert relay.relay.stats.state == "waiting for NATS"
            assert relay.relay.stats.position == stopped_at, "position moved while NATS was down"
            nats_server.start()
            writer.join()
            await relay.wait_position(app.recorder.max_notification_id(), timeout=90)
            assert relay.relay.stats.state == "publishing"
            assert relay.relay.stats.reconnects >= 1
            assert relay.relay.stats.failed_connects >= 3
        # several connection attempts failed while NATS was down; the log says so once
        states = [r.getMessage().split(" (")[0] for r in caplog.records
                  if r.name == "services.shared.relay" and not r.getMessage().startswith("relay care: ")]
        assert states == ["relay care publishing", "relay care waiting for NATS", "relay care publishing", "relay care stopped"]
        messages = await read_stream(nats_server.url)
        assert len(messages) == 1510
        assert_exactly_once_in_commit_order(messages, app)
    finally:
        app.close()



@pytest.mark.postgres
async def test_on_postgresql_the_relay_is_woken_by_notify_not_by_polling(
    postgres_available: None, tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    from tests.conftest import drop_schemas, postgres_settings

    settings = postgres_settings(tmp_path, relay_poll_interval=60)  # polling alone would take a minute
    app = CareApplication(settings)
    try:
        async with InProcessRelay(settings, nats_server.url) as relay:
            await relay.wait_position(0)
            await asyncio.sleep(0.5)  # the relay is idle now, waiting up to 60 s
            plan_ids = await asyncio.to_thread(write_plans, app, 1)
            started = time.monotonic()
            await relay.wait_position(2, timeout=10)
            assert time.monotonic() - started < 10
        assert len(await read_stream(nats_server.url)) == 2
        assert plan_ids
    finally:
        app.close()
        drop_schemas(settings)


async def test_on_sqlite_the_relay_notices_a_commit_without_waiting_out_its_poll(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    """SQLite has no NOTIFY; the relay watches the file's data version instead (another
    connection's commit changes it), so an idle relay publishes within milliseconds."""
    settings = Settings(data_dir=tmp_path / "data", relay_poll_interval=60)  # polling alone would take a minute
    app = CareApplication(settings)
    try:
        async with InProcessRelay(settings, nats_server.url) as relay:
            await relay.wait_position(0)
            await asyncio.sleep(0.5)  # the relay is idle now, waiting up to 60 s
            await asyncio.to_thread(write_plans, app, 1)
            started = time.monotonic()
            await relay.wait_position(2, timeout=10)
            assert time.monotonic() - started < 10
        assert len(await read_stream(nats_server.url)) == 2
    finally:
        app.close()
