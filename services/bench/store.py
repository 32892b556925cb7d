"""``careplan bench store``: the event store path of the care application against the plain
eventsourcing library, same backend, same run.

(a) commands saved per second: CareApplication commands vs. a plain ``Application`` with a
    trivial aggregate (load, one event, save; same cache settings);
(b) replay of one aggregate of N events (no cache, no snapshots): our pydantic/orjson
    mapper vs. the library's default JSON transcoder with its dataclass events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from rich.console import Console
from rich.table import Table

from domain.base import Actor, CommandContext, Role
from domain.care_plan import CarePlan
from domain.catalogues.care import CopingSkill
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from services.care import commands as c
from services.care.application import CareApplication
from services.shared.commands import CommandMeta
from services.shared.persistence import drop_postgres_schemas, eventsourcing_env
from services.shared.settings import Settings

ACTOR = Actor(id="clinician-17", role=Role.CLINICIAN)
NOTE = "Practised a breathing exercise before a difficult call; noticed the urge to withdraw."
SAVE_TARGET = 0.7
REPLAY_TARGET = 2.0


class Counter(Aggregate):
    """The library's trivial aggregate for the save baseline."""

    @event("Started")
    def __init__(self) -> None:
        self.count = 0

    @event("Incremented")
    def increment(self) -> None:
        self.count += 1


class Journal(Aggregate):
    """The library path for replay: the same payload as our events, default transcoder."""

    @event("Opened")
    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.notes: list[str] = []

    @event("NoteRecorded")
    def record(self, actor_id: str, role: str, correlation_id: uuid.UUID, skill: str, note: str) -> None:
        self.notes.append(note)


def _plain_env(settings: Settings, name: str) -> dict[str, str]:
    """The same backend as ours, with the library's default mapper and transcoder."""
    env = eventsourcing_env(settings, name)
    for key in ("MAPPER_TOPIC", "TRANSCODER_TOPIC", "CIPHER_TOPIC", "CIPHER_KEY", "AGGREGATE_CACHE_MAXSIZE"):
        env.pop(key, None)
    env["IS_SNAPSHOTTING_ENABLED"] = "n"
    return env


def _rate(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


@contextmanager
def _bench_settings(base: Settings, backend: Literal["sqlite", "postgres"]) -> Iterator[Settings]:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="careplan-bench-") as tmp:
        prefix = f"bench{uuid.uuid4().hex[:10]}"
        settings = base.model_copy(
            update={"database": backend, "data_dir": Path(tmp), "postgres_schema_prefix": prefix, "cipher_key": None}
        )
        try:
            yield settings
        finally:
            if backend == "postgres":
                drop_postgres_schemas(settings)


def measure_saves(settings: Settings, commands: int, aggregates: int = 50) -> tuple[float, float]:
    ours = CareApplication(settings.model_copy(update={"snapshot_interval": 0}))
    plain = Application(env=_plain_env(settings, "plainsaves") | {"AGGREGATE_CACHE_MAXSIZE": str(settings.aggregate_cache_size)})
    try:
        meta = CommandMeta(actor=ACTOR)
        plan_ids = [
            ours.handle(
                c.DraftCarePlan(client_id=f"client-{i}", title="Bench", strategy=Strategy.SHORT_TERM_MODERATE,
                                therapy_models=[TherapyModel.STEADY_PROGRESS]),
                meta,
            ).aggregate_id
            for i in range(aggregates)
        ]
        for plan_id in plan_ids:
            ours.handle(c.TargetCopingSkill(plan_id=plan_id, skill=CopingSkill.COMMUNICATION), meta)
        counters = []
        for _ in range(aggregates):
            counter = Counter()
            plain.save(counter)
            counters.append(counter.id)

        # Interleave halves so drift in machine load hits both sides alike.
        half = commands // 2
        ours_rate = plain_rate = 0.0
        for _ in range(2):
            plain_rate += _rate(half, lambda: run_plain_n(plain, counters, half)) / 2
            ours_rate += _rate(half, lambda: run_ours_n(ours, plan_ids, half, meta)) / 2
        return ours_rate, plain_rate
    finally:
        ours.close()
        plain.close()


