"""The read models (services/views) on both stores: what a caseload row holds, exactly-once
catch-up by competing writers, rebuild from zero equal to the kept state over random command
sequences, and the API's /caseload, /plans and /outcomes with their role and client rules."""

from __future__ import annotations

import csv
import io
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.base import Actor, Role
from domain.errors import DomainError
from services.api.app import Api, create_app
from services.api.auth import TokenRegistry, add_token
from services.care import commands as c
from services.care.application import CommandMeta
from services.shared.clock import ManualClock
from services.shared.settings import Settings
from services.views.projection import Projection
from services.views.queries import Views
from tests.conftest import CLINICIAN, SUPERVISOR, T0
from tests.support.pipeline import Pipeline

ME = CommandMeta(actor=CLINICIAN)
OTHER = CommandMeta(actor=Actor(id="clinician-9", role=Role.CLINICIAN))
PHQ9_17 = [2, 2, 2, 2, 2, 2, 2, 2, 1]  # 17, item 9 positive
PHQ9_8 = [1, 1, 1, 1, 1, 1, 1, 1, 0]  # 8
GAD7_12 = [2, 2, 2, 2, 2, 1, 1]  # 12


@pytest.fixture
def pipeline(backend_settings: Settings) -> Iterator[Pipeline]:
    p = Pipeline(backend_settings, ManualClock(T0))
    try:
        yield p
    finally:
        p.close()


@pytest.fixture
def views(pipeline: Pipeline) -> Iterator[Views]:
    v = Views(pipeline.settings, clock=pipeline.clock)
    try:
        yield v
    finally:
        v.close()


def draft(p: Pipeline, client: str = "client-1", meta: CommandMeta = ME, title: str = "Low mood") -> tuple[UUID, UUID]:
    plan = p.care.handle(c.DraftCarePlan(client_id=client, title=title, strategy="short_term_moderate",
                                         therapy_models=["steady_drive"]), meta).aggregate_id
    course = p.care.handle(c.StartCourse(plan_id=plan, modality="interpersonal", planned_sessions=12), meta).aggregate_id
    return plan, course


def submit(p: Pipeline, course: UUID, instrument: str, answers: list[int], days: float = 0) -> None:
    p.care.handle(c.SubmitQuestionnaire(course_id=course, instrument=instrument, answers=answers,
                                        answered_at=T0 + timedelta(days=days)), ME)


# --------------------------------------------------------------------- the caseload row


def test_a_caseload_row_holds_status_risk_crises_course_scores_next_session_and_overdue(
        pipeline: Pipeline, views: Views) -> None:
    p = pipeline
    plan, course = draft(p)
    submit(p, course, "PHQ-9", PHQ9_17)  # item 9 positive: a crisis, risk raised, emergency support
    submit(p, course, "GAD-7", GAD7_12)
    p.care.handle(c.ScheduleSession(course_id=course, scheduled_for=T0 + timedelta(days=2)), ME)
    p.pump()
    views.catch_up()
    page = views.caseload(None)
    assert page.total == 1
    row = page.items[0]
    assert (row.plan_id, row.client_id, row.clinician, row.title, row.status) == (
        plan, "client-1", CLINICIAN.id, "Low mood", "draft")
    assert row.strategy == "emergency_support"
    assert row.risk_level != "none"
    assert row.open_crises == 1
    assert (row.course_id, row.course_phase, row.course_status) == (course, "initial", "active")
    assert row.last_phq9 is not None and (row.last_phq9.score, row.last_phq9.severity) == (17, "moderately_severe")
    assert row.last_gad7 is not None and (row.last_gad7.score, row.last_gad7.severity) == (12, "moderate")
    assert row.next_session_at is not None and T0 < row.next_session_at <= T0 + timedelta(days=2)
    assert row.questionnaires_overdue is False

    # a newer PHQ-9 replaces the last one; three weeks without one is overdue (default 2 weeks)
    submit(p, course, "PHQ-9", PHQ9_8, days=1)
    p.pump()
    p.clock.advance(days=22)  # type: ignore[attr-defined]
    views.catch_up()
    row = views.caseload(None).items[0]
    assert row.last_phq9 is not None and (row.last_phq9.score, row.last_phq9.severity) == (8, "mild")
    assert row.questionnaires_overdue is True
    patient = Views(p.settings.model_copy(update={"views_overdue_weeks": 4}), clock=p.clock,
                    projection=views.projection)
    assert patient.caseload(None).items[0].questionnaires_overdue is False

    # an ended course is never overdue; filters narrow the list
    p.care.handle(c.DiscontinueCourse(course_id=course, reason="moved away"), ME)
    views.catch_up()
    row = views.caseload(None).items[0]
    assert (row.course_status, row.questionnaires_overdue) == ("discontinued", False)
    assert views.caseload(frozenset({"client-2"})).total == 0
    assert views.caseload(None, clinician="clinician-9").total == 0
    assert views.caseload(None, status="draft").total == 1
    assert views.caseload(None, status="active").total == 0
    assert views.caseload(None, risk="none").total == 0
    for bad in ({"status": "open"}, {"risk": "extreme"}, {"page": 0}, {"size": 0}):
        with pytest.raises(ValueError):
            views.plans(None, **bad)  # type: ignore[arg-type]


