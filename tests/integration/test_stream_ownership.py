"""The streams have one owner (`careplan up`, `careplan nats streams apply`): a relay or a
service started with other stream settings refuses to start and changes nothing; one started
before the streams exist waits for them, and can be stopped while it waits."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from typer.testing import CliRunner

from services.cli import app as cli
from services.registry import service
from services.shared.bus import EmbeddedNats, StreamDriftError
from services.shared.persistence import OutboxStores
from services.shared.relay import Relay
from services.shared.settings import Settings
from tests.support.bus import create_streams, start_relay_process, with_streams

DAY = 86400


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        yield server


async def max_age(url: str, stream: str = "CARE") -> float:
    nc = await nats.connect(url)
    try:
        return float((await nc.jetstream().stream_info(stream)).config.max_age or 0)
    finally:
        await nc.close()


def relay(settings: Settings, url: str) -> tuple[Relay, OutboxStores]:
    stores = OutboxStores(settings, "care")
    return Relay(settings, application="care", nats_url=url, recorder=stores.recorder, mapper=stores.mapper,
                 tracking=stores.tracking), stores


async def test_a_service_with_another_retention_refuses_to_start_and_changes_nothing(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    with_streams(nats_server)
    stale = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url, stream_max_age_days=1)
    running = service("assessment").running(stale)
    try:
        with pytest.raises(StreamDriftError) as refused:
            await running.start()
    finally:
        await running.stop()
    message = str(refused.value)
    assert "stream CARE: max_age is 0.0, configured 86400.0" in message
    assert "careplan nats streams apply" in message
    assert await max_age(nats_server.url) == 0


async def test_a_relay_with_another_retention_refuses_to_start_and_changes_nothing(
    tmp_path: Path, nats_server: EmbeddedNats
) -> None:
    with_streams(nats_server)
    stale = Settings(data_dir=tmp_path / "data", stream_max_age_days=1)
    in_process, stores = relay(stale, nats_server.url)
    try:
        with pytest.raises(StreamDriftError, match="max_age is 0.0, configured 86400.0"):
            await asyncio.wait_for(in_process.run(asyncio.Event()), 30)
    finally:
        stores.close()
    # ... and so does `careplan relay`, as a process: it exits naming the field
    log = tmp_path / "relay.log"
    process = start_relay_process(stale, nats_server.url, log)
    assert await asyncio.to_thread(process.wait, 60) != 0
    assert "refuses to start" in log.read_text() and "max_age" in log.read_text()
    assert await max_age(nats_server.url) == 0


async def test_a_relay_waits_for_the_streams_and_can_be_stopped_while_it_waits(
    tmp_path: Path, nats_server: EmbeddedNats, caplog: pytest.LogCaptureFixture
) -> None:
    # a relay that waits stops when told to
    waiting_relay, stores = relay(Settings(data_dir=tmp_path / "other"), nats_server.url)
    try:
        stop = asyncio.Event()
        task = asyncio.create_task(waiting_relay.run(stop))
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        stores.close()
    settings = Settings(data_dir=tmp_path / "data")
    in_process, stores = relay(settings, nats_server.url)
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="services.shared.bus")
    caplog.clear()
    try:
        task = asyncio.create_task(in_process.run(stop))
        await asyncio.sleep(2.5)
        assert not task.done() and in_process.stats.state != "publishing"
        waiting = [r for r in caplog.records if "do not exist yet" in r.getMessage()]
        assert len(waiting) == 1  # logged once, not every second
        # once the streams are created, it publishes
        create_streams(nats_server.url, settings)
        for _ in range(100):
            if in_process.stats.state == "publishing":
                break
            await asyncio.sleep(0.1)
        assert in_process.stats.state == "publishing"
        stop.set()
        await asyncio.wait_for(task, 10)
    finally:
        stores.close()


def test_streams_check_names_the_drift_and_apply_mends_it(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    with_streams(nats_server)
    url = ["--nats", nats_server.url]
    env = {**os.environ, "COLUMNS": "250", "CAREPLAN_STREAM_MAX_AGE_DAYS": "1"}
    assert CliRunner().invoke(cli, ["nats", "streams", "check", *url], env={**env, "CAREPLAN_STREAM_MAX_AGE_DAYS": "0"}
                              ).exit_code == 0
    drifted = CliRunner().invoke(cli, ["nats", "streams", "check", *url], env=env)
    assert drifted.exit_code == 1, drifted.output
    assert "stream CARE: max_age is 0.0, configured 86400.0" in drifted.output
    assert "CARE_AUDIT" not in drifted.output  # the audit stream keeps everything whatever the retention
    applied = CliRunner().invoke(cli, ["nats", "streams", "apply", *url], env=env)
    assert applied.exit_code == 0, applied.output
    assert "stream CARE: max_age 0.0 -> 86400.0" in applied.output
    assert CliRunner().invoke(cli, ["nats", "streams", "check", *url], env=env).exit_code == 0
    assert asyncio.run(max_age(nats_server.url)) == DAY


def test_streams_check_names_a_missing_stream(nats_server: EmbeddedNats) -> None:
    checked = CliRunner().invoke(cli, ["nats", "streams", "check", "--nats", nats_server.url],
                                 env={**os.environ, "COLUMNS": "250"})
    assert checked.exit_code == 1
    assert "stream CARE: missing" in checked.output and "stream CARE_AUDIT: missing" in checked.output

