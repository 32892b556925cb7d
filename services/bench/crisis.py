"""``careplan bench crisis``.

(a) Latency from a questionnaire's commit to its EscalationRaised on the stream, at a
    steady rate of submissions (a share with PHQ-9 item 9 positive), through the real
    processes (`careplan up`: relays, assessment, escalation), against the floor measured in
    the same run: one store commit, then two JetStream hops with no processing.
    Target: p99 ≤ 3 × the floor's p99.
(b) Scoring throughput of the assessment service (consume, score, commit with tracking,
    ack) vs. a raw nats-py consumer on the same messages that only acks. Target ≥ 0.5×.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import nats
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.table import Table

from domain.base import Actor, Role
from domain.catalogues.modalities import Modality
from services.assessment.service import SUBJECTS as ASSESSMENT_SUBJECTS
from services.assessment.service import AssessmentApplication
from services.bench.relay import _percentile
from services.care import commands as c
from services.care.application import CareApplication
from services.shared.bus import EmbeddedNats, apply_streams_at
from services.shared.commands import CommandMeta
from services.shared.persistence import OutboxStores
from services.shared.runner import RunningService
from services.shared.settings import Settings
from services.system import System

LATENCY_TARGET = 3.0
THROUGHPUT_TARGET = 0.5
META = CommandMeta(actor=Actor(id="intake-portal", role=Role.INTEGRATION))
WHEN = "2026-05-04T09:00:00+00:00"


def _courses(app: CareApplication, n: int) -> list[UUID]:
    courses = []
    for i in range(n):
        plan = app.handle(
            c.DraftCarePlan(client_id=f"client-{i}", title="Bench", strategy="short_term_moderate", therapy_models=["steady_drive"]),
            CommandMeta(actor=Actor(id="clinician-1", role=Role.CLINICIAN)),
        ).aggregate_id
        courses.append(
            app.handle(c.StartCourse(plan_id=plan, modality=Modality.INTERPERSONAL, planned_sessions=12),
                       CommandMeta(actor=Actor(id="clinician-1", role=Role.CLINICIAN))).aggregate_id
        )
    return courses


def _submit(app: CareApplication, course: UUID, positive: bool) -> str:
    result = app.handle(
        c.SubmitQuestionnaire(course_id=course, instrument="PHQ-9", answers=[1] * 8 + [int(positive)], answered_at=WHEN), META
    )
    return str(result.event_ids[0])


# ---------------------------------------------------------------- (a) latency


#: The crisis path's hops, each from the previous mark to this one: the bench's commit
#: (wall clock), then each message's stream time (JetStream metadata) and each decision's
#: event time (ce-time, taken by the deciding service before its commit).
HOPS = (
    ("care relay: commit → submission on stream", "submission_stream"),
    ("assessment: receive + decide", "scored_created"),
    ("assessment: commit + relay → scored on stream", "scored_stream"),
    ("escalation: receive + decide", "raised_created"),
    ("escalation: commit + relay → raised on stream", "raised_stream"),
    ("delivery to the bench's subscriber", "arrived"),
)


def _when(msg: Any) -> float:
    return msg.metadata.timestamp.timestamp()


def _created(msg: Any) -> float:
    return datetime.fromisoformat(msg.headers["ce-time"]).timestamp()


async def _pipeline_latency(settings: Settings, url: str, rate: float, seconds: float, share: float
                            ) -> tuple[list[float], dict[str, list[float]]]:
    """The latencies (ms) from commit to EscalationRaised received, and the same split per hop."""
    committed: dict[str, float] = {}
    submitted: dict[str, float] = {}
    scored: dict[str, tuple[str, float, float]] = {}
    raised: dict[str, tuple[float, float, float]] = {}
    nc = await nats.connect(url)
    js = nc.jetstream()

    async def on_submitted(msg: Any) -> None:
        submitted[msg.headers["ce-id"]] = _when(msg)

    async def on_scored(msg: Any) -> None:
        body = json.loads(msg.data)
        scored[body["event_id"]] = (body["causation_id"], _created(msg), _when(msg))

    async def on_raised(msg: Any) -> None:
        arrived = time.time()
        raised[json.loads(msg.data)["source_event_id"]] = (_created(msg), _when(msg), arrived)

    subs = [
        await js.subscribe("care.clinical.v1.therapy_course.*.questionnaire_submitted", cb=on_submitted,
                           ordered_consumer=True, deliver_policy=DeliverPolicy.NEW),
        await js.subscribe("care.assessment.v1.*.*.assessment_scored", cb=on_scored, ordered_consumer=True,
                           deliver_policy=DeliverPolicy.NEW),
        await js.subscribe("care.escalation.v1.*.*.escalation_raised", cb=on_raised, ordered_consumer=True,
                           deliver_policy=DeliverPolicy.NEW),
    ]
    app = CareApplication(settings)
    courses = _courses(app, 10)
    rng = random.Random(7)
    total = int(rate * seconds)
    expected = 0

    def write() -> None:
        nonlocal expected
        start = time.monotonic()
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            positive = rng.random() < share
            event_id = _submit(app, courses[i % len(courses)], positive)
            if positive:
                committed[event_id] = time.time()
                expected += 1

    writer = threading.Thread(target=write)
    writer.start()
    await asyncio.to_thread(writer.join)
    deadline = time.monotonic() + 60
    while len(raised) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    for sub in subs:
        await sub.unsubscribe()
    await nc.close()
    app.close()
    latencies: list[float] = []
    hops: dict[str, list[float]] = {name: [] for name, _ in HOPS}
    for scored_id, (raised_created, raised_stream, arrived) in raised.items():
        submission, scored_created, scored_stream = scored.get(scored_id, ("", 0.0, 0.0))
        if submission not in committed:
            continue
        latencies.append((arrived - committed[submission]) * 1000)
        if submission not in submitted:
            continue
        marks = [committed[submission], submitted[submission], scored_created, scored_stream, raised_created,
                 raised_stream, arrived]
        for (name, _), before, after in zip(HOPS, marks, marks[1:], strict=False):
            hops[name].append((after - before) * 1000)
    return latencies, hops


class Probe(Aggregate):
    @event("Created")
    def __init__(self) -> None:
        pass

    @event("Pinged")
    def ping(self, n: int) -> None:
        pass


async def _floor_latency(tmp: Path, url: str, rate: float, count: int) -> list[float]:
    """One store commit, then two JetStream hops (publish → consumer re-publishes → subscriber)."""
    app = Application(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(tmp / "floor.sqlite")})
    probe = Probe()
    app.save(probe)
    nc = await nats.connect(url)
    js = nc.jetstream()
    arrived: dict[str, float] = {}
    done = asyncio.Event()

    async def forward(msg: Any) -> None:
        await js.publish("care.floor.hop2", msg.data)

    async def land(msg: Any) -> None:
        arrived[msg.data.decode()] = time.time()
        if len(arrived) >= count:
            done.set()

    subs = [
        await js.subscribe("care.floor.hop1", cb=forward, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW),
        await js.subscribe("care.floor.hop2", cb=land, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW),
    ]
    committed: dict[str, float] = {}
    start = time.monotonic()
    for i in range(count):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        probe.ping(i)
        committed[str(i)] = time.time()  # the commit is part of the floor
        await asyncio.to_thread(app.save, probe)
        await js.publish("care.floor.hop1", str(i).encode())
    await asyncio.wait_for(done.wait(), timeout=60)
    for sub in subs:
        await sub.unsubscribe()
    await nc.close()
    app.close()
    return [(arrived[k] - t) * 1000 for k, t in committed.items() if k in arrived]


def measure_latency(base: Settings, rate: float, seconds: float, share: float
                    ) -> tuple[list[float], list[float], dict[str, list[float]]]:
    with tempfile.TemporaryDirectory(prefix="careplan-bench-crisis-") as tmp:
        # A bench-only NATS without users (the bench subscribes and publishes as no careplan
        # user may): `up` given a NATS URL runs on it as it is.
        bus = EmbeddedNats(store_dir=Path(tmp) / "nats").start()
        try:
            settings = base.model_copy(update={"data_dir": Path(tmp) / "data", "database": "sqlite", "nats_url": bus.url})
            ours, floor, hops = _measure_on(settings, rate, seconds, share, Path(tmp))
        finally:
            bus.stop()
    return ours, floor, hops


def _measure_on(settings: Settings, rate: float, seconds: float, share: float, tmp: Path
                ) -> tuple[list[float], list[float], dict[str, list[float]]]:
    with System(settings) as system:
        ours, hops = asyncio.run(_pipeline_latency(settings, system.nats_url, rate, seconds, share))
        floor = asyncio.run(_floor_latency(tmp, system.nats_url, rate, max(50, len(ours))))
    return ours, floor, hops


# ---------------------------------------------------------------- (b) throughput


async def _scoring_rate(settings: Settings, url: str, count: int) -> float:
    """Steady-state rate: from the first decision recorded to the last (start-up excluded,
    as it is for the raw consumer). The count is the consumer's own, moved after each
    commit: the service runs on this event loop, and reading its store every millisecond
    from here took a tenth of the loop's time away from it. The store is counted at the end."""
    service = RunningService(settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS, with_relay=False)
    await service.start()
    consumer = service.consumer
    try:
        while not (first := consumer.processed):
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        while consumer.processed < count:
            await asyncio.sleep(0.001)
        elapsed = time.perf_counter() - start
    finally:
        await service.stop()
    stores = OutboxStores(settings, AssessmentApplication.name)
    try:
        recorded = stores.recorder.max_notification_id() or 0
    finally:
        stores.close()
    if recorded != count:
        msg = f"the assessment store holds {recorded} events after {count} messages decided (one each expected)"
        raise AssertionError(msg)
    return (count - first) / elapsed


