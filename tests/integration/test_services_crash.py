"""Every service process SIGKILLed at random points under 1,000 submissions, and restarted:
every submission scored exactly once, every required escalation raised exactly once, every
crisis acted on by the care application exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import pytest

from domain.catalogues.modalities import Modality
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.shared.bus import EmbeddedNats
from services.shared.persistence import OutboxStores
from services.shared.settings import Settings
from tests.conftest import CLINICIAN
from tests.integration.test_assessment_service import WHEN
from tests.support.bus import InProcessRelay, read_stream, settings_env, with_streams

META = CommandMeta(actor=CLINICIAN)
SUBMISSIONS = 1000
COURSES = 20
SERVICES = ("assessment", "escalation", "care-policies", "scheduling")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


class ServiceProcess:
    def __init__(self, name: str, settings: Settings, url: str, log: Path) -> None:
        self.name, self.settings, self.url, self.log = name, settings, url, log
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "service", self.name],
                env=settings_env(self.settings, self.url), stdout=out, stderr=out,
            )

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def write_submissions(app: CareApplication, courses: list[UUID], rng: random.Random) -> list[bool]:
    """Totals stay within a point of each other (no reliable change), so the only trigger is item 9."""
    item9 = []
    for i in range(SUBMISSIONS):
        positive = rng.random() < 0.1
        item9.append(positive)
        app.handle(
            c.SubmitQuestionnaire(
                course_id=courses[i % COURSES], instrument="PHQ-9", answers=[1] * 8 + [int(positive)], answered_at=WHEN
            ),
            META,
        )
    return item9


def stored(settings: Settings, application: str) -> int:
    stores = OutboxStores(settings, application)
    try:
        return stores.recorder.max_notification_id() or 0
    finally:
        stores.close()


async def test_services_killed_at_random_points_decide_everything_exactly_once(
    tmp_path: Path, nats_server: EmbeddedNats, backend_settings: Settings
) -> None:
    settings = backend_settings.model_copy(update={"data_dir": tmp_path / "data", "nats_url": nats_server.url})
    rng = random.Random(1124)
    app = CareApplication(settings)
    processes = {name: ServiceProcess(name, settings, nats_server.url, tmp_path / f"{name}.log") for name in SERVICES}
    try:
        plans = [
            app.handle(
                c.DraftCarePlan(client_id=f"client-{i}", title="Load", strategy="short_term_moderate", therapy_models=["steady_drive"]),
                META,
            ).aggregate_id
            for i in range(COURSES)
        ]
        courses = [
            app.handle(c.StartCourse(plan_id=p, modality=Modality.INTERPERSONAL, planned_sessions=12), META).aggregate_id
            for p in plans
        ]
        for process in processes.values():
            process.start()
        result: list[list[bool]] = []
        writer = threading.Thread(target=lambda: result.append(write_submissions(app, courses, rng)))
        async with InProcessRelay(settings, nats_server.url):
            writer.start()
            # Kill each service in turn, each time after it has made progress, at a random moment.
            for round_ in range(4):
                for name in ("assessment", "escalation"):
                    before = await asyncio.to_thread(stored, settings, name)
                    for _ in range(600):
                        if await asyncio.to_thread(stored, settings, name) > before:
                            break
                        await asyncio.sleep(0.05)
                    await asyncio.sleep(rng.uniform(0, 0.4))
                    processes[name].kill()
                    processes[name].start()
                if round_ % 2 == 0:
                    for name in ("care-policies", "scheduling"):
                        await asyncio.sleep(rng.uniform(0, 0.5))
                        processes[name].kill()
                        processes[name].start()
            writer.join()
            item9 = result[0]
            expected_crises = sum(item9)
            deadline = asyncio.get_running_loop().time() + 120
            while True:
                messages = await read_stream(nats_server.url)
                kinds = Counter(m.subject.rsplit(".", 1)[1] for m in messages)
                plans_in_crisis = {m.headers["ce-subject"] for m in messages if m.subject.endswith("emergency_support_activated")}
                if (kinds["assessment_scored"] >= SUBMISSIONS and kinds["escalation_raised"] >= expected_crises
                        and kinds["emergency_support_activated"] >= expected_crises
                        and kinds["schedule_follows_strategy"] >= len(plans_in_crisis)):
                    break
                assert asyncio.get_running_loop().time() < deadline, f"not caught up: {kinds}"
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # anything doubled would arrive now
            messages = await read_stream(nats_server.url)
    finally:
        for process in processes.values():
            process.stop()
        app.close()
    bodies = [(m.subject.rsplit(".", 1)[1], json.loads(m.body)) for m in messages]
    scored = Counter(b["submission_id"] for kind, b in bodies if kind == "assessment_scored")
    assert len(scored) == SUBMISSIONS and set(scored.values()) == {1}, "a submission scored twice or never"
    positive_scores = {b["event_id"] for kind, b in bodies if kind == "assessment_scored" and b["suicide_item_positive"]}
    raised = Counter(b["source_event_id"] for kind, b in bodies if kind == "escalation_raised")
    assert set(raised) == positive_scores and set(raised.values()) == {1}, "an escalation missing or raised twice"
    activated = Counter(b["crisis_id"] for kind, b in bodies if kind == "emergency_support_activated")
    assert len(activated) == expected_crises and set(activated.values()) == {1}
    assert sum(1 for kind, _ in bodies if kind == "assessment_rejected") == 0
    # scheduling: each course planned once, and each plan's strategy changes followed once each
    opened = Counter(b["course_id"] for kind, b in bodies if kind == "schedule_opened")
    assert len(opened) == COURSES and set(opened.values()) == {1}
    assert sum(1 for kind, b in bodies if kind == "session_scheduled" and b["kind"] == "session") == COURSES * 12
    # every plan in crisis entered emergency support once: its schedule followed once and got two check-ins
    in_crisis = {b["originator_id"] for kind, b in bodies if kind == "emergency_support_activated"}
    follows = Counter(b["originator_id"] for kind, b in bodies if kind == "schedule_follows_strategy")
    assert len(follows) == len(in_crisis) > 0 and set(follows.values()) == {1}
    assert sum(1 for kind, b in bodies if kind == "session_scheduled" and b["kind"] == "check_in") == 2 * len(in_crisis)
    assert all(p.kills >= 2 for p in processes.values())
