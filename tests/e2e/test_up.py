"""`careplan up` as a person runs it: ready line and file, events flowing to JetStream,
a crashed relay restarted by the supervisor, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from uuid import UUID

import httpx

from domain.catalogues.care import CopingSkill
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.shared.settings import Settings
from tests.conftest import CLINICIAN

META = CommandMeta(actor=CLINICIAN)


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _api_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/openapi.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def stream_count(url: str, data_dir: Path) -> int:
    """The care application's events on the stream (the services add their own), read as the
    auditor user with the password `up` generated into its data dir (its NATS has users)."""
    import asyncio

    import nats

    from services.nats_auth import url_as

    async def count() -> int:
        nc = await nats.connect(url_as(url, "auditor", data_dir))
        try:
            info = await nc.jetstream().stream_info("CARE", subjects_filter="care.clinical.>")
            return sum((info.state.subjects or {}).values())
        finally:
            await nc.close()

    return asyncio.run(count())


def _views_position(data: Path) -> int:
    import sqlite3

    if not (data / "views.sqlite").exists():
        return 0
    with sqlite3.connect(data / "views.sqlite") as db:
        row = db.execute("SELECT position FROM view_positions WHERE source = 'care'").fetchone()
    return int(row[0]) if row else 0


def test_up_runs_the_system_restarts_a_crashed_relay_and_stops_cleanly(tmp_path: Path) -> None:
    data, ready = tmp_path / "data", tmp_path / "ready.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")}
    made = subprocess.run(
        [sys.executable, "-m", "services.cli", "api", "add-token", "--actor", "clinician-17", "--role", "clinician",
         "--all-clients", "--data-dir", str(data)], env=env, capture_output=True, text=True, check=True,
    )
    token = made.stdout.strip().splitlines()[-1]
    assert token not in (data / "api-tokens.json").read_text()  # only its digest is kept
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "up", "--data-dir", str(data), "--ready-file", str(ready)],
        env={**env, "COLUMNS": "300"}, stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_for(ready.exists, what="the ready file")
        info = json.loads(ready.read_text())
        assert info["api"].startswith("http://127.0.0.1:") and Path(info["data_dir"]) == data.resolve()
        assert info["nats"].startswith("nats://127.0.0.1:") and not info["nats"].endswith(":4222")
        assert "careplan ready: NATS nats://127.0.0.1:" in (tmp_path / "up.log").read_text()

        app = CareApplication(Settings(data_dir=data))
        try:
            # the API serves commands; the actor comes from the token
            wait_for(lambda: _api_up(info["api"]), what="the HTTP API")
            response = httpx.post(
                f"{info['api']}/plans", headers={"Authorization": f"Bearer {token}"},
                json={"client_id": "client-1", "title": "Up", "strategy": "short_term_moderate", "therapy_models": ["steady_drive"]},
            )
            assert response.status_code == 201, response.text
            assert httpx.post(f"{info['api']}/plans", json={}).status_code == 401
            plan = UUID(response.json()["aggregate_id"])
            assert app.get_plan(plan).version == 1
            assert next(iter(app.history(plan))).actor.id == "clinician-17"
            wait_for(lambda: stream_count(info["nats"], data) == 1, what="the first event on the stream")
            # the views process (services/views) keeps the read models without any read asking
            assert "views" in info["processes"]
            wait_for(lambda: _views_position(data) >= 1, what="the views process to apply the plan")
            caseload = httpx.get(f"{info['api']}/caseload", headers={"Authorization": f"Bearer {token}"})
            assert caseload.status_code == 200 and [r["plan_id"] for r in caseload.json()["items"]] == [str(plan)]

            relay_pid = info["processes"]["relay:care"]
            os.kill(relay_pid, signal.SIGKILL)
            app.handle(c.TargetCopingSkill(plan_id=plan, skill=CopingSkill.COMMUNICATION), META)
            for i in range(20):
                app.handle(c.RecordSkillProgress(plan_id=plan, skill=CopingSkill.COMMUNICATION, note=f"n{i}"), META)
            wait_for(lambda: stream_count(info["nats"], data) == 22, what="the restarted relay to catch up")
            assert "restarting" in (tmp_path / "up.log").read_text()
        finally:
            app.close()

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=60) == 0
        assert "careplan stopped" in (tmp_path / "up.log").read_text()
        port = int(info["nats"].rsplit(":", 1)[1])
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, "the embedded nats-server outlived careplan up"
        assert (data / "nats" / "jetstream").is_dir() and (data / "care.sqlite").exists()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
