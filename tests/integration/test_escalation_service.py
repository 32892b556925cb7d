"""The escalation service on real NATS, fed by the care application and the assessment
service, with its clock in virtual time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from domain.escalation.crisis import CrisisStatus, crisis_id
from services.assessment.service import SUBJECTS as ASSESSMENT_SUBJECTS
from services.assessment.service import AssessmentApplication
from services.care.application import CareApplication
from services.escalation.commands import AcknowledgeEscalation
from services.escalation.service import SUBJECTS, EscalationApplication
from services.shared.bus import EmbeddedNats
from services.shared.clock import ManualClock
from services.shared.commands import CommandMeta
from services.shared.runner import RunningService
from services.shared.settings import Settings
from tests.conftest import SUPERVISOR, T0
from tests.integration.test_assessment_service import start_course, submit, wait_for_messages
from tests.support.bus import InProcessRelay, read_stream, with_streams


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


def escalation(settings: Settings, clock: ManualClock) -> RunningService:
    app = EscalationApplication(settings, clock=clock)
    return RunningService(settings, app, SUBJECTS, tick=app.fire_due_timers, tick_interval=0.05)


def kinds(messages: list) -> list[str]:  # type: ignore[type-arg]
    return [m.subject.rsplit(".", 1)[1] for m in messages]


async def test_a_positive_item_9_escalates_level_by_level_until_acknowledged(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    clock = ManualClock(T0)
    care = CareApplication(settings)
    try:
        plan, course = start_course(care)
        submitted = submit(care, course, "PHQ-9", [1, 1, 1, 1, 1, 1, 1, 1, 2])
        async with (
            InProcessRelay(settings, nats_server.url),
            RunningService(settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS),
            escalation(settings, clock) as running,
        ):
            raised = await wait_for_messages(nats_server.url, "care.escalation.v1.", 2)
            assert kinds(raised) == ["escalation_raised", "escalation_level_notified"]
            clock.advance(hours=2)  # urgent: acknowledge within 2 hours, or the next level is called
            escalated = await wait_for_messages(nats_server.url, "care.escalation.v1.", 4)
            assert kinds(escalated)[2:] == ["escalation_timed_out", "escalation_level_notified"]
            app: EscalationApplication = running.app  # type: ignore[assignment]
            cid = crisis_id(json.loads(raised[0].body)["source_event_id"])
            await asyncio.to_thread(app.handle, AcknowledgeEscalation(crisis_id=cid, reason="Phoned the client; safe tonight"),
                                    CommandMeta(actor=SUPERVISOR))
            clock.advance(hours=10)
            await asyncio.sleep(0.5)  # several ticks: nothing more may happen
            final = await wait_for_messages(nats_server.url, "care.escalation.v1.", 5)
            assert kinds(final)[4:] == ["escalation_acknowledged"]
            assert app.find_crisis_status(cid) is CrisisStatus.ACKNOWLEDGED
    finally:
        care.close()
    everything = await read_stream(nats_server.url)
    by_id = {m.headers["ce-id"]: (m.subject.rsplit(".", 1)[1], json.loads(m.body)) for m in everything}
    raised_body = json.loads(final[0].body)
    assert (raised_body["trigger"], raised_body["severity"], raised_body["plan_id"]) == ("phq9_suicide_item", "urgent", plan)
    # the causation chain, from the escalation back to the questionnaire
    scored_kind, scored = by_id[raised_body["causation_id"]]
    assert scored_kind == "assessment_scored" and scored["causation_id"] == submitted
    assert by_id[submitted][0] == "questionnaire_submitted"
    notified = [json.loads(m.body) for m in final if m.subject.endswith("escalation_level_notified")]
    assert [(n["level"], n["level_name"]) for n in notified] == [(1, "primary clinician"), (2, "on-call clinician")]
    timed_out = json.loads(final[2].body)
    assert timed_out["causation_id"] == notified[1]["causation_id"] == notified[0]["event_id"]
    assert {json.loads(m.body)["correlation_id"] for m in final} == {scored["correlation_id"]}


async def test_unscorable_answers_with_a_risk_signal_still_escalate(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    care = CareApplication(settings)
    try:
        _, course = start_course(care)
        submit(care, course, "PHQ-9", [1, None, None, None, 1, 1, 1, 1, 3])  # 3 missing: not scored
        async with (
            InProcessRelay(settings, nats_server.url),
            RunningService(settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS),
            escalation(settings, ManualClock(T0)),
        ):
            raised = await wait_for_messages(nats_server.url, "care.escalation.v1.", 2)
    finally:
        care.close()
    body = json.loads(raised[0].body)
    assert (body["trigger"], body["severity"]) == ("unscorable_with_risk_signal", "urgent")
    assert "could not be scored" in body["reason"]


async def test_a_restart_re_arms_the_timers(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    clock = ManualClock(T0)
    care = CareApplication(settings)
    try:
        _, course = start_course(care)
        submit(care, course, "C-SSRS-screener", [1, 1, 1, 0, 1, 0])  # plan with intent: immediate
        async with InProcessRelay(settings, nats_server.url), RunningService(
            settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS
        ):
            async with escalation(settings, clock):
                raised = await wait_for_messages(nats_server.url, "care.escalation.v1.", 2)
            clock.advance(minutes=6)  # the deadline passes while the service is down
            async with escalation(settings, clock) as restarted:
                app: EscalationApplication = restarted.app  # type: ignore[assignment]
                assert UUID(json.loads(raised[0].body)["originator_id"]) in app.timers
                escalated = await wait_for_messages(nats_server.url, "care.escalation.v1.", 4)
    finally:
        care.close()
    assert json.loads(raised[0].body)["severity"] == "immediate"
    assert kinds(escalated) == ["escalation_raised", "escalation_level_notified", "escalation_timed_out", "escalation_level_notified"]
    assert json.loads(escalated[1].body)["ack_due"].startswith((T0 + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M"))
