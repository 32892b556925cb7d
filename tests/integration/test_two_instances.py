"""Two instances of assessment and of escalation share the work (partitioned consumers,
services/shared/partitions.py) under 2,000 submissions; one of each is SIGKILLed at a random
point (the assessment one stays dead, the escalation one is restarted): every submission
scored exactly once, every escalation raised exactly once, and both instances did work."""

from __future__ import annotations

import ast
import asyncio
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.catalogues.modalities import Modality
from services.care import commands as c
from services.care.application import CareApplication
from services.shared.bus import EmbeddedNats
from services.shared.settings import Settings
from tests.integration.test_services_crash import META, ServiceProcess
from tests.support.bus import InProcessRelay, read_stream, with_streams

SUBMISSIONS = 2000
COURSES = 40
PARTITIONS = 4
WHEN = "2026-05-04T09:00:00Z"
_DECIDED = re.compile(r"decided (?:so far )?per partition: (\{[^}]*\})")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


def decided(log: Path) -> int:
    """The last count of messages an instance said it decided (over its partitions)."""
    found = _DECIDED.findall(log.read_text(errors="replace")) if log.exists() else []
    return sum(ast.literal_eval(found[-1]).values()) if found else 0


def claimed(log: Path) -> bool:
    return log.exists() and "consuming partition" in log.read_text(errors="replace")


