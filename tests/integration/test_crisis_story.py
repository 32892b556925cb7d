"""The crisis story across the care application and the services, on real NATS."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.escalation.crisis import crisis_id
from services.assessment.service import SUBJECTS as ASSESSMENT_SUBJECTS
from services.assessment.service import AssessmentApplication
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.care.policies import NAME as POLICIES
from services.care.policies import SUBJECTS as POLICY_SUBJECTS
from services.escalation.commands import AcknowledgeEscalation, ResolveCrisis
from services.escalation.service import SUBJECTS as ESCALATION_SUBJECTS
from services.escalation.service import EscalationApplication
from services.shared.bus import EmbeddedNats
from services.shared.clock import ManualClock
from services.shared.runner import RunningService
from services.shared.settings import Settings
from tests.conftest import SUPERVISOR, T0
from tests.integration.test_assessment_service import start_course, submit
from tests.support.bus import InProcessRelay, read_stream, with_streams


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


async def eventually(check, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(check):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_a_crisis_from_questionnaire_to_emergency_support_and_back(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    care = CareApplication(settings)
    escalation_app = EscalationApplication(settings, clock=ManualClock(T0))
    try:
        plan, course = start_course(care)
        plan_id = UUID(plan)
        submitted = submit(care, course, "PHQ-9", [2, 2, 1, 2, 1, 2, 1, 1, 1])
        async with (
            InProcessRelay(settings, nats_server.url) as care_relay,
            RunningService(settings, CareApplication(settings), POLICY_SUBJECTS, name=POLICIES, with_relay=False),
            RunningService(settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS),
            RunningService(settings, escalation_app, ESCALATION_SUBJECTS, tick=escalation_app.fire_due_timers, tick_interval=0.05),
        ):
            await eventually(lambda: care.get_plan(plan_id).strategy is Strategy.EMERGENCY_SUPPORT)
            in_crisis = care.get_plan(plan_id)
            assert in_crisis.risk_level is RiskLevel.MODERATE
            (open_crisis,) = in_crisis.open_crises
            await asyncio.to_thread(escalation_app.handle, AcknowledgeEscalation(crisis_id=open_crisis, reason="Called the client"),
                                    CommandMeta(actor=SUPERVISOR))
            await asyncio.to_thread(
                escalation_app.handle, ResolveCrisis(crisis_id=open_crisis, outcome="Safety plan agreed; client safe",
                                                     reason="Seen in person the same day"), CommandMeta(actor=SUPERVISOR),
            )
            await eventually(lambda: not care.get_plan(plan_id).open_crises)
            care.handle(
                c.EndEmergencySupport(plan_id=plan_id, strategy=Strategy.MID_TERM_MODERATE_DEPTH, reason="Crisis over"),
                CommandMeta(actor=SUPERVISOR),
            )
            await care_relay.wait_position(care.recorder.max_notification_id())
            await asyncio.sleep(0.3)
        messages = await read_stream(nats_server.url)
    finally:
        care.close()
    by_id = {m.headers["ce-id"]: m for m in messages}

    def chain_back(event_id: str) -> list[str]:
        hops = []
        while event_id in by_id:
            message = by_id[event_id]
            hops.append(f"{message.headers['ce-source'].rsplit(':', 1)[1]}:{message.subject.rsplit('.', 1)[1]}")
            event_id = json.loads(message.body).get("causation_id") or ""
        return hops

    activated = next(m for m in messages if m.subject.endswith("emergency_support_activated"))
    assert chain_back(activated.headers["ce-id"]) == [
        "care:emergency_support_activated",
        "escalation:escalation_raised",
        "assessment:assessment_scored",
        "care:questionnaire_submitted",
    ]
    assert json.loads(activated.body)["crisis_id"] == str(open_crisis)
    assert open_crisis == crisis_id(next(m.headers["ce-id"] for m in messages if m.subject.endswith("assessment_scored")))
    recorded = next(m for m in messages if m.subject.endswith("crisis_resolution_recorded"))
    assert chain_back(recorded.headers["ce-id"])[:2] == ["care:crisis_resolution_recorded", "escalation:crisis_resolved"]
    # one story from the questionnaire to the resolution
    story = {json.loads(m.body)["correlation_id"] for m in messages if m.headers["ce-id"] in {
        activated.headers["ce-id"], recorded.headers["ce-id"], submitted}}
    assert len(story) == 1
    kinds = [m.subject.rsplit(".", 1)[1] for m in messages if m.subject.startswith("care.clinical.v1.care_plan.")]
    assert kinds[-4:] == ["risk_level_raised", "emergency_support_activated", "crisis_resolution_recorded", "emergency_support_ended"]
