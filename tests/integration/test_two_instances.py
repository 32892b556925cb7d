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


class _EscalationRelay(InProcessRelay):
    """The escalation store's relay in the test's loop: the crises the test raises itself."""

    def __init__(self, settings: Settings, nats_url: str) -> None:
        from services.shared.persistence import OutboxStores
        from services.shared.relay import Relay

        self.stores = OutboxStores(settings, "escalation")
        self.relay = Relay(settings, application="escalation", nats_url=nats_url, recorder=self.stores.recorder,
                           mapper=self.stores.mapper, tracking=self.stores.tracking)
        self.stop = asyncio.Event()
        self.task = None


async def test_two_instances_of_scheduling_and_of_care_policies_decide_once_in_order_through_a_kill(
    tmp_path: Path, nats_server: EmbeddedNats, backend_settings: Settings
) -> None:
    """Scheduling writes a plan's record from its courses' partitions and its courses'
    schedules from the plan's; care policies write a plan from each of its crises'
    partitions: concurrent writers of one aggregate, a conflict decided again. Two instances
    of each, one of each SIGKILLed at a random point (the scheduling one stays dead): every
    course's schedule opened once, every held session recorded once and in order, every
    crisis's emergency support activated once and its resolution recorded once, after it."""
    from datetime import timedelta
    from uuid import uuid4

    from domain.base import CommandContext
    from domain.catalogues.escalation import EscalationTrigger
    from services.escalation.service import EscalationApplication
    from tests.conftest import SUPERVISOR, T0

    plans_count, sessions = 16, 4
    settings = backend_settings.model_copy(  # small pools: eight processes' worth on a shared PostgreSQL
        update={"data_dir": tmp_path / "data", "nats_url": nats_server.url, "consumer_partitions": PARTITIONS,
                "postgres_pool_size": 2}
    )
    seed = random.randrange(1 << 30)
    print(f"seed {seed}")  # shown when it fails
    rng = random.Random(seed)
    care, escalation = CareApplication(settings), EscalationApplication(settings)
    instances = {
        (name, i): ServiceProcess(name, settings, nats_server.url, tmp_path / f"{name}-{i}.log")
        for name in ("scheduling", "care-policies") for i in (0, 1)
    }
    held: list[tuple[str, int]] = []
    crises: list[str] = []
    resolved: list[str] = []

    def plan_and_course(i: int) -> tuple[object, object]:
        plan = care.handle(c.DraftCarePlan(client_id=f"client-{i}", title="Load", strategy="short_term_moderate",
                                           therapy_models=["steady_drive"]), META).aggregate_id
        course = care.handle(c.StartCourse(plan_id=plan, modality=Modality.INTERPERSONAL, planned_sessions=12),
                             META).aggregate_id
        return plan, course

    def hold_sessions(course: object) -> None:
        for n in range(sessions):
            at = T0 + timedelta(days=7 * (n + 1))
            scheduled = c.ScheduleSession(course_id=course, scheduled_for=at)
            care.handle(scheduled, META)
            care.handle(c.HoldSession(course_id=course, session_id=scheduled.session_id, held_at=at), META)
            held.append((str(course), n + 1))

    def crisis(plan: object, resolve: bool) -> None:
        ctx = CommandContext(actor=escalation.actor, at=escalation.clock(), correlation_id=uuid4(),
                             causation_id=str(uuid4()))
        raised = escalation._raise(plan_id=plan, client_id=None, trigger=EscalationTrigger.PHQ9_SUICIDE_ITEM,
                                   source_event_id=str(uuid4()), reason="load", ctx=ctx)
        if resolve:
            raised.resolve(outcome="Safe", reason="Seen today",
                           ctx=CommandContext(actor=SUPERVISOR, at=escalation.clock(), correlation_id=uuid4()))
            resolved.append(str(raised.id))
        escalation.save(raised)
        crises.append(str(raised.id))

    try:
        pairs = [plan_and_course(i) for i in range(plans_count)]
        for process in instances.values():
            process.start()
        killed = threading.Event()

        def write() -> None:
            for i, (plan, course) in enumerate(pairs):
                if i == plans_count // 2:
                    killed.wait(180)  # the second half reaches the survivors (and the restarted one)
                hold_sessions(course)
                crisis(plan, resolve=False)
                crisis(plan, resolve=rng.random() < 0.5)

        async def kill_one(name: str, restart: bool) -> None:
            await until(lambda: all(claimed(instances[(name, i)].log) for i in (0, 1)), f"{name} to split")
            victim = instances[(name, rng.randrange(2))]
            await until(lambda: decided(victim.log) > 0, f"the {name} victim to decide something")
            await asyncio.sleep(rng.uniform(0, 1.0))
            victim.kill()
            if restart:
                victim.start()

        writer = threading.Thread(target=write)
        async with InProcessRelay(settings, nats_server.url), _EscalationRelay(settings, nats_server.url):
            # Every instance has its partitions before the work starts (the first to start
            # would otherwise decide all of the first half alone).
            await until(lambda: all(claimed(p.log) for p in instances.values()), "every instance to claim partitions")
            await asyncio.sleep(2.0)  # the first one gives back the extra partitions it claimed
            writer.start()
            try:
                await asyncio.gather(kill_one("scheduling", restart=False), kill_one("care-policies", restart=True))
            finally:
                killed.set()
            await asyncio.to_thread(writer.join)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while True:
                kinds = Counter(m.subject.rsplit(".", 1)[1] for m in await read_stream(nats_server.url))
                if (kinds["session_attendance_recorded"] >= len(held) and kinds["schedule_opened"] >= plans_count
                        and kinds["emergency_support_activated"] >= len(crises)
                        and kinds["crisis_resolution_recorded"] >= len(resolved)
                        and kinds["schedule_follows_strategy"] >= plans_count):
                    break
                assert loop.time() < deadline, f"not caught up: {kinds}"
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # anything doubled would arrive now
            messages = await read_stream(nats_server.url)
    finally:
        for process in instances.values():
            process.stop()
        care.close()
        escalation.close()
    bodies = [(m.subject.rsplit(".", 1)[1], json.loads(m.body)) for m in messages]
    opened = Counter(b["course_id"] for kind, b in bodies if kind == "schedule_opened")
    assert sorted(opened) == sorted(str(course) for _, course in pairs) and set(opened.values()) == {1}
    follows = Counter(b["course_id"] for kind, b in bodies if kind == "schedule_follows_strategy")
    assert set(follows.values()) == {1}, "a schedule followed emergency support twice"
    recorded = [(b["course_id"], b["number"]) for kind, b in bodies if kind == "session_attendance_recorded"]
    assert sorted(recorded) == sorted(held), "a held session recorded twice or never"
    for course in {course for course, _ in held}:  # per course, in the order held
        assert [n for k, n in recorded if k == course] == list(range(1, sessions + 1))
    activated = [b["crisis_id"] for kind, b in bodies if kind == "emergency_support_activated"]
    assert sorted(activated) == sorted(crises), "emergency support activated twice or never for a crisis"
    closed = [b["crisis_id"] for kind, b in bodies if kind == "crisis_resolution_recorded"]
    assert sorted(closed) == sorted(resolved)
    at = {(kind, b.get("crisis_id")): index for index, (kind, b) in enumerate(bodies)}
    for crisis_id in closed:  # per crisis, in order: activated, then its resolution recorded
        assert at[("emergency_support_activated", crisis_id)] < at[("crisis_resolution_recorded", crisis_id)]
    for (name, i), process in instances.items():  # in any of its lives (the restarted one may find nothing left)
        lives = _DECIDED.findall(process.log.read_text(errors="replace"))
        assert any(sum(ast.literal_eval(life).values()) for life in lives), f"{name} instance {i} did no work"