def test_progress_shows_scores_bands_flags_reliable_change_and_sessions(pipeline: Pipeline, views: Views) -> None:
    p = pipeline
    plan, course = draft(p)
    submit(p, course, "PHQ-9", PHQ9_17)
    submit(p, course, "PHQ-9", PHQ9_8, days=14)  # 17 → 8: −9, reliable improvement
    submit(p, course, "GAD-7", GAD7_12, days=14)
    p.pump()
    views.catch_up()
    for chart in (views.progress(plan), views.progress(course)):
        assert chart.plan_id == plan and chart.course_ids == [course]
        phq = [pt for pt in chart.points if pt.instrument == "PHQ-9"]
        assert [(pt.total, pt.change, pt.reliable_improvement) for pt in phq] == [(17, 0, False), (8, -9, True)]
        assert [f.kind for f in chart.flags] == ["phq9_item9"]
        assert chart.sessions and all(s.course_id == course for s in chart.sessions)
        assert {b.instrument for b in chart.bands} == {"PHQ-9", "GAD-7"}
    assert views.progress(plan).kind == "plan" and views.progress(course).kind == "course"
    with pytest.raises(LookupError):
        views.progress(UUID(int=7))


def test_outcomes_count_finished_courses_in_the_period(pipeline: Pipeline, views: Views) -> None:
    p = pipeline
    _, recovered = draft(p, "client-1")
    submit(p, recovered, "PHQ-9", [2, 2, 2, 2, 2, 2, 2, 2, 0])  # 16
    submit(p, recovered, "PHQ-9", [1, 1, 1, 1, 0, 0, 0, 0, 0], days=30)  # 4
    p.care.handle(c.DiscontinueCourse(course_id=recovered, reason="goals met early"), ME)
    _, ongoing = draft(p, "client-2")
    submit(p, ongoing, "GAD-7", [0, 0, 1, 0, 0, 0, 0])  # 1 → 5: +4 reliable deterioration
    submit(p, ongoing, "GAD-7", [1, 1, 1, 1, 1, 0, 0], days=3)
    p.pump()
    views.catch_up()
    report = views.outcomes(None, start=None, end=None)
    assert {c_.course_id: c_.finished for c_ in report.courses} == {recovered: True, ongoing: False}
    assert (report.finished.courses, report.finished.recovered, report.finished.reliable_recovery) == (1, 1, 1)
    assert report.finished.recovery_rate == 1.0
    assert (report.all.courses, report.all.reliable_deterioration, report.all.reliable_deterioration_rate) == (2, 1, 0.5)
    assert views.outcomes(frozenset({"client-2"}), start=None, end=None).finished.courses == 0
    assert views.outcomes(None, start=T0 + timedelta(days=365), end=None).courses == []


