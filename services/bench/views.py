"""``careplan bench views``: the read models' projection and their busiest query.

(a) projection catch-up: the views built from zero over a care store of N plans (each drafted,
    activated, re-planned, with a course, sessions held, skill notes), in stored events per
    second, against the library's plain replay of the same events (``Repository.get`` of
    every aggregate in that store, cache and snapshots off); target ≥ 0.5×;
(b) caseload query p50/p99 with that many plans (10,000 by default): a clinician's page of
    their 50 clients, a supervisor's first page, and a filtered page of every plan, each
    after the ``catch_up()`` the API runs before a read. Scores are added to the view store
    directly (three per plan), as the assessment service would have.
"""

from __future__ import annotations

import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

from eventsourcing.application import Application
from rich.console import Console
from rich.table import Table

from domain.base import Actor, CommandContext, Role
from domain.care_plan import CarePlan
from domain.catalogues.care import CopingSkill
from domain.catalogues.modalities import Modality
from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from domain.therapy_course import TherapyCourse
from services.bench.store import _bench_settings
from services.care.application import CareApplication
from services.shared.persistence import eventsourcing_env, paged_notifications
from services.shared.settings import Settings
from services.views.projection import Projection
from services.views.queries import Views
from services.views.store import moment

CATCH_UP_TARGET = 0.5
START = datetime(2026, 1, 5, 9, tzinfo=UTC)
CLIENTS_PER_CLINICIAN = 50


def populate(settings: Settings, plans: int, seed: int = 15) -> int:
    """``plans`` plans with a course each in the care store; returns the stored events."""
    rng = random.Random(seed)
    app = CareApplication(settings.model_copy(update={"snapshot_interval": 0}))
    try:
        batch: list[object] = []
        for n in range(plans):
            clinician = Actor(id=f"clinician-{n // CLIENTS_PER_CLINICIAN}", role=Role.CLINICIAN)
            at = START + timedelta(minutes=n)
            ctx = CommandContext(actor=clinician, at=at, correlation_id=uuid.uuid4())
            plan = CarePlan.draft(uuid.uuid4(), client_id=f"client-{n}", title="Low mood and worry",
                                  strategy=Strategy.SHORT_TERM_MODERATE, therapy_models=[TherapyModel.STEADY_PROGRESS],
                                  ctx=ctx)
            plan.record_consent(ctx=ctx)
            plan.explain_confidentiality(ctx=ctx)
            goal = uuid.uuid4()
            plan.add_goal(goal, description="Walk most days", ctx=ctx)
            plan.agree_goal(goal, ctx=ctx)
            plan.activate(ctx=ctx)
            plan.target_coping_skill(CopingSkill.MINDFULNESS_EXERCISES, ctx=ctx)
            for _ in range(rng.randint(0, 4)):
                plan.record_skill_progress(CopingSkill.MINDFULNESS_EXERCISES, note="Practised daily", ctx=ctx)
            if rng.random() < 0.3:
                plan.change_strategy(Strategy.MID_TERM_IN_DEPTH, reason="More depth needed", ctx=ctx)
            if rng.random() < 0.2:
                plan.raise_risk(rng.choice([RiskLevel.LOW, RiskLevel.MODERATE, RiskLevel.HIGH]), reason="Review",
                                ctx=ctx)
            course = TherapyCourse.start(uuid.uuid4(), plan_id=plan.id, client_id=plan.client_id,
                                         modality=Modality.INTERPERSONAL, planned_sessions=12, ctx=ctx)
            for week in range(4):
                session = uuid.uuid4()
                course.schedule_session(session, scheduled_for=at + timedelta(weeks=week + 1), ctx=ctx)
                if week < 2:
                    course.hold_session(session, held_at=at + timedelta(weeks=week + 1), ctx=ctx)
            batch += [plan, course]
            if len(batch) >= 200:
                app.save(*batch)
                batch = []
        if batch:
            app.save(*batch)
        return int(app.recorder.max_notification_id() or 0)
    finally:
        app.close()


