"""`careplan deadletter list|show|redrive` and the supervisors' /deadletters, against a
running service on real NATS: a submission the service cannot decide (a fault, mended
later) is dead-lettered with a fail-safe flag, listed and shown without its content, and
decided by the service exactly once when redriven."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from domain.base import Role
from services.api.app import Api, create_app
from services.api.auth import TokenRegistry, add_token
from services.assessment.service import SUBJECTS
from services.care.application import CareApplication
from services.cli import app as cli
from services.operations.dead_letters import DeadLetterDesk
from services.shared.bus import EmbeddedNats
from services.shared.runner import RunningService
from services.shared.settings import Settings
from tests.integration.test_assessment_service import SENTINEL as SECRET
from tests.integration.test_assessment_service import FailingAssessment, start_course, submit, wait_for_messages
from tests.support.bus import with_streams

@pytest.fixture
def nats_server(tmp_path: Path) -> Any:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


def run(*args: str, data_dir: Path) -> Any:
    return CliRunner().invoke(cli, ["deadletter", *args, "--data-dir", str(data_dir)], env={**os.environ, "COLUMNS": "250"})


async def test_a_dead_letter_is_listed_shown_and_redriven_once(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    from tests.support.bus import InProcessRelay, read_stream

    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    care = CareApplication(settings)
    try:
        _, course = start_course(care)
        failing = submit(care, course, "PHQ-9", [0, 0, 0, 0, 0, 0, 0, 0, 2])
        service = FailingAssessment(settings, {failing})
        async with InProcessRelay(settings, nats_server.url), RunningService(settings, service, SUBJECTS, max_attempts=2,
                                                                            retry_cap=0.1):
            (dead,) = await wait_for_messages(nats_server.url, "care.assessment.v1.dead_letter.", 1)
            letter_id = json.loads(dead.body)["originator_id"]
            listed = await asyncio.to_thread(run, "list", data_dir=settings.data_dir)
            assert listed.exit_code == 0 and letter_id in listed.output and "risk signal" in listed.output
            assert "ValueError" in listed.output and SECRET not in listed.output
            shown = await asyncio.to_thread(run, "show", letter_id, "--json", data_dir=settings.data_dir)
            details = json.loads(shown.output)
            assert (details["status"], details["failed_event_id"], details["attempts"]) == ("open", failing, 2)
            assert details["risk_signal"] is True and SECRET not in shown.output

            # the supervisors' view of the same, over HTTP
            tokens = tmp_path / "tokens.json"
            supervisor = add_token(tokens, actor_id="sup-3", role=Role.SUPERVISOR, clients=("*",))
            clinician = add_token(tokens, actor_id="clin-1", role=Role.CLINICIAN, clients=("*",))
            api = Api(care, TokenRegistry.load(tokens))
            api.dead_letters = DeadLetterDesk(settings)
            client = TestClient(create_app(api))
            try:
                assert client.get("/deadletters", headers={"Authorization": f"Bearer {clinician}"}).status_code == 403
                seen = client.get("/deadletters?status=open", headers={"Authorization": f"Bearer {supervisor}"})
                assert [d["id"] for d in seen.json()] == [letter_id]
                assert client.get(f"/deadletters/{letter_id}", headers={"Authorization": f"Bearer {supervisor}"}).json()[
                    "history"][0]["role"] == "service"
                refused = client.post(f"/deadletters/{letter_id}/redrive", json={"reason": ""},
                                      headers={"Authorization": f"Bearer {supervisor}"})
                assert refused.status_code == 422
            finally:
                api.dead_letters.close()

            service.fail_on.clear()  # the fault is mended
            redriven = await asyncio.to_thread(run, "redrive", letter_id, "--reason", "Fixed in 1.4.2", "--wait", "30",
                                               data_dir=settings.data_dir)
            assert redriven.exit_code == 0 and "redriven" in redriven.output, redriven.output
            scored = await wait_for_messages(nats_server.url, "care.assessment.v1.assessment_record.", 2)
            again = await asyncio.to_thread(run, "redrive", letter_id, "--reason", "once more", "--wait", "0",
                                            data_dir=settings.data_dir)
            assert again.exit_code == 1 and "redriven" in again.output
            await asyncio.sleep(1.5)  # a second redrive would be decided by now
        messages = await read_stream(nats_server.url)
    finally:
        care.close()
    assert [m.subject.rsplit(".", 1)[1] for m in scored] == ["assessment_record_opened", "assessment_scored"]
    decisions = [json.loads(m.body) for m in messages if m.subject.endswith(".assessment_scored")]
    assert [d["causation_id"] for d in decisions] == [failing]  # decided once, by the redrive
    history = [m.subject.rsplit(".", 1)[1] for m in messages if ".dead_letter." in m.subject]
    assert history == ["message_dead_lettered", "dead_letter_redrive_requested", "dead_letter_redriven"]
    requested = next(json.loads(m.body) for m in messages if m.subject.endswith(".dead_letter_redrive_requested"))
    assert requested["actor"]["role"] == "operator" and requested["reason"] == "Fixed in 1.4.2"