# --------------------------------------------------------------------- exactly once, rebuild


def test_competing_writers_apply_every_event_exactly_once(pipeline: Pipeline) -> None:
    p = pipeline
    for n in range(6):
        _, course = draft(p, f"client-{n}")
        submit(p, course, "PHQ-9", PHQ9_8)
    p.pump()
    first, second = Projection(p.settings, batch=3), Projection(p.settings, batch=3)
    try:
        threads = [threading.Thread(target=proj.catch_up) for proj in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # every event the views read, applied by one of the two, never by both
        relevant = sum(len(src.recorder.select_notifications(start=1, limit=100_000, topics=src.topics))
                       for src in first.sources.values() if src.topics)
        assert first.applied + second.applied == relevant
        assert first.store.positions() == {n: (s.recorder.max_notification_id() or 0)
                                           for n, s in first.sources.items()}
    finally:
        first.close()
        second.close()


def snapshot(projection: Projection) -> dict[str, list[tuple[Any, ...]]]:
    from services.views.store import VIEW_TABLES

    return {t: sorted(projection.store.rows(f"SELECT * FROM {t}")) for t in VIEW_TABLES}


ANSWERS = {"PHQ-9": st.lists(st.integers(0, 3), min_size=9, max_size=9),
           "GAD-7": st.lists(st.integers(0, 3), min_size=7, max_size=7)}
STEP = st.one_of(
    st.tuples(st.just("draft"), st.integers(0, 2)),
    st.tuples(st.just("submit"), st.integers(0, 5), st.sampled_from(["PHQ-9", "GAD-7"]).flatmap(
        lambda i: st.tuples(st.just(i), ANSWERS[i])), st.integers(0, 40)),
    st.tuples(st.just("schedule"), st.integers(0, 5), st.integers(1, 30)),
    st.tuples(st.just("hold"), st.integers(0, 5)),
    st.tuples(st.just("risk"), st.integers(0, 5), st.sampled_from(["low", "moderate", "high"])),
    st.tuples(st.just("strategy"), st.integers(0, 5), st.sampled_from(["long_term_deep_work", "combined_approach"])),
    st.tuples(st.just("end_course"), st.integers(0, 5), st.booleans()),
    st.tuples(st.just("pump"),),
    st.tuples(st.just("catch_up"),),
)


def run_step(p: Pipeline, kept: Projection, plans: list[tuple[UUID, UUID]], sessions: list[tuple[UUID, UUID]],
             step: tuple[Any, ...]) -> None:
    kind = step[0]
    pick = (lambda i: plans[i % len(plans)]) if plans else None
    try:
        if kind == "draft":
            plans.append(draft(p, f"client-{step[1]}"))
        elif kind == "pump":
            p.pump()
        elif kind == "catch_up":
            kept.catch_up()
        elif pick is None:
            return
        elif kind == "submit":
            instrument, answers = step[2]
            submit(p, pick(step[1])[1], instrument, answers, days=step[3])
        elif kind == "schedule":
            command = c.ScheduleSession(course_id=pick(step[1])[1], scheduled_for=T0 + timedelta(days=step[2]))
            p.care.handle(command, ME)
            sessions.append((command.course_id, command.session_id))
        elif kind == "hold" and sessions:
            course, session = sessions[step[1] % len(sessions)]
            p.care.handle(c.HoldSession(course_id=course, session_id=session, held_at=T0), ME)
        elif kind == "risk":
            p.care.handle(c.RaiseRisk(plan_id=pick(step[1])[0], level=step[2], reason="noted"), ME)
        elif kind == "strategy":
            p.care.handle(c.ChangeStrategy(plan_id=pick(step[1])[0], strategy=step[2], reason="agreed"), ME)
        elif kind == "end_course":
            course = pick(step[1])[1]
            p.care.handle(c.CompleteCourse(course_id=course) if step[2] else
                          c.DiscontinueCourse(course_id=course, reason="moved away"), ME)
    except DomainError:
        pass  # refused commands change nothing; the sequence goes on


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=1, max_size=25))
def test_rebuild_from_zero_equals_the_incrementally_kept_views(backend_settings: Settings, tmp_path: Path,
                                                               steps: list[tuple[Any, ...]]) -> None:
    # each example on stores of its own: a fresh data folder (SQLite) or schema prefix (PostgreSQL)
    example = tmp_path / uuid4().hex  # never reused, even when hypothesis runs an example again
    s = backend_settings.model_copy(update={"data_dir": example})
    if s.database == "postgres":
        s = s.model_copy(update={"postgres_schema_prefix": f"{backend_settings.postgres_schema_prefix}x{example.name[:8]}"})
    p = Pipeline(s, ManualClock(T0))
    kept = Projection(s, batch=2)  # batch boundaries inside every log
    try:
        plans: list[tuple[UUID, UUID]] = []
        sessions: list[tuple[UUID, UUID]] = []
        for step in steps:
            run_step(p, kept, plans, sessions, step)
        p.pump()
        kept.catch_up()
        incremental = snapshot(kept)
        assert len(incremental["view_plans"]) == len(plans)
        rebuilt = Projection(s)
        try:
            rebuilt.rebuild()
            assert snapshot(rebuilt) == incremental
        finally:
            rebuilt.close()
    finally:
        kept.close()
        p.close()
        if s.database == "postgres":
            from services.shared.persistence import drop_postgres_schemas

            drop_postgres_schemas(s)