def measure_catch_up(settings: Settings) -> tuple[float, float, int]:
    """(projection events/s, library replay events/s, events) over the same care store."""
    events = 0
    ids: list[uuid.UUID] = []
    env = eventsourcing_env(settings, "care")
    env["IS_SNAPSHOTTING_ENABLED"] = "n"
    env.pop("AGGREGATE_CACHE_MAXSIZE", None)
    # the library's own Application on the care store (named so, as PostgreSQL names its tables by it)
    plain = type("CareReplay", (Application,), {"name": CareApplication.name})(env=env)
    try:
        seen: set[uuid.UUID] = set()
        for notification in paged_notifications(plain.recorder):
            events += 1
            if notification.originator_id not in seen:
                seen.add(notification.originator_id)
                ids.append(notification.originator_id)
        started = time.perf_counter()
        for aggregate_id in ids:
            plain.repository.get(aggregate_id)
        replay = events / (time.perf_counter() - started)
    finally:
        plain.close()
    projection = Projection(settings)
    try:
        started = time.perf_counter()
        projection.rebuild()
        ours = events / (time.perf_counter() - started)
    finally:
        projection.close()
    return ours, replay, events


def add_scores(views: Views, seed: int = 15) -> None:
    rng = random.Random(seed)
    rows = []
    for course_id, plan_id, client_id, started in views.store.rows(
            "SELECT course_id, plan_id, client_id, started_at FROM view_courses"):
        at = datetime.fromisoformat(started)
        for weeks, instrument, top in ((0, "PHQ-9", 27), (0, "GAD-7", 21), (4, "PHQ-9", 27)):
            rows.append((str(uuid.uuid4()), course_id, plan_id, client_id, instrument, rng.randint(0, top), "moderate",
                         moment(at + timedelta(weeks=weeks)), 0, None, 1))
    with views.store.transaction():
        views.store.executemany(
            "INSERT INTO view_scores (submission_id, course_id, plan_id, client_id, instrument, total, severity, "
            "answered_at, suicide_item_positive, suicide_risk, scored) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def measure_queries(settings: Settings, plans: int, rounds: int) -> list[float]:
    """Milliseconds per read (catch_up + a caseload or plans page), over ``rounds`` reads of each kind."""
    views = Views(settings, clock=lambda: START + timedelta(days=20))
    try:
        views.catch_up()
        add_scores(views)
        clinicians = max(1, plans // CLIENTS_PER_CLINICIAN)
        rng = random.Random(7)
        timings = []

        def clinician_page() -> None:
            who = rng.randrange(clinicians)
            clients = frozenset(f"client-{who * CLIENTS_PER_CLINICIAN + i}" for i in range(CLIENTS_PER_CLINICIAN))
            page = views.caseload(clients, clinician=f"clinician-{who}")
            assert page.total == min(CLIENTS_PER_CLINICIAN, plans - who * CLIENTS_PER_CLINICIAN)

        def supervisor_page() -> None:
            views.caseload(None, page=rng.randint(1, 5))

        def filtered_page() -> None:
            views.plans(None, status="active", risk=rng.choice(["none", "low", "high"]), page=rng.randint(1, 3))

        for _ in range(rounds):
            for read in (clinician_page, supervisor_page, filtered_page):
                started = time.perf_counter()
                views.catch_up()
                read()
                timings.append((time.perf_counter() - started) * 1000)
        return timings
    finally:
        views.close()


def run_views_benchmark(base: Settings, *, backend: str, plans: int, rounds: int, console: Console) -> dict[str, float]:
    with _bench_settings(base, backend) as settings:  # type: ignore[arg-type]
        populate(settings, plans)
        ours, replay, events = measure_catch_up(settings)
        timings = measure_queries(settings, plans, rounds)
    ratio = ours / replay
    p50 = statistics.median(timings)
    p99 = statistics.quantiles(timings, n=100)[98] if len(timings) >= 2 else timings[0]
    table = Table(title=f"careplan bench views ({backend}, {plans:,} plans)")
    table.add_column("measure")
    table.add_column("careplan", justify="right")
    table.add_column("library", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("target", justify="right")
    table.add_row(f"views from zero over {events:,} events, events/s", f"{ours:,.0f}", f"{replay:,.0f}",
                  f"{ratio:.2f}", f"≥ {CATCH_UP_TARGET}")
    table.add_row(f"caseload read p50 / p99 ms ({len(timings)} reads)", f"{p50:.1f} / {p99:.1f}", "", "", "")
    console.print(table)
    print(f"RESULT views_catch_up_{backend} ratio={ratio:.2f} target={CATCH_UP_TARGET}")
    print(f"LATENCY views_caseload_{backend} plans={plans} p50_ms={p50:.2f} p99_ms={p99:.2f}")
    return {"ratio": ratio, "p50_ms": p50, "p99_ms": p99}