async def _raw_ack_rate(url: str, count: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        "", durable="raw-ack", stream="CARE",
        config=ConsumerConfig(filter_subjects=ASSESSMENT_SUBJECTS, deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
                              max_ack_pending=64),
    )
    first = await sub.fetch(batch=1, timeout=5)
    await first[0].ack()
    start = time.perf_counter()
    seen = 1
    while seen < count:
        for msg in await sub.fetch(batch=64, timeout=5):
            await msg.ack()
            seen += 1
    elapsed = time.perf_counter() - start
    await nc.close()
    return (count - 1) / elapsed


def measure_throughput(base: Settings, submissions: int) -> tuple[float, float]:
    from services.shared.relay import Relay

    with tempfile.TemporaryDirectory(prefix="careplan-bench-scoring-") as tmp:
        settings = base.model_copy(update={"data_dir": Path(tmp) / "data", "database": "sqlite"})
        with EmbeddedNats(store_dir=Path(tmp) / "nats") as server:
            settings = settings.model_copy(update={"nats_url": server.url})
            asyncio.run(apply_streams_at(server.url, settings))  # as `careplan up` would
            app = CareApplication(settings)
            courses = _courses(app, 20)
            for i in range(submissions):
                _submit(app, courses[i % len(courses)], positive=False)
            last = app.recorder.max_notification_id() or 0
            app.close()

            async def relay_everything() -> None:
                stores = OutboxStores(settings, CareApplication.name)
                relay = Relay(settings, application=CareApplication.name, nats_url=server.url,
                              recorder=stores.recorder, mapper=stores.mapper, tracking=stores.tracking)
                stop = asyncio.Event()
                task = asyncio.create_task(relay.run(stop))
                while relay.stats.position < last:
                    await asyncio.sleep(0.01)
                stop.set()
                await task
                stores.close()

            asyncio.run(relay_everything())
            # both consume the same 20 course starts and N submissions from the stream
            raw = asyncio.run(_raw_ack_rate(server.url, submissions + 20))
            ours = asyncio.run(_scoring_rate(settings, server.url, submissions + 20))
    return ours, raw