# --------------------------------------------------------------------- the API


@pytest.fixture
def api(pipeline: Pipeline, views: Views, tmp_path: Path) -> tuple[TestClient, dict[str, dict[str, str]]]:
    path = tmp_path / "tokens.json"
    tokens = {
        "clinician": add_token(path, actor_id=CLINICIAN.id, role=Role.CLINICIAN, clients=("client-1", "client-2")),
        "colleague": add_token(path, actor_id="clinician-9", role=Role.CLINICIAN, clients=("client-1",)),
        "supervisor": add_token(path, actor_id=SUPERVISOR.id, role=Role.SUPERVISOR, clients=("*",)),
        "auditor": add_token(path, actor_id="auditor-1", role=Role.AUDITOR, clients=("*",)),
        "integration": add_token(path, actor_id="ehr-1", role=Role.INTEGRATION, clients=("client-1",)),
    }
    app_api = Api(pipeline.care, TokenRegistry.load(path), pipeline.escalation, pipeline.assessment)
    app_api.views = views
    client = TestClient(create_app(app_api), raise_server_exceptions=False)
    return client, {role: {"Authorization": f"Bearer {token}"} for role, token in tokens.items()}


def ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.text
    return {item["plan_id"] for item in response.json()["items"]}


def test_caseload_is_the_clinicians_own_within_the_tokens_clients(pipeline: Pipeline, api: Any) -> None:
    client, h = api
    mine, _ = draft(pipeline, "client-1")
    theirs, _ = draft(pipeline, "client-1", OTHER)
    elsewhere, _ = draft(pipeline, "client-3")
    # read right after the writes: the route catches the views up first
    assert ids(client.get("/caseload", headers=h["clinician"])) == {str(mine)}
    assert ids(client.get("/caseload", headers=h["colleague"])) == {str(theirs)}
    assert ids(client.get("/caseload", headers=h["supervisor"])) == {str(mine), str(theirs), str(elsewhere)}
    assert ids(client.get("/caseload?clinician=clinician-9", headers=h["supervisor"])) == {str(theirs)}
    assert ids(client.get(f"/caseload?clinician={CLINICIAN.id}", headers=h["clinician"])) == {str(mine)}
    refused = client.get("/caseload?clinician=clinician-9", headers=h["clinician"])
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("application/problem+json")
    for role in ("auditor", "integration"):
        assert client.get("/caseload", headers=h[role]).status_code == 403
    assert client.get("/caseload").status_code == 401
    for bad in ("status=open", "risk=extreme", "page=0", "size=501", "page=x", "clinician=%00"):
        answer = client.get(f"/caseload?{bad}", headers=h["supervisor"])
        assert answer.status_code == 422, bad
        assert answer.headers["content-type"].startswith("application/problem+json")