def run_plain_n(plain: Application, counters: list[Any], n: int) -> None:
    for i in range(n):
        counter = plain.repository.get(counters[i % len(counters)])
        counter.increment()
        plain.save(counter)


def run_ours_n(ours: CareApplication, plan_ids: list[uuid.UUID], n: int, meta: CommandMeta) -> None:
    for i in range(n):
        ours.handle(c.RecordSkillProgress(plan_id=plan_ids[i % len(plan_ids)], skill=CopingSkill.COMMUNICATION, note=NOTE), meta)


def measure_replay(settings: Settings, events: int, rounds: int = 3) -> tuple[float, float]:
    ours = CareApplication(settings.model_copy(update={"snapshot_interval": 0, "aggregate_cache_size": 0}))
    plain = Application(env=_plain_env(settings, "plainreplay"))
    try:
        at = datetime(2026, 1, 5, 9, tzinfo=UTC)
        correlation = uuid.uuid4()
        ctx = CommandContext(actor=ACTOR, at=at, correlation_id=correlation)
        plan = CarePlan.draft(
            uuid.uuid4(), client_id="client-1", title="Long history", strategy=Strategy.SHORT_TERM_MODERATE,
            therapy_models=[TherapyModel.STEADY_PROGRESS], ctx=ctx,
        )
        plan.target_coping_skill(CopingSkill.COMMUNICATION, ctx=ctx)
        journal = Journal(client_id="client-1")
        while plan.version < events:
            plan.record_skill_progress(CopingSkill.COMMUNICATION, note=NOTE, ctx=ctx)
            journal.record(ACTOR.id, ACTOR.role.value, correlation, "communication", NOTE)
            if plan.version % 500 == 0:
                ours.save(plan)
                plain.save(journal)
        ours.save(plan)
        plain.save(journal)

        ours_rate = plain_rate = 0.0
        for _ in range(rounds):
            plain_rate += _rate(events, lambda: plain.repository.get(journal.id)) / rounds
            ours_rate += _rate(events, lambda: ours.get_plan(plan.id)) / rounds
        assert ours.get_plan(plan.id).version == plan.version
        return ours_rate, plain_rate
    finally:
        ours.close()
        plain.close()


def run_store_benchmark(
    base: Settings, *, backend: Literal["sqlite", "postgres"], commands: int, replay_events: int, console: Console
) -> dict[str, float]:
    with _bench_settings(base, backend) as settings:
        ours_saves, plain_saves = measure_saves(settings, commands)
        ours_replay, plain_replay = measure_replay(settings, replay_events)
    table = Table(title=f"careplan bench store ({backend})")
    table.add_column("measure")
    table.add_column("careplan", justify="right")
    table.add_column("library", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("target", justify="right")
    save_ratio, replay_ratio = ours_saves / plain_saves, ours_replay / plain_replay
    table.add_row("commands saved /s", f"{ours_saves:,.0f}", f"{plain_saves:,.0f}", f"{save_ratio:.2f}", f"≥ {SAVE_TARGET}")
    table.add_row(
        f"replay of {replay_events:,} events, events/s", f"{ours_replay:,.0f}", f"{plain_replay:,.0f}",
        f"{replay_ratio:.2f}", f"≥ {REPLAY_TARGET}",
    )
    console.print(table)
    print(f"RESULT store_save_{backend} ratio={save_ratio:.2f} target={SAVE_TARGET}")
    print(f"RESULT store_replay_{backend} ratio={replay_ratio:.2f} target={REPLAY_TARGET}")
    return {"save_ratio": save_ratio, "replay_ratio": replay_ratio}
