"""Health and readiness: /healthz, /readyz from the processes' status records in NATS, the
supervisor's view of `careplan up`'s children, the stores; `careplan status`."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.api.health import Readiness, components
from services.registry import SERVICE_NAMES, service
from services.shared.bus import EmbeddedNats
from services.shared.health import TTL
from services.shared.settings import Settings
from tests.support.bus import with_streams

SENTINEL_CLIENT = "client-sentinel-9f41c2"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def readyz(url: str) -> tuple[int, dict[str, Any]] | None:
    try:
        response = httpx.get(f"{url}/readyz", timeout=5)
    except httpx.HTTPError:
        return None
    return response.status_code, response.json()


def status_cli(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", "status", "--api", url, *extra],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=60, check=False)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        yield with_streams(server)


@pytest.fixture
def up(tmp_path: Path, nats_server: EmbeddedNats) -> Iterator[tuple[dict[str, Any], str]]:
    """`careplan up` against the test's own NATS server (so that the test can stop it)."""
    data, ready = tmp_path / "data", tmp_path / "ready.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")}
    made = subprocess.run(
        [sys.executable, "-m", "services.cli", "api", "add-token", "--actor", "clinician-17", "--role", "clinician",
         "--all-clients", "--data-dir", str(data)], env=env, capture_output=True, text=True, check=True,
    )
    token = made.stdout.strip().splitlines()[-1]
    with (tmp_path / "up.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--data-dir", str(data), "--ready-file", str(ready)],
            env={**env, "CAREPLAN_NATS_URL": nats_server.url, "COLUMNS": "300"}, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(ready.exists, 60, "careplan up")
        yield json.loads(ready.read_text()), token
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def all_ok(url: str) -> tuple[int, dict[str, Any]] | None:
    answer = readyz(url)
    return answer if answer is not None and answer[0] == 200 else None


def test_healthz_readyz_and_status_follow_nats_down_and_back(
    up: tuple[dict[str, Any], str], nats_server: EmbeddedNats, tmp_path: Path
) -> None:
    info, token = up
    url = info["api"]
    assert httpx.get(f"{url}/healthz", timeout=5).json() == {"status": "ok"}
    created = httpx.post(f"{url}/plans", headers={"Authorization": f"Bearer {token}"}, timeout=10, json={
        "client_id": SENTINEL_CLIENT, "title": "Sentinel title", "strategy": "short_term_moderate",
        "therapy_models": ["steady_drive"]})
    assert created.status_code == 201, created.text

    _, body = wait_for(lambda: all_ok(url), 30, "every component ok")
    assert set(body["components"]) == set(components())
    assert {"nats", "relay:care", "relay:assessment", "service:assessment", "service:care-policies",
            "store:care", "api"} <= set(body["components"])
    assert all(c["status"] == "ok" for c in body["components"].values()), body
    assert status_cli(url).returncode == 0
    as_json = status_cli(url, "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["status"] == "ok"

    nats_server.stop()
    try:
        down = wait_for(lambda: (a := readyz(url)) is not None and a[0] == 503 and a, 10, "503 naming nats")
        assert down[1]["components"]["nats"]["status"] == "down"
        assert down[1]["components"]["service:assessment"] == {"status": "down", "reason": "nats unreachable"}
        result = status_cli(url)
        assert result.returncode == 2, result.stdout
        assert "nats" in result.stdout
    finally:
        nats_server.start()
    wait_for(lambda: all_ok(url), 40, "readiness back after NATS returned")

    for text in (json.dumps(body), json.dumps(down[1]), as_json.stdout, result.stdout):
        assert SENTINEL_CLIENT not in text and "Sentinel title" not in text
    log = (tmp_path / "up.log").read_text()
    assert SENTINEL_CLIENT not in log


def test_a_stopped_service_is_down_with_no_heartbeat_after_the_ttl(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    readiness = Readiness(settings)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], float]:
        running = service("assessment").running(settings)
        await running.start()
        try:
            deadline = time.monotonic() + 20
            while True:
                before = await readiness.report()
                if before["components"]["service:assessment"]["status"] == "ok":
                    break
                assert time.monotonic() < deadline, before
                await asyncio.sleep(0.5)
        finally:
            await running.stop()
        stopped = time.monotonic()
        while True:
            after = await readiness.report()
            if after["components"]["service:assessment"]["status"] == "down":
                return before, after, time.monotonic() - stopped
            assert time.monotonic() - stopped < TTL + 15, after
            await asyncio.sleep(0.5)

    try:
        before, after, took = asyncio.run(scenario())
    finally:
        readiness.close()
    assert before["components"]["relay:assessment"]["status"] == "ok"
    assert before["components"]["relay:care"] == {"status": "down", "reason": "no heartbeat"}  # not running here
    assert after["components"]["service:assessment"] == {"status": "down", "reason": "no heartbeat"}
    assert after["components"]["relay:assessment"]["reason"] == "no heartbeat"
    assert after["status"] == "down" and after["components"]["nats"]["status"] == "ok"
    assert took > TTL - 5  # its last record ran out: nothing said it was gone sooner