def run_crisis_benchmark(
    base: Settings, *, rate: float, seconds: float, share: float, submissions: int, console: Console
) -> dict[str, float]:
    ours, floor, hops = measure_latency(base, rate, seconds, share)
    scoring, raw = measure_throughput(base, submissions)
    p50, p99, f50, f99 = _percentile(ours, 50), _percentile(ours, 99), _percentile(floor, 50), _percentile(floor, 99)
    latency_ratio = p99 / f99
    throughput_ratio = scoring / raw
    table = Table(title="careplan bench crisis (SQLite stores, embedded nats-server, services as processes)")
    for column in ("measure", "careplan", "floor / raw", "ratio", "target"):
        table.add_column(column)
    table.add_row(
        f"submission commit → EscalationRaised, {rate:.0f}/s, {len(ours)} crises",
        f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", f"p50 {f50:.1f} ms, p99 {f99:.1f} ms", f"{latency_ratio:.2f}",
        f"≤ {LATENCY_TARGET}",
    )
    table.add_row(f"scoring throughput, {submissions:,} submissions /s", f"{scoring:,.0f}", f"{raw:,.0f}",
                  f"{throughput_ratio:.2f}", f"≥ {THROUGHPUT_TARGET}")
    console.print(table)
    breakdown = Table(title="crisis path per hop (stream times from JetStream, decision times from ce-time; ms)")
    for column in ("hop", "p50", "p99", "n"):
        breakdown.add_column(column)
    for name, _ in HOPS:
        values = hops[name]
        breakdown.add_row(name, *(f"{_percentile(values, q):.1f}" if values else "-" for q in (50, 99)), str(len(values)))
    console.print(breakdown)
    for name, key in HOPS:
        if hops[name]:
            print(f"LATENCY crisis_hop_{key} p50_ms={_percentile(hops[name], 50):.1f} p99_ms={_percentile(hops[name], 99):.1f}")
    print(f"RESULT crisis_latency_p99 ratio={latency_ratio:.2f} target={LATENCY_TARGET} (lower is better)")
    print(f"RESULT scoring_throughput ratio={throughput_ratio:.2f} target={THROUGHPUT_TARGET}")
    return {"latency_ratio": latency_ratio, "throughput_ratio": throughput_ratio}
