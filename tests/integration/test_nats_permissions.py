"""deploy/nats/permissions.conf on a real nats-server, and `careplan up` running under it."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import ConsumerConfig, StreamConfig

from services.nats_auth import PERMISSIONS_FILE, USERS, server_environment
from services.shared.bus import EmbeddedNats, audit_stream_config, stream_config, with_credentials
from services.shared.settings import Settings
from tests.support.bus import create_streams

PASSWORDS = {user: secrets.token_urlsafe(16) for user in USERS}
# nats-server reads variables as configuration: passwords that look like a date or a number
PASSWORDS["assessment"] = "2026-11-24T04-35-secret"
PASSWORDS["scheduling"] = "1234567890123"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats", extra_args=["-c", str(PERMISSIONS_FILE)],
                      env={**os.environ, **server_environment(PASSWORDS)},
                      probe_user=("auditor", PASSWORDS["auditor"])) as server:
        yield server


def as_user(server_url: str, user: str) -> str:
    return with_credentials(server_url, user, PASSWORDS[user])


async def test_each_user_may_do_its_own_part_and_nothing_else(secured: EmbeddedNats) -> None:
    errors: list[str] = []

    async def note(e: Exception) -> None:
        errors.append(str(e))

    relay = await nats.connect(as_user(secured.url, "relay_care"))
    hospital = await nats.connect(as_user(secured.url, "hospital"), error_cb=note, max_reconnect_attempts=0)
    assessment = await nats.connect(as_user(secured.url, "assessment"), error_cb=note, max_reconnect_attempts=0)
    auditor = await nats.connect(as_user(secured.url, "auditor"), error_cb=note, max_reconnect_attempts=0)
    try:
        js = relay.jetstream()
        create_streams(as_user(secured.url, "admin"))
        assert (await js.publish("care.clinical.v1.care_plan.p1.care_plan_drafted", b"{}")).seq == 1
        # a hospital subscriber may not publish on care.>: the server refuses it
        await hospital.publish("care.clinical.v1.care_plan.p1.care_plan_drafted", b"forged")
        await hospital.flush()
        await asyncio.sleep(0.3)
        assert any("permissions violation for publish" in e and "care.clinical" in e for e in errors), errors
        # ... but reads through its own durable consumer
        sub = await hospital.jetstream().pull_subscribe("care.>", durable="hospital", stream="CARE")
        (message,) = await sub.fetch(1, timeout=5)
        await message.ack()
        assert message.data == b"{}"
        with pytest.raises(Exception):  # noqa: B017 - any refusal: a timeout, as the request is dropped
            await hospital.jetstream().pull_subscribe("care.>", durable="someone-else", stream="CARE", )
        # a service publishes its own events only
        assert (await assessment.jetstream().publish("care.assessment.v1.assessment_record.r1.assessment_scored", b"{}")).seq
        with pytest.raises(Exception):  # noqa: B017
            await assessment.jetstream().publish("care.clinical.v1.care_plan.p1.risk_level_lowered", b"{}", timeout=1)
        # an auditor reads stored messages and changes nothing
        assert (await auditor.jetstream().get_msg("CARE", 1)).data == b"{}"
        await auditor.publish("care.clinical.v1.care_plan.p1.care_plan_revoked", b"{}")
        await auditor.flush()
        await asyncio.sleep(0.3)
        assert (await relay.jetstream().stream_info("CARE")).state.messages == 2  # the two allowed publishes only
    finally:
        for connection in (relay, hospital, assessment, auditor):
            await connection.close()


def test_careplan_up_runs_every_process_as_its_own_user(tmp_path: Path) -> None:
    data, ready = tmp_path / "data", tmp_path / "ready.json"
    passwords_file = tmp_path / "nats-passwords.json"
    passwords_file.write_text(json.dumps(PASSWORDS))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")}
    env["CAREPLAN_NATS_PASSWORDS_FILE"] = str(passwords_file)
    token = subprocess.run(
        [sys.executable, "-m", "services.cli", "api", "add-token", "--actor", "clinician-17", "--role", "clinician",
         "--all-clients", "--data-dir", str(data)], env=env, capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]
    log = (tmp_path / "up.log").open("w")
    up = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--data-dir", str(data), "--ready-file", str(ready)],
                          env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while not ready.exists():
            assert time.monotonic() < deadline and up.poll() is None, (tmp_path / "up.log").read_text()
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(100):
            try:
                if httpx.get(f"{info['api']}/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        plan = httpx.post(f"{info['api']}/plans", headers=headers, json={
            "client_id": "client-1", "title": "Secured", "strategy": "short_term_moderate", "therapy_models": ["steady_drive"]})
        assert plan.status_code == 201, plan.text
        course = httpx.post(f"{info['api']}/courses", headers=headers, json={
            "plan_id": plan.json()["aggregate_id"], "modality": "interpersonal", "planned_sessions": 12})
        assert course.status_code == 201, course.text
        # the care relay published under relay_care, and the assessment and scheduling
        # services consumed and published under their own users
        subjects = asyncio.run(_subjects(as_user(info["nats"], "auditor"), want={"assessment_record_opened", "schedule_opened"}))
        assert {"care_plan_drafted", "course_started", "assessment_record_opened", "schedule_opened"} <= subjects
    finally:
        up.terminate()
        up.wait(timeout=60)
    assert "permissions violation" not in (data / "nats" / "nats-server.log").read_text()


async def test_only_the_admin_user_creates_or_changes_the_streams(secured: EmbeddedNats) -> None:
    create_streams(as_user(secured.url, "admin"))
    shorter = stream_config(Settings(stream_max_age_days=1))
    users = {user: await nats.connect(as_user(secured.url, user), max_reconnect_attempts=0)
             for user in ("relay_care", "assessment", "care_policies")}
    try:
        for user, connection in users.items():
            js = connection.jetstream(timeout=1)
            assert (await js.stream_info("CARE")).config.max_age == 0, user  # reading the info: allowed
            with pytest.raises(Exception):  # noqa: B017 - any refusal: a timeout, as the request is dropped
                await js.update_stream(shorter)
            with pytest.raises(Exception):  # noqa: B017
                await js.update_stream(audit_stream_config(Settings(stream_replicas=1, stream_duplicate_window_seconds=3600)))
            with pytest.raises(Exception):  # noqa: B017
                await js.add_stream(StreamConfig(name="CARE_OTHER", subjects=["care.other.>"]))
        js = users["relay_care"].jetstream()
        assert (await js.stream_info("CARE")).config.max_age == 0
        assert (await js.stream_info("CARE_AUDIT")).config.duplicate_window == 7200
    finally:
        for connection in users.values():
            await connection.close()


async def _subjects(url: str, want: set[str], timeout: float = 60) -> set[str]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            last = (await js.stream_info("CARE")).state.last_seq
            seen = {(await js.get_msg("CARE", seq)).subject.rsplit(".", 1)[1] for seq in range(1, last + 1)}
            if want <= seen or asyncio.get_running_loop().time() > deadline:
                return seen
            await asyncio.sleep(0.2)
    finally:
        await nc.close()


async def test_no_user_but_admin_may_change_or_empty_care_audit(secured: EmbeddedNats) -> None:
    """Whoever holds a relay's credentials cannot discard the published chain heads."""
    create_streams(as_user(secured.url, "admin"))
    relay = await nats.connect(as_user(secured.url, "relay_care"), max_reconnect_attempts=0)
    errors: list[str] = []

    async def note(e: Exception) -> None:
        errors.append(str(e))

    others = {user: await nats.connect(as_user(secured.url, user), error_cb=note, max_reconnect_attempts=0)
              for user in ("care_policies", "hospital", "auditor")}
    try:
        assert (await relay.jetstream().publish("audit.careplan.v1.chain.care", b"head")).seq == 1
        with pytest.raises(Exception):  # noqa: B017 - another store's chain head
            await relay.jetstream().publish("audit.careplan.v1.chain.escalation", b"forged", timeout=1)
        shorter = audit_stream_config(Settings(stream_replicas=1, stream_duplicate_window_seconds=3600))
        attempts = [getattr(connection.jetstream(timeout=1), verb)(*args)
                    for connection in (relay, *others.values())
                    for verb, *args in (("purge_stream", "CARE_AUDIT"), ("delete_msg", "CARE_AUDIT", 1),
                                        ("delete_stream", "CARE_AUDIT"), ("update_stream", shorter),
                                        ("purge_stream", "CARE"), ("delete_stream", "CARE"), ("delete_msg", "CARE", 1))]
        # all at once (each refused request is dropped: a timeout), so the test waits one timeout, not 28
        outcomes = await asyncio.gather(*attempts, return_exceptions=True)
        assert all(isinstance(o, Exception) for o in outcomes), outcomes
        for connection in others.values():  # only the relays publish chain heads
            await connection.publish("audit.careplan.v1.chain.care", b"forged")
            await connection.flush()
        await asyncio.sleep(0.3)
        info = await relay.jetstream().stream_info("CARE_AUDIT")
        assert (info.state.messages, info.config.duplicate_window) == (1, 7200), info
        assert (await relay.jetstream().stream_info("CARE")).config.name == "CARE"
        assert sum("permissions violation for publish" in e and "audit.careplan" in e for e in errors) == 3, errors
    finally:
        for connection in (relay, *others.values()):
            await connection.close()


