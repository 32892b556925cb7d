"""``careplan bench audit``.

(a) Point-in-time replay of a 10,000-event care plan: the auditors' path (read the events,
    fold those recorded by the moment; ``careplan audit replay --at`` then renders the state)
    at the moment of its last event, vs. the library replaying the same stored events (``repository.get``, no
    snapshot, no cache), same store, same run. Target ≥ 1× (point-in-time costs nothing extra).
(b) ``verify`` of 100,000 stored events: recomputing the hash chain, events/s.
"""

from __future__ import annotations

import gc
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

from eventsourcing.persistence import StoredEvent
from rich.console import Console
from rich.table import Table

from domain.base import Actor, CommandContext, Role, project
from domain.catalogues.care import CopingSkill
from services.audit import reading
from services.audit.integrity import verify_store
from services.care import commands as c
from services.care.application import CareApplication
from services.shared.commands import CommandMeta
from services.shared.persistence import drop_postgres_schemas
from services.shared.settings import Settings

REPLAY_TARGET = 1.0
META = CommandMeta(actor=Actor(id="clinician-17", role=Role.CLINICIAN))


def _best(runs: int, work: object) -> float:
    best = float("inf")
    for _ in range(runs):
        gc.collect()  # each run starts from the same heap, whichever side ran before
        start = time.perf_counter()
        work()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return best


def _long_plan(settings: Settings, events: int) -> tuple[object, object]:
    """A plan of ``events`` events, written in bulk through the recorder (its chain included)."""
    app = CareApplication(settings)
    plan = app.handle(c.DraftCarePlan(client_id="client-1", title="Long", strategy="short_term_moderate",
                                      therapy_models=["steady_drive"]), META).aggregate_id
    app.handle(c.TargetCopingSkill(plan_id=plan, skill=CopingSkill.COMMUNICATION), META)
    aggregate = app.get_plan(plan)
    batch = []
    start = datetime.now(UTC)
    for i in range(events - 2):
        ctx = CommandContext(actor=META.actor, at=start + timedelta(milliseconds=i + 1), correlation_id=uuid4())
        aggregate.record_skill_progress(CopingSkill.COMMUNICATION, note=f"Practised an I-statement ({i})", ctx=ctx)
        batch.extend(app.mapper.to_stored_event(e) for e in aggregate.collect_events())
        if len(batch) >= 1000:
            app.recorder.insert_events(batch)
            batch = []
    if batch:
        app.recorder.insert_events(batch)
    return app, plan


def measure_replay(settings: Settings, events: int) -> tuple[float, float]:
    app, plan = _long_plan(settings.model_copy(update={"snapshot_interval": 0, "aggregate_cache_size": 0}), events)
    try:
        last = list(app.history(plan))[-1].timestamp  # type: ignore[attr-defined]

        def library() -> None:
            app.repository.get(plan, projector_func=project)  # type: ignore[attr-defined]

        with reading.Stores(settings) as stores:

            def point_in_time() -> None:
                _, aggregate = reading.aggregate_at(stores, plan, at=last)  # type: ignore[arg-type]
                assert aggregate.version == events

            ours, raw = float("inf"), float("inf")
            for _ in range(7):  # interleaved, so neither side always meets a warmer cache
                ours, raw = min(ours, _best(1, point_in_time)), min(raw, _best(1, library))
    finally:
        app.close()  # type: ignore[attr-defined]
    return events / ours, events / raw


def measure_verify(settings: Settings, events: int) -> float:
    app = CareApplication(settings)
    try:
        written = 0
        topic = "services.audit:bench"
        while written < events:
            aggregate = uuid4()
            batch = [StoredEvent(originator_id=aggregate, originator_version=v, topic=topic,
                                 state=b'{"note":"Practised an I-statement before a difficult call"}' + bytes(100))
                     for v in range(1, min(1000, events - written) + 1)]
            app.recorder.insert_events(batch)
            written += len(batch)
    finally:
        app.close()
    start = time.perf_counter()
    report = verify_store(settings, "care")
    elapsed = time.perf_counter() - start
    assert report.ok and report.events == events, report
    return events / elapsed


def run_audit_benchmark(base: Settings, *, events: int, verify_events: int, console: Console) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="careplan-bench-audit-") as tmp:
        settings = base.model_copy(update={"data_dir": Path(tmp) / "replay", "postgres_schema_prefix": f"benchaudit{uuid4().hex[:6]}"})
        try:
            ours, raw = measure_replay(settings, events)
        finally:
            if settings.database == "postgres":
                drop_postgres_schemas(settings)
        settings = settings.model_copy(update={"data_dir": Path(tmp) / "verify", "postgres_schema_prefix": f"benchaudit{uuid4().hex[:6]}"})
        try:
            verify_rate = measure_verify(settings, verify_events)
        finally:
            if settings.database == "postgres":
                drop_postgres_schemas(settings)
    ratio = ours / raw
    table = Table(title=f"careplan bench audit ({base.database})")
    for column in ("measure", "careplan", "library", "ratio", "target"):
        table.add_column(column)
    table.add_row(f"replay of a {events:,}-event plan at a moment, events/s", f"{ours:,.0f}", f"{raw:,.0f}",
                  f"{ratio:.2f}", f"≥ {REPLAY_TARGET}")
    table.add_row(f"verify of {verify_events:,} stored events, events/s", f"{verify_rate:,.0f}", "", "", "")
    console.print(table)
    print(f"RESULT audit_replay_at ratio={ratio:.2f} target={REPLAY_TARGET}")
    print(f"RESULT audit_verify events_per_s={verify_rate:.0f}")
    return {"replay_ratio": ratio, "verify_rate": verify_rate}