def test_a_failed_decision_leaves_no_changed_aggregate_in_the_cache(tmp_path: Path) -> None:
    """A run of decisions changes cached aggregates in place; when its commit fails (another
    instance wrote the aggregate meanwhile) they must be read again from the store. Were the
    changed one kept, it would be fast-forwarded past the other writer's events at the
    versions it had taken (found by the two-instance test of the care policies)."""
    app = CareApplication(Settings(data_dir=tmp_path, aggregate_cache_size=100))
    try:
        plan_id = app.handle(c.DraftCarePlan(client_id="client-1", title="Load", strategy="short_term_moderate",
                                             therapy_models=["steady_drive"]), META).aggregate_id
        app.load(plan_id)
        cached = app.repository.cache.get(plan_id)
        cached.title = "changed in place, never recorded"
        app.forget_cached()
        assert app.load(plan_id).title == "Load"
    finally:
        app.close()


def test_the_subscriptions_service_refuses_partitions_and_says_why(tmp_path: Path) -> None:
    """Its feeds number events across aggregates in the stream's order: partitioned, it
    refuses to start (exit 2), naming the reason; ``--instances`` runs standbys instead."""
    import subprocess
    import sys

    from tests.support.bus import settings_env

    settings = Settings(data_dir=tmp_path, nats_url="nats://127.0.0.1:1", consumer_partitions=4)  # never reached
    done = subprocess.run([sys.executable, "-m", "services.cli", "service", "subscriptions"], check=False,
                          env=settings_env(settings, settings.nats_url), capture_output=True, timeout=120)
    said = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 2, said[-2000:]
    assert "subscriptions cannot run with CAREPLAN_CONSUMER_PARTITIONS=4" in said
    assert "order across aggregates" in said