def test_plans_are_paged_filtered_and_kept_to_the_tokens_clients(pipeline: Pipeline, api: Any) -> None:
    client, h = api
    drafted = [draft(pipeline, "client-1")[0] for _ in range(3)]
    other, _ = draft(pipeline, "client-1", OTHER)
    hidden, _ = draft(pipeline, "client-3")
    first = client.get("/plans?size=2", headers=h["clinician"])
    assert first.headers["X-Total-Count"] == "4"  # every plan of its clients, whoever drafted it
    assert 'page=2' in first.headers["Link"]
    second = client.get("/plans?size=2&page=2", headers=h["clinician"])
    assert ids(first) | ids(second) == {*map(str, drafted), str(other)}
    assert "Link" not in second.headers
    assert ids(client.get("/plans?client=client-1&status=draft", headers=h["integration"])) == {
        *map(str, drafted), str(other)}
    assert ids(client.get("/plans?status=active", headers=h["supervisor"])) == set()
    assert str(hidden) in ids(client.get("/plans?client=client-3", headers=h["supervisor"]))
    assert client.get("/plans?client=client-3", headers=h["clinician"]).status_code == 403
    assert client.get("/plans", headers=h["auditor"]).status_code == 403
    assert client.get("/plans?risk=none&page=-1", headers=h["clinician"]).status_code == 422