def test_a_crash_looping_child_makes_readiness_down(tmp_path: Path) -> None:
    """The supervisor's file outranks a child's last status record."""
    supervisor = tmp_path / "supervisor.json"
    supervisor.write_text(json.dumps({"at": 0, "children": {
        "service:scheduling": {"state": "crash-looping", "restarts": 4},
        "relay:care": {"state": "restarting", "restarts": 1},
        "api": {"state": "running", "restarts": 0}}}))
    readiness = Readiness(Settings(data_dir=tmp_path / "data", supervisor_file=supervisor))
    try:
        body = asyncio.run(readiness.report())
    finally:
        readiness.close()
    assert body["components"]["nats"] == {"status": "down", "reason": "nats not configured"}
    assert body["components"]["service:scheduling"] == {"status": "down", "reason": "crash-looping (4 restarts)"}
    assert body["components"]["relay:scheduling"]["reason"] == "crash-looping (4 restarts)"
    assert body["components"]["store:care"] == {"status": "ok", "reason": "readable"}
    assert body["components"]["api"]["status"] == "ok"


def test_readiness_works_when_nats_has_users(tmp_path: Path) -> None:
    """Each process puts only its own status keys as its own user; the API reads them as the
    auditor: all ok, and the server logs no permissions violation."""
    from tests.integration.test_nats_permissions import PASSWORDS

    data, ready = tmp_path / "data", tmp_path / "ready.json"
    passwords_file = tmp_path / "nats-passwords.json"
    passwords_file.write_text(json.dumps(PASSWORDS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")}
    env["CAREPLAN_NATS_PASSWORDS_FILE"] = str(passwords_file)
    with (tmp_path / "up.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--data-dir", str(data), "--ready-file", str(ready)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(ready.exists, 60, "careplan up")
        url = json.loads(ready.read_text())["api"]
        _, body = wait_for(lambda: all_ok(url), 30, f"every component ok: {readyz(url)}")
        assert all(c["status"] == "ok" for c in body["components"].values()), body
        assert status_cli(url).returncode == 0
        # /metrics reads each service's consumer info as the auditor too.
        metrics_text = httpx.get(f"{url}/metrics", timeout=15).text
        for name in SERVICE_NAMES:
            assert f'careplan_consumer_pending_messages{{service="{name}"}}' in metrics_text, name
    finally:
        process.terminate()
        process.wait(timeout=60)
    assert "permissions violation" not in (data / "nats" / "nats-server.log").read_text().lower()


def test_a_child_restarted_three_times_within_a_minute_is_crash_looping(tmp_path: Path) -> None:
    from services.system import Child

    child = Child("service:scheduling", [sys.executable, "-c", "pass"], dict(os.environ), tmp_path / "ready")
    assert child.state(time.monotonic()) == "restarting"  # never started, or exited
    child.restarted_at = [100.0, 130.0, 150.0]
    assert child.state(155.0) == "crash-looping"
    assert child.state(175.0) == "restarting"  # the first restart is over a minute old