async def until(condition: object, what: str, timeout: float = 120.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(condition):  # type: ignore[arg-type]
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_two_instances_of_each_service_share_the_work_and_survive_a_kill(
    tmp_path: Path, nats_server: EmbeddedNats, backend_settings: Settings
) -> None:
    settings = backend_settings.model_copy(
        update={"data_dir": tmp_path / "data", "nats_url": nats_server.url, "consumer_partitions": PARTITIONS}
    )
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")  # shown when it fails
    rng = random.Random(seed)
    app = CareApplication(settings)
    instances = {
        (name, i): ServiceProcess(name, settings, nats_server.url, tmp_path / f"{name}-{i}.log")
        for name in ("assessment", "escalation") for i in (0, 1)
    }
    try:
        courses = []
        for i in range(COURSES):
            plan = app.handle(c.DraftCarePlan(client_id=f"client-{i}", title="Load", strategy="short_term_moderate",
                                              therapy_models=["steady_drive"]), META).aggregate_id
            courses.append(app.handle(c.StartCourse(plan_id=plan, modality=Modality.INTERPERSONAL, planned_sessions=12),
                                      META).aggregate_id)
        for process in instances.values():
            process.start()
        item9: list[bool] = []
        killed = threading.Event()

        def write() -> None:
            for i in range(SUBMISSIONS):
                if i == SUBMISSIONS // 2:
                    killed.wait(180)  # the second half reaches the survivors (and the restarted one)
                positive = rng.random() < 0.1
                item9.append(positive)
                app.handle(c.SubmitQuestionnaire(course_id=courses[i % COURSES], instrument="PHQ-9",
                                                 answers=[1] * 8 + [int(positive)], answered_at=WHEN), META)

        async def kill_one(name: str, restart: bool) -> None:
            # Both instances of the service have partitions and have decided messages...
            await until(lambda: all(claimed(instances[(name, i)].log) for i in (0, 1)), f"{name} to split")
            victim = instances[(name, rng.randrange(2))]
            await until(lambda: decided(victim.log) > 0, f"the {name} victim to decide something")
            # ...then one is killed at a random point, while the work goes on.
            await asyncio.sleep(rng.uniform(0, 1.0))
            victim.kill()
            if restart:
                victim.start()

        writer = threading.Thread(target=write)
        async with InProcessRelay(settings, nats_server.url):
            writer.start()
            try:
                await asyncio.gather(kill_one("assessment", restart=False), kill_one("escalation", restart=True))
            finally:
                killed.set()
            await asyncio.to_thread(writer.join)
            expected_crises = sum(item9)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 180
            while True:
                kinds = Counter(m.subject.rsplit(".", 1)[1] for m in await read_stream(nats_server.url))
                if kinds["assessment_scored"] >= SUBMISSIONS and kinds["escalation_raised"] >= expected_crises:
                    break
                assert loop.time() < deadline, f"not caught up: {kinds}"
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # anything doubled would arrive now
            messages = await read_stream(nats_server.url)
    finally:
        for process in instances.values():
            process.stop()
        app.close()
    bodies = [(m.subject.rsplit(".", 1)[1], json.loads(m.body)) for m in messages]
    scored = Counter(b["submission_id"] for kind, b in bodies if kind == "assessment_scored")
    assert len(scored) == SUBMISSIONS and set(scored.values()) == {1}, "a submission scored twice or never"
    assert not any(kind == "assessment_rejected" for kind, _ in bodies)
    positive = {b["event_id"] for kind, b in bodies if kind == "assessment_scored" and b["suicide_item_positive"]}
    raised = Counter(b["source_event_id"] for kind, b in bodies if kind == "escalation_raised")
    assert set(raised) == positive and set(raised.values()) == {1}, "an escalation missing or raised twice"
    assert len(positive) == expected_crises
    # Per aggregate, in order: each course's submissions were scored in the order submitted.
    assert _per_course(bodies, "questionnaire_submitted") == _per_course(bodies, "assessment_scored")
    # Both instances of each service decided messages (shared, not standby); the killed
    # one's work was taken over (the survivors and the restarted one stopped cleanly).
    for (name, i), process in instances.items():
        assert decided(process.log) > 0, f"{name} instance {i} did no work:\n{process.log.read_text()[-2000:]}"


def _per_course(bodies: list[tuple[str, dict[str, object]]], kind: str) -> dict[str, list[str]]:
    """Submission ids per course, in stream order (a submission names its course as its originator)."""
    found: dict[str, list[str]] = {}
    for k, body in bodies:
        if k == kind:
            course = body["course_id"] if "course_id" in body else body["originator_id"]
            found.setdefault(str(course), []).append(str(body["submission_id"]))
    return found


def test_the_instance_with_the_timers_arms_those_of_crises_another_instance_raised(tmp_path: Path) -> None:
    """Partitioned, a crisis is raised by whichever instance holds its partition; its
    acknowledgement deadline must still be watched by the one running the timers."""
    from uuid import uuid4

    from domain.base import CommandContext
    from domain.catalogues.escalation import EscalationTrigger
    from services.escalation.service import EscalationApplication

    settings = Settings(data_dir=tmp_path)
    deciding, timing = EscalationApplication(settings), EscalationApplication(settings)
    try:
        ctx = CommandContext(actor=deciding.actor, at=deciding.clock(), correlation_id=uuid4(), causation_id=str(uuid4()))
        crisis = deciding._raise(plan_id=uuid4(), client_id="client-1", trigger=next(iter(EscalationTrigger)),
                                 source_event_id=str(uuid4()), reason="load", ctx=ctx)
        deciding.save(crisis)
        assert crisis.id not in timing.timers
        assert timing.follow_timers(0) > 0
        assert timing.timers.due(crisis.id) == crisis.ack_due
    finally:
        deciding.close()
        timing.close()


def test_partitioned_scheduling_marks_a_slot_missed_only_once_every_partition_passed_the_watermark(tmp_path: Path) -> None:
    """A care watermark decided by one partition says nothing of the others: a SessionHeld
    may still wait in a partition another instance decides (or no one does, its instance
    killed). The timers trust the watermark once every partition's recorded position (in the
    service's store, whoever recorded it) has passed it."""
    from datetime import timedelta
    from uuid import uuid4

    from eventsourcing.persistence import Tracking

    from domain.base import CommandContext
    from domain.catalogues.strategies import Strategy
    from domain.scheduling.schedule import CourseSchedule
    from services.scheduling.service import SUBJECTS, SchedulingApplication
    from services.shared.clock import ManualClock
    from services.shared.cloudevents import Watermark
    from services.shared.partitions import PartitionedService
    from tests.conftest import T0

    settings = Settings(data_dir=tmp_path, nats_url="nats://127.0.0.1:1")  # never connected
    clock = ManualClock(T0)
    app = SchedulingApplication(settings, clock=clock)
    service = PartitionedService(settings, app, SUBJECTS, name="scheduling", partitions=2, with_relay=False,
                                 tick=app.fire_due_timers)
    try:
        ctx = CommandContext(actor=app.actor, at=T0, correlation_id=uuid4())
        schedule = CourseSchedule.open(course_id=uuid4(), plan_id=uuid4(), client_id="client-1",
                                       modality=Modality.INTERPERSONAL, planned_sessions=1,
                                       strategy=Strategy.SHORT_TERM_MODERATE, ctx=ctx)
        app.save(schedule)
        app.follow_timers(0)
        clock.now = T0 + timedelta(days=30)  # the one session's end and grace are long past
        app.note_watermark(Watermark(source="care", position=10, at=clock.now, stream_sequence=100))
        assert app.fire_due_timers() == 0, "no partition has recorded a position yet"
        app.record([], [Tracking("stream:CARE:scheduling-p0", 120)])
        assert service.stream_floor() == 0
        assert app.fire_due_timers() == 0, "partition 1 may still hold the session's SessionHeld"
        app.record([], [Tracking("stream:CARE:scheduling-p1", 99)])
        assert app.fire_due_timers() == 0, "partition 1 is one message short of the watermark"
        app.record([], [Tracking("stream:CARE:scheduling-p1", 100)])
        assert service.stream_floor() == 100
        assert app.fire_due_timers() == 1
    finally:
        if service.stores is not None:
            service.stores.close()
        app.close()