def test_outcomes_as_json_and_csv_within_the_tokens_clients(pipeline: Pipeline, api: Any) -> None:
    client, h = api
    for who, answers in (("client-1", [PHQ9_17, PHQ9_8]), ("client-3", [PHQ9_8, PHQ9_17])):
        _, course = draft(pipeline, who)
        for day, a in enumerate(answers):
            submit(pipeline, course, "PHQ-9", a, days=day * 7)
        pipeline.care.handle(c.DiscontinueCourse(course_id=course, reason="ended"), ME)
    pipeline.pump()
    mine = client.get("/outcomes", headers=h["clinician"])
    assert mine.status_code == 200, mine.text
    assert [c_["client_id"] for c_ in mine.json()["courses"]] == ["client-1"]
    assert mine.json()["finished"]["reliable_improvement"] == 1
    everyone = client.get("/outcomes?from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z", headers=h["supervisor"])
    assert everyone.json()["finished"] | {} and everyone.json()["finished"]["courses"] == 2
    assert everyone.json()["finished"]["reliable_deterioration"] == 1
    table = client.get("/outcomes", headers={**h["supervisor"], "Accept": "text/csv"})
    assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert sorted((r["client_id"], r["phq9_first"], r["phq9_last"], r["reliable_improvement"]) for r in rows) == [
        ("client-1", "17", "8", "true"), ("client-3", "8", "17", "false")]
    assert client.get("/outcomes?from=2030-01-01T00:00:00Z", headers=h["supervisor"]).json()["courses"] == []
    for bad, status in (("from=2027-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", 400), ("from=2026-01-01T00:00:00", 422),
                        ("to=yesterday", 422)):
        answer = client.get(f"/outcomes?{bad}", headers=h["supervisor"])
        assert answer.status_code == status, (bad, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
    for role in ("auditor", "integration"):
        assert client.get("/outcomes", headers=h[role]).status_code == 403


def test_with_a_cipher_key_a_plans_title_is_not_readable_in_the_view_store(tmp_path: Path) -> None:
    from eventsourcing.cipher import AESCipher

    s = Settings(data_dir=tmp_path, cipher_key=AESCipher.create_key(32))
    p = Pipeline(s, ManualClock(T0))
    views = Views(s, clock=p.clock)
    try:
        sentinel = "SENTINEL-views-title"
        draft(p, title=sentinel)
        views.catch_up()
        assert views.caseload(None).items[0].title == sentinel
        files = [f for f in tmp_path.glob("views.sqlite*") if f.is_file()]
        assert files and not any(sentinel.encode() in f.read_bytes() for f in files)
    finally:
        views.close()
        p.close()


def test_a_store_whose_log_ends_before_the_views_position_makes_the_views_rebuild(pipeline: Pipeline,
                                                                                   views: Views) -> None:
    p = pipeline
    plan, _ = draft(p)
    views.catch_up()
    kept = snapshot(views.projection)
    end = p.care.recorder.max_notification_id()
    # as after a store restored from an older backup: the views were further than its log now ends
    with views.store.transaction():
        views.store.execute("UPDATE view_positions SET position = ? WHERE source = 'care'", (end + 5,))
        views.store.execute("DELETE FROM view_courses")
    views.catch_up()
    assert views.store.positions()["care"] == end
    assert snapshot(views.projection) == kept
    assert views.caseload(None).items[0].plan_id == plan


@pytest.mark.postgres
def test_a_lost_postgresql_connection_is_replaced_at_the_next_use(tmp_path: Path, postgres_available: None) -> None:
    import psycopg

    from tests.conftest import PG, drop_schemas, postgres_settings

    s = postgres_settings(tmp_path)
    p = Pipeline(s, ManualClock(T0))
    views = Views(s, clock=p.clock)
    try:
        draft(p)
        views.catch_up()
        pid = views.store.conn.info.backend_pid
        with psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"], password=PG["password"] or None,
                             dbname=PG["dbname"], autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        draft(p, "client-2")
        with pytest.raises(psycopg.OperationalError):
            views.catch_up()  # the call that meets the loss fails ...
        views.catch_up()  # ... the next one connects again
        assert views.caseload(None).total == 2
    finally:
        views.close()
        p.close()
        drop_schemas(s)


def test_a_read_that_is_current_reads_no_log_and_a_write_before_it_is_in_it(
        pipeline: Pipeline, views: Views, monkeypatch: pytest.MonkeyPatch) -> None:
    """The catch-up before a read: one statement (the positions and every log's end) when
    nothing is new; a write committed before the read is applied by it, reading only its log."""
    p = pipeline
    _, course = draft(p)
    submit(p, course, "PHQ-9", PHQ9_17)  # a crisis: the escalation log moves too
    p.pump()
    views.catch_up()
    assert views.caseload(None).items[0].open_crises == 1
    assert views.projection._marks_sql  # the positions and the ends in one statement on this backend

    reads: list[tuple[str, str]] = []

    def counting(real: Any, key: tuple[str, str]) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            reads.append(key)
            return real(*args, **kwargs)
        return counted

    for name, source in views.projection.sources.items():
        for method in ("max_notification_id", "select_notifications", "select_events"):
            monkeypatch.setattr(source.recorder, method, counting(getattr(source.recorder, method), (name, method)))
    marks = 0
    real_marks = views.projection.marks

    def counted_marks() -> Any:
        nonlocal marks
        marks += 1
        return real_marks()

    monkeypatch.setattr(views.projection, "marks", counted_marks)
    for _ in range(3):
        views.catch_up()
        assert views.caseload(None).total == 1
    assert (reads, marks) == ([], 3)

    draft(p, client="client-2")  # written, not pumped: only the care log moved
    views.catch_up()
    assert views.caseload(None).total == 2
    assert reads and {store for store, _ in reads} == {"care"}, reads
    assert marks == 4


def test_views_that_cannot_be_read_answer_503_and_retry_after(api: Any, views: Views,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    client, h = api

    def locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    # the freshness check every read starts with (Projection.marks) is the first to meet the lock
    monkeypatch.setattr(views.projection, "marks", locked)
    for path in ("/caseload", "/plans", "/outcomes"):
        answer = client.get(path, headers=h["supervisor"])
        assert answer.status_code == 503, (path, answer.text)
        assert answer.json()["type"] == "/problems/views-unavailable" and answer.headers["Retry-After"] == "5"
    assert client.get("/problems/views-unavailable").status_code == 200