def _up(data: Path, ready: Path, log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    up = subprocess.Popen([sys.executable, "-m", "services.cli", "up", "--data-dir", str(data), "--ready-file", str(ready)],
                          env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while not ready.exists():
        assert time.monotonic() < deadline and up.poll() is None, log_path.read_text()
        time.sleep(0.1)
    return up


def test_careplan_up_has_users_by_default_with_passwords_kept_in_its_data_dir(tmp_path: Path) -> None:
    data, ready = tmp_path / "data", tmp_path / "ready.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")}
    up = _up(data, ready, tmp_path / "up.log", env)
    try:
        url = json.loads(ready.read_text())["nats"]
        passwords_file = data / "nats-passwords.json"
        assert passwords_file.stat().st_mode & 0o777 == 0o600
        passwords = json.loads(passwords_file.read_text())
        assert set(USERS) <= set(passwords) and {"admin", "hospital", "auditor"} <= set(passwords)

        async def anonymous() -> None:
            nc = await nats.connect(url, max_reconnect_attempts=0, allow_reconnect=False, connect_timeout=2)
            await nc.close()

        with pytest.raises(Exception, match="(?i)authorization"):
            asyncio.run(anonymous())
        # the hospital user reads care.> with the generated password
        hospital = with_credentials(url, "hospital", passwords["hospital"])

        async def read() -> str:
            nc = await nats.connect(hospital, max_reconnect_attempts=0)
            try:
                js = nc.jetstream(timeout=5)
                # as docs/integration.md shows it: its own durable, filtered
                await js.add_consumer("CARE", ConsumerConfig(durable_name="hospital", filter_subjects=[
                    "care.clinical.v1.care_plan.*.strategy_changed", "care.clinical.v1.care_plan.*.risk_level_raised"]))
                await js.pull_subscribe_bind("hospital", stream="CARE")
                return (await js.consumer_info("CARE", "hospital")).name
            finally:
                await nc.close()

        assert asyncio.run(read()) == "hospital"
        # the CLI finds the running `up` and its admin credentials in the data dir
        check = subprocess.run([sys.executable, "-m", "services.cli", "nats", "streams", "check"],
                               env={**env, "CAREPLAN_DATA_DIR": str(data)}, capture_output=True, text=True, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "as configured" in check.stdout
    finally:
        up.terminate()
        up.wait(timeout=60)
    # kept across restarts
    ready.unlink(missing_ok=True)
    up = _up(data, ready, tmp_path / "up2.log", env)
    try:
        assert json.loads((data / "nats-passwords.json").read_text()) == passwords
    finally:
        up.terminate()
        up.wait(timeout=60)
    assert "permissions violation" not in (data / "nats" / "nats-server.log").read_text()
