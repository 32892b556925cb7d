"""The scheduling service on real NATS, fed by the care application, in virtual time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from domain.catalogues.modalities import Modality
from domain.catalogues.strategies import Strategy
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.scheduling.service import SUBJECTS, SchedulingApplication
from services.shared.bus import EmbeddedNats
from services.shared.clock import ManualClock
from services.shared.runner import RunningService
from services.shared.settings import Settings
from tests.conftest import CLINICIAN, T0
from tests.integration.test_assessment_service import wait_for_messages
from tests.support.bus import InProcessRelay, with_streams

META = CommandMeta(actor=CLINICIAN)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


def kinds(messages: list) -> list[str]:  # type: ignore[type-arg]
    return [m.subject.rsplit(".", 1)[1] for m in messages]


async def test_sessions_are_planned_replanned_held_and_missed(tmp_path: Path, nats_server: EmbeddedNats) -> None:
    settings = Settings(data_dir=tmp_path / "data", nats_url=nats_server.url)
    clock = ManualClock(T0)
    care = CareApplication(settings, clock=ManualClock(T0))
    app = SchedulingApplication(settings, clock=clock)
    try:
        plan = care.handle(
            c.DraftCarePlan(client_id="client-3", title="Support", strategy="short_term_moderate", therapy_models=["steady_drive"]),
            META,
        ).aggregate_id
        course = care.handle(c.StartCourse(plan_id=plan, modality=Modality.SUPPORTIVE, planned_sessions=4), META).aggregate_id
        first = c.ScheduleSession(course_id=course, scheduled_for=T0 + timedelta(days=7))
        care.handle(first, META)
        care.handle(c.HoldSession(course_id=course, session_id=first.session_id, held_at=T0 + timedelta(days=7)), META)
        async with InProcessRelay(settings, nats_server.url), RunningService(
            settings, app, SUBJECTS, tick=app.fire_due_timers, tick_interval=0.05
        ):
            planned = await wait_for_messages(nats_server.url, "care.scheduling.v1.course_schedule.", 6)
            assert kinds(planned) == ["schedule_opened", *["session_scheduled"] * 4, "session_attendance_recorded"]
            clock.now = T0 + timedelta(days=8)
            care.handle(
                c.ChangeStrategy(plan_id=plan, strategy=Strategy.MID_TERM_MODERATE_DEPTH, reason="Fortnightly suits now"), META
            )
            replanned = await wait_for_messages(nats_server.url, "care.scheduling.v1.course_schedule.", 9)
            assert kinds(replanned)[6:] == ["schedule_follows_strategy", "session_rescheduled", "session_rescheduled"]
            clock.now = T0 + timedelta(days=15, hours=1)  # session 2 (day 14) ended, 24 h of grace not yet over
            await_missed = await wait_for_messages(nats_server.url, "care.scheduling.v1.course_schedule.", 9)
            assert "session_missed" not in kinds(await_missed)
            clock.now = T0 + timedelta(days=16)
            missed = await wait_for_messages(nats_server.url, "care.scheduling.v1.course_schedule.", 10)
    finally:
        care.close()
    last = json.loads(missed[-1].body)
    assert kinds(missed)[-1] == "session_missed"
    assert (last["number"], last["kind"], last["plan_id"]) == (2, "session", str(plan))
    moved = [json.loads(m.body) for m in replanned if m.subject.endswith("session_rescheduled")]
    assert [(m["number"], m["strategy"]) for m in moved] == [(3, "mid_term_moderate_depth"), (4, "mid_term_moderate_depth")]