async def test_operations_know_a_partitioned_service(
    tmp_path: Path, nats_server: EmbeddedNats, backend_settings: Settings
) -> None:
    """The instance's own status record and the service's (readiness shows both), the backlog
    over the partitions' durables, `store check|recover` naming each partition's durable, and
    `deadletter park` moving only the position of the partition that decides the message."""
    from services.api.health import Readiness
    from services.api.metrics import consumer_families
    from services.operations.recovery import StoreRecovery, park
    from services.registry import service
    from services.shared.bus import connect
    from services.shared.health import read_statuses

    settings = backend_settings.model_copy(
        update={"data_dir": tmp_path / "data", "nats_url": nats_server.url, "consumer_partitions": PARTITIONS}
    )
    care = CareApplication(settings)
    plan = care.handle(c.DraftCarePlan(client_id="client-1", title="Ops", strategy="short_term_moderate",
                                       therapy_models=["steady_drive"]), META).aggregate_id
    course = care.handle(c.StartCourse(plan_id=plan, modality=Modality.INTERPERSONAL, planned_sessions=12),
                         META).aggregate_id

    def submit() -> None:
        care.handle(c.SubmitQuestionnaire(course_id=course, instrument="PHQ-9", answers=[1] * 9, answered_at=WHEN), META)

    submit()
    nc = await connect(nats_server.url, name="careplan-test")
    js = nc.jetstream()
    try:
        async with InProcessRelay(settings, nats_server.url) as relay:
            running = service("assessment").running(settings)
            await running.start()
            try:
                await until(lambda: len(running.running) == PARTITIONS, "the instance to consume every partition")
                await until(lambda: sum(running.progress().values()) >= 1, "the submission to be scored")
                deadline = asyncio.get_running_loop().time() + 30
                while True:
                    records = await read_statuses(js, ["service:assessment", "service:assessment.i0"])
                    if len(records) == 2:
                        break
                    assert asyncio.get_running_loop().time() < deadline, records
                    await asyncio.sleep(0.3)
                assert records["service:assessment.i0"].reason == f"partitions 0, 1, 2, 3 of {PARTITIONS}"
                assert records["service:assessment"].status == "ok"
                shown = (await Readiness(settings).report())["components"]
                assert list(shown).index("service:assessment.i0") == list(shown).index("service:assessment") + 1
            finally:
                await running.stop()
            # Stopped: what arrives waits on every partition's durable (no unpartitioned one exists).
            for _ in range(3):
                submit()
            await relay.wait_position(care.recorder.max_notification_id())
        pending = {s.labels["service"]: s.value for s in (await consumer_families(settings))[0].samples}
        assert pending["assessment"] == 3
        # store check names each partition's durable: all in line
        recovery = StoreRecovery(settings, "assessment", js)
        try:
            diagnosis, _ = await recovery.diagnose()
        finally:
            recovery.close()
        assert [c.name for c in diagnosis.consumers] == ["assessment", *(f"assessment-p{k}" for k in range(PARTITIONS))]
        assert diagnosis.healthy
        # park: the last submission set aside; only its partition's position moves past it
        last = (await read_stream(nats_server.url))[-1]
        info = await js.get_msg(settings.stream_name, seq=1, subject=last.subject, next=True, direct=True)
        while True:  # the stream sequence of the last message on that subject
            try:
                info = await js.get_msg(settings.stream_name, seq=info.seq + 1, subject=last.subject, next=True,
                                        direct=True)
            except Exception:  # noqa: BLE001 - no later one
                break
        from services.assessment.service import AssessmentApplication
        from services.shared.tracking import partition_of, stream_tracking_name

        letter = await park(settings, "assessment", info.seq, js, reason="set aside in the test")
        assert letter.service == "assessment"
        owner = partition_of(last.subject, PARTITIONS)
        app = AssessmentApplication(settings)
        try:
            moved = {k: app.process_recorder.max_tracking_id(stream_tracking_name(settings.stream_name, f"assessment-p{k}"))
                     for k in range(PARTITIONS)}
        finally:
            app.close()
        assert moved[owner] == info.seq
        assert all((position or 0) < info.seq for k, position in moved.items() if k != owner)
    finally:
        await nc.close()
        care.close()


def test_careplan_up_runs_the_instances_set_of_each_partitionable_service(tmp_path: Path) -> None:
    """``CAREPLAN_SERVICE_INSTANCES=2``: two processes of each service over 8 partitions, one
    of subscriptions (unpartitioned: it would refuse partitions), one of everything else."""
    from services.registry import PROCESSES, SERVICES
    from services.system import System, process_of

    env = {"CAREPLAN_NATS_URL": "nats://127.0.0.1:1"}
    children = System(Settings(data_dir=tmp_path, service_instances=2)).make_children(env, tmp_path)
    names = [child.name for child in children]
    assert {process_of(n) for n in names} == {p.name for p in PROCESSES}
    for s in SERVICES:
        mine = [child for child in children if process_of(child.name) == s.process]
        partitions = {child.env["CAREPLAN_CONSUMER_PARTITIONS"] for child in mine}
        if s.unpartitioned is not None:
            assert (len(mine), partitions) == (1, {"0"}), s.name
        else:
            assert [c.name for c in mine] == [s.process, f"{s.process}#2"] and partitions == {"8"}, s.name
    assert len({child.ready_file for child in children}) == len(children)
    single = System(Settings(data_dir=tmp_path)).make_children(env, tmp_path)
    assert [child.name for child in single] == [p.name for p in PROCESSES]
