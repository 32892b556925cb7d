"""``careplan bench scale``: a hospital network's year of events, and what auditors read of it.

Building (quickly, through the stores' own recorders): a handful of template clients' stories
are told through the real applications — the care application's commands, the assessment,
escalation and scheduling services and the care policies deciding each published event as
their consumers would (no NATS: each stored event becomes its CloudEvent and is decided at
once) — with a manual clock so crises time out to the next level. Their stored events (with
what the indexes keep of each) are then cloned for as many clients as it takes to reach N
events: every id in the bytes is mapped to a new one per clone (aggregate ids to new ids and
event ids to the ids derived from those, so causation stays whole; client ids renamed), and
the clones are written through each store's recorder in batches, hash chain and indexes
included. The template: steady courses, crises resolved after a timeout, and a few crises
left open (acknowledged or still escalating).

Measuring, each as a ratio against reading only the events of the answer straight from the
store in the same run (their rows by aggregate and version, decoded): an event's causation
trace, one client's export (JSON), one aggregate's history and its point-in-time replay, the
open-crises list (a page of 100, as ``GET /escalations`` answers it: at a process's start —
a new view, seeded from the index of open items — and warm), a clinician's caseload and outcomes
from the read models (after the catch-up the API runs before a read; the views are built from
zero once, timed), and ``audit verify`` in events/s. Target ≥ 0.5× for each ratio
(no read costs more than twice the events it returns), ≥ 50,000 events/s for verify.

The stores are written without per-client keys (issue 16's ``client_keys``): the clones are
made by substituting ids in the stored bytes, which sealed bytes do not allow. ``careplan bench
store`` measures what per-client keys cost a save and a replay.
"""

from __future__ import annotations

import gc
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from domain.base import Actor, Role, derive_event_id, project
from domain.catalogues.care import CopingSkill
from domain.catalogues.instruments import Instrument
from domain.catalogues.modalities import Modality
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from services.audit import reading
from services.audit.export import export_json, members
from services.audit.integrity import RECORD_STORES, verify_store
from services.care import commands as c
from services.shared.clock import ManualClock
from services.shared.commands import CommandMeta
from services.shared.indexes import IndexedStoredEvent, IndexEntry, entry_of
from services.shared.persistence import drop_postgres_schemas, paged_notifications
from services.shared.settings import Settings

RATIO_TARGET = 0.5
VERIFY_TARGET = 50_000
DEFAULT_EVENTS = {"postgres": 1_000_000, "sqlite": 200_000}
START = datetime(2026, 1, 5, 9, tzinfo=UTC)
CLINICIAN = Actor(id="clinician-17", role=Role.CLINICIAN)
PORTAL = Actor(id="intake-portal", role=Role.INTEGRATION)
ONCALL = Actor(id="oncall-sup-4", role=Role.SUPERVISOR)
SUPERVISOR = Actor(id="supervisor-3", role=Role.SUPERVISOR)
#: The template's clients: (name, story). Most courses are steady; some have a crisis.
TEMPLATE = (("steady", "steady"), ("steady", "steady"), ("steady", "steady"), ("steady", "steady"),
            ("steady", "steady"), ("crisis", "resolved"), ("crisis", "resolved"), ("crisis", "open"))
UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NS = uuid.UUID("6f1c4a53-3a1b-4d0e-9f55-5c5be0a1c017")
BATCH = 2000


# --------------------------------------------------------------------------- the template


def _client(n: int) -> str:
    return f"tmpl-client-{n:02d}x"


def _tell(care: Any, clock: ManualClock, client: str, story: str, pump: Callable[[], None], escalation: Any) -> None:
    """One client's course: plan, course, sessions, questionnaires (scored by the assessment
    service); with a crisis, a PHQ-9 with item 9 positive and what follows it."""
    meta = CommandMeta(actor=CLINICIAN)
    plan = care.handle(c.DraftCarePlan(client_id=client, title="Low mood after a move", strategy=Strategy.SHORT_TERM_MODERATE,
                                       therapy_models=[TherapyModel.STEADY_PROGRESS]), meta)
    pid = plan.aggregate_id
    story_meta = CommandMeta(actor=CLINICIAN, correlation_id=plan.correlation_id)
    care.handle(c.RecordConsent(plan_id=pid, note="Written consent to 16 weeks of therapy."), story_meta)
    care.handle(c.ExplainConfidentiality(plan_id=pid, note="Limits explained."), story_meta)
    goal = c.AddGoal(plan_id=pid, description="Enjoy weekends again")
    care.handle(goal, story_meta)
    care.handle(c.AgreeGoal(plan_id=pid, goal_id=goal.goal_id), story_meta)
    care.handle(c.ActivatePlan(plan_id=pid), story_meta)
    care.handle(c.TargetCopingSkill(plan_id=pid, skill=CopingSkill.COMMUNICATION), story_meta)
    course = care.handle(c.StartCourse(plan_id=pid, modality=Modality.INTERPERSONAL, planned_sessions=12), story_meta)
    cid = course.aggregate_id
    pump()
    portal = CommandMeta(actor=PORTAL, correlation_id=plan.correlation_id)
    for week in range(8):
        clock.advance(days=7)
        session = c.ScheduleSession(course_id=cid, scheduled_for=clock() + timedelta(days=1))
        care.handle(session, story_meta)
        if week % 4 == 0:
            for instrument, answers in ((Instrument.PHQ9, [2, 2, 1, 2, 1, 2, 1, 1, 0]), (Instrument.GAD7, [2, 1, 2, 1, 1, 1, 0])):
                care.handle(c.SubmitQuestionnaire(course_id=cid, instrument=instrument.value, answers=answers,
                                                  answered_at=clock()), portal)
        clock.advance(days=1)
        care.handle(c.HoldSession(course_id=cid, session_id=session.session_id, held_at=clock()), story_meta)
        care.handle(c.RecordSkillProgress(plan_id=pid, skill=CopingSkill.COMMUNICATION, note="Practised an I-statement"),
                    story_meta)
        pump()
    if story == "steady":
        return
    from services.escalation.commands import AcknowledgeEscalation, ResolveCrisis

    care.handle(c.SubmitQuestionnaire(course_id=cid, instrument=Instrument.PHQ9.value, answers=[2, 2, 2, 2, 2, 2, 2, 2, 1],
                                      answered_at=clock()), portal)
    pump()
    (crisis_id,) = care.get_plan(pid).open_crises
    clock.advance(hours=1)
    pump()
    escalation.handle(AcknowledgeEscalation(crisis_id=crisis_id, reason="Phoned the client; safety plan reviewed"),
                      CommandMeta(actor=ONCALL))
    pump()
    if story == "open":
        return
    clock.advance(hours=2)
    escalation.handle(ResolveCrisis(crisis_id=crisis_id, outcome="Client safe; follow-up tomorrow",
                                    reason="Risk reassessed by phone"), CommandMeta(actor=ONCALL))
    pump()
    clock.advance(days=1)
    care.handle(c.EndEmergencySupport(plan_id=pid, strategy=Strategy.MID_TERM_IN_DEPTH, reason="Crisis resolved"),
                CommandMeta(actor=SUPERVISOR))
    pump()


class Template:
    """The template clients' stored events per store, in log order, with their index entries."""

    def __init__(self, events: dict[str, list[tuple[Any, IndexEntry]]], clients: list[str]) -> None:
        self.events, self.clients = events, clients
        self.size = sum(len(v) for v in events.values())
        aggregates = {entry.originator_id for v in events.values() for _, entry in v}
        self.aggregates = sorted(str(a) for a in aggregates)
        #: event id → (its aggregate, version): event ids are derived, so a clone derives them again
        self.event_ids = {entry.event_id: (str(entry.originator_id), entry.version) for v in events.values() for _, entry in v}
        found: set[str] = set()
        for v in events.values():
            for stored, entry in v:
                found |= {m.decode() for m in UUID_RE.findall(stored.state)}
                found |= {m.decode() for m in UUID_RE.findall((entry.causation_id or "").encode())}
        self.others = sorted(found - set(self.aggregates) - set(self.event_ids))


def build_template(workdir: Path) -> Template:
    """The template clients' stories through the real applications on a scratch SQLite store."""
    from services.assessment.service import AssessmentApplication
    from services.care.application import CareApplication
    from services.escalation.service import EscalationApplication
    from services.scheduling.service import SchedulingApplication
    from services.shared.cloudevents import cloudevent, parse_inbound

    # the clones are made from the stored bytes (ids substituted), so the template is stored
    # without per-client keys (issue 16), as are the clones: see run_scale_benchmark
    settings = Settings(data_dir=workdir, database="sqlite", snapshot_interval=0, client_keys=False)
    clock = ManualClock(START)
    escalation = EscalationApplication(settings, clock=clock)
    care = CareApplication(settings, clock=clock, crises=escalation.crisis_held_open)
    assessment = AssessmentApplication(settings, clock=clock)
    scheduling = SchedulingApplication(settings, clock=clock)
    policies = CareApplication(settings, clock=clock)
    sources = {"care": care, "assessment": assessment, "escalation": escalation, "scheduling": scheduling}
    consumers = (policies, assessment, escalation, scheduling)
    relayed = dict.fromkeys(sources, 0)
    seq = [0]

    def pump() -> None:
        for _ in range(50):
            moved = 0
            for name, app in sources.items():
                for notification in app.recorder.select_notifications(start=relayed[name] + 1, limit=10_000):
                    message = cloudevent(name, notification, app.mapper.to_public_json(notification), relayed[name])
                    seq[0] += 1
                    inbound = parse_inbound(message.subject, message.headers, message.body, seq[0])
                    for consumer in consumers:
                        if consumer.reactions.event_class_of(inbound) is not None:
                            consumer.record_run(consumer.decide, [inbound], [])
                    relayed[name] = notification.id
                    moved += 1
            moved += escalation.fire_due_timers() + scheduling.fire_due_timers()
            if not moved:
                return
        msg = "the template's story kept moving"
        raise AssertionError(msg)

    try:
        clients = []
        for n, (_, story) in enumerate(TEMPLATE):
            clients.append(_client(n))
            _tell(care, clock, _client(n), story, pump, escalation)
        events: dict[str, list[tuple[Any, IndexEntry]]] = {}
        for name, app in sources.items():
            events[name] = [(n, entry_of(app.mapper.to_domain_event(n))) for n in paged_notifications(app.recorder)]
    finally:
        for app in (policies, care, assessment, escalation, scheduling):
            app.close()
    return Template(events, clients)


# --------------------------------------------------------------------------- cloning


class Clone:
    """The id map of one clone of the template."""

    def __init__(self, template: Template, unit: int) -> None:
        self.unit = unit
        ids: dict[bytes, bytes] = {}
        aggregates: dict[str, str] = {}
        for old in template.aggregates:
            aggregates[old] = str(uuid.uuid5(NS, f"{unit}:{old}"))
            ids[old.encode()] = aggregates[old].encode()
        for event_id, (aggregate, version) in template.event_ids.items():
            ids[event_id.encode()] = derive_event_id(aggregates[aggregate], version).encode()
        for old in template.others:
            ids[old.encode()] = str(uuid.uuid5(NS, f"{unit}:{old}")).encode()
        self.ids = ids
        self.clients = {old: f"client-{unit:06d}-{i}" for i, old in enumerate(template.clients)}
        self.clinician = f"clinician-{unit:06d}"
        self._client_bytes = [(f'"{old}"'.encode(), f'"{new}"'.encode()) for old, new in self.clients.items()]
        # each clone is one clinician's caseload (the template's plans were all drafted by one)
        self._client_bytes.append((f'"{CLINICIAN.id}"'.encode(), f'"{self.clinician}"'.encode()))

    def _sub(self, match: re.Match[bytes]) -> bytes:
        return self.ids.get(match.group(), match.group())

    def state(self, state: bytes) -> bytes:
        state = UUID_RE.sub(self._sub, state)
        for old, new in self._client_bytes:
            if old in state:
                state = state.replace(old, new)
        return state

    def text(self, value: str | None) -> str | None:
        return None if value is None else UUID_RE.sub(self._sub, value.encode()).decode()

    def uid(self, value: uuid.UUID | None) -> uuid.UUID | None:
        return None if value is None else uuid.UUID(self.ids[str(value).encode()].decode())

    def event(self, stored: Any, entry: IndexEntry) -> IndexedStoredEvent:
        oid = self.uid(entry.originator_id)
        assert oid is not None
        index = entry._replace(event_id=self.ids[entry.event_id.encode()].decode(), originator_id=oid,
                               causation_id=self.text(entry.causation_id),
                               client_id=self.clients.get(entry.client_id or "", entry.client_id),
                               parent_id=self.uid(entry.parent_id))
        return IndexedStoredEvent(oid, stored.originator_version, stored.topic, self.state(stored.state), index)


@contextmanager
def _recorders(settings: Settings) -> Iterator[dict[str, Any]]:
    stores = {name: reading.Store(settings, name) for name in RECORD_STORES}
    try:
        yield {name: store.recorder for name, store in stores.items()}
    finally:
        for store in stores.values():
            store.close()


def build(settings: Settings, template: Template, events: int) -> int:
    """Clones of the template until ``events`` are written; returns the clones."""
    units = max(1, -(-events // template.size))
    with _recorders(settings) as recorders:
        batches: dict[str, list[IndexedStoredEvent]] = {name: [] for name in template.events}
        for unit in range(units):
            clone = Clone(template, unit)
            for name, stored in template.events.items():
                batch = batches[name]
                batch += [clone.event(s, e) for s, e in stored]
                if len(batch) >= BATCH:
                    recorders[name].insert_events(batch)
                    batch.clear()
        for name, batch in batches.items():
            if batch:
                recorders[name].insert_events(batch)
    if settings.database == "postgres":
        _analyze(settings)
    return units


def _analyze(settings: Settings) -> None:
    """Statistics for the planner, as autovacuum would gather them after a bulk load."""
    from psycopg import sql

    from services.shared.persistence import _admin_connection

    with _admin_connection(settings) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema LIKE %s",
            (settings.postgres_schema_prefix.replace("_", "\\_") + "\\_%",)).fetchall()
        for schema, table in tables:
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, table)))


def data_size(settings: Settings) -> int:
    """Bytes on disk of the stores (SQLite files; PostgreSQL schemas' relations)."""
    if settings.database == "sqlite":
        return sum(p.stat().st_size for p in settings.data_dir.glob("*.sqlite*"))
    from services.shared.persistence import _admin_connection

    with _admin_connection(settings) as conn:
        row = conn.execute(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname LIKE %s AND c.relkind = 'r'", (settings.postgres_schema_prefix.replace("_", "\\_") + "\\_%",),
        ).fetchone()
        return int(row[0])


# --------------------------------------------------------------------------- measuring


def _best(work: Callable[[], Any], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def _pair(ours: Callable[[], Any], direct: Callable[[], Any], runs: int = 9) -> tuple[float, float]:
    """Best times of both, interleaved (neither always meets the warmer cache)."""
    a = b = float("inf")
    for _ in range(runs):
        a, b = min(a, _best(ours, 1)), min(b, _best(direct, 1))
    return a, b


def _read_events(store: reading.Store, pairs: list[tuple[uuid.UUID, int]]) -> int:
    """Straight from the store: the rows of these (aggregate, version)s, decoded."""
    for aggregate_id, version in pairs:
        for stored in store.recorder.select_events(aggregate_id, gt=version - 1, lte=version):
            store.mapper.to_domain_event(stored)
    return len(pairs)


def _read_aggregates(store_of: dict[uuid.UUID, reading.Store], ids: list[uuid.UUID]) -> int:
    n = 0
    for aggregate_id in ids:
        store = store_of[aggregate_id]
        for stored in store.recorder.select_events(aggregate_id):
            store.mapper.to_domain_event(stored)
            n += 1
    return n




def measure(settings: Settings, template: Template, units: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    middle = Clone(template, units // 2)
    crisis_client = next(middle.clients[c] for c, (_, story) in zip(template.clients, TEMPLATE, strict=True)
                         if story == "resolved")
    with reading.Stores(settings) as stores:
        by_name = {s.name: s for s in stores.all}
        assert stores.indexed

        # an event's causation trace: the client's EscalationRaised, both ways
        raised_topic = "domain.events.escalation:EscalationRaised"
        template_raised = next(e for s, e in template.events["escalation"] if s.topic == raised_topic)
        event_id = uuid.UUID(middle.ids[template_raised.event_id.encode()].decode())
        traced = reading.trace(stores, event_id)
        hops = [traced.event, *traced.causes, *traced.effects]

        def direct_trace() -> None:
            for hop in hops:
                _read_events(by_name[hop.store], [(hop.aggregate_id, hop.version)])

        ours, direct = _pair(lambda: reading.trace(stores, event_id), direct_trace)
        rows.append({"key": "trace", "what": f"causation trace of an EscalationRaised ({len(hops)} events)",
                     "ours": ours, "direct": direct, "events": len(hops)})

        # one client's export, JSON
        found = members(stores, crisis_client)
        store_of = {aid: store for store, aid in found}
        ids = [aid for _, aid in found]
        exported_events = _read_aggregates(store_of, ids)
        ours, direct = _pair(lambda: sum(len(p) for p in export_json(stores, crisis_client)),
                             lambda: _read_aggregates(store_of, ids))
        rows.append({"key": "export", "what": f"one client's export, JSON ({len(ids)} records, {exported_events} events)",
                     "ours": ours, "direct": direct, "events": exported_events})

        # one aggregate's history and its point-in-time replay: the client's plan
        plan = next(aid for store, aid in found if store.name == "care" and
                    type(project(None, (store.event_at(aid, 1),))).__name__ == "CarePlan")
        care = by_name["care"]
        plan_events = [care.mapper.to_domain_event(s) for s in care.recorder.select_events(plan)]
        moment = plan_events[len(plan_events) // 2].timestamp
        ours, direct = _pair(lambda: reading.history(stores, plan), lambda: _read_aggregates({plan: care}, [plan]))
        rows.append({"key": "history", "what": f"one plan's history ({len(plan_events)} events)", "ours": ours,
                     "direct": direct, "events": len(plan_events)})
        upto = [e for e in plan_events if e.timestamp <= moment]

        def direct_upto() -> None:
            for stored in care.recorder.select_events(plan, lte=upto[-1].originator_version):
                care.mapper.to_domain_event(stored)

        ours, direct = _pair(lambda: reading.aggregate_at(stores, plan, at=moment), direct_upto)
        rows.append({"key": "replay_at", "what": f"that plan at a moment ({len(upto)} events)", "ours": ours,
                     "direct": direct, "events": len(upto)})

        # the open-crises list, as GET /escalations answers its first page
        from domain.escalation.crisis import Crisis
        from services.escalation.open_view import OpenCrises

        escalation = by_name["escalation"]
        view = OpenCrises(escalation.recorder, escalation.mapper)
        page_ids = list(view.refresh())[:100]

        def load_page(ids: list[uuid.UUID]) -> list[Any]:
            return [project(None, map(escalation.mapper.to_domain_event, escalation.recorder.select_events(cid)))
                    for cid in ids]

        def cold() -> None:
            fresh = OpenCrises(escalation.recorder, escalation.mapper)
            crises = load_page(list(fresh.refresh())[:100])
            assert all(isinstance(c, Crisis) for c in crises)

        def warm() -> None:
            load_page(list(view.refresh())[:100])

        page_events = _read_aggregates(dict.fromkeys(page_ids, escalation), page_ids)
        ours, direct = _pair(warm, lambda: _read_aggregates(dict.fromkeys(page_ids, escalation), page_ids))
        rows.append({"key": "open_crises", "what": f"open crises, first page ({len(page_ids)} of {len(view.open):,}, "
                     f"{page_events} events)", "ours": ours, "direct": direct, "events": page_events})
        ours, direct = _pair(cold, lambda: _read_aggregates(dict.fromkeys(page_ids, escalation), page_ids), runs=3)
        rows.append({"key": "open_crises_cold", "what": f"  the same at a process's start (view from the open-items index, {view.read:,} rows)",
                     "ours": ours, "direct": direct, "events": page_events})

    # the caseload and outcomes of one clinician (the read models), after the catch-up the API runs first
    from services.views.queries import Views

    started = time.perf_counter()
    views = Views(settings)
    try:
        views.catch_up()
        views_seconds = time.perf_counter() - started
        if settings.database == "postgres":
            _analyze(settings)  # the views' tables too, as autovacuum would after the build
        clients = frozenset(middle.clients.values())
        page = views.caseload(clients, clinician=middle.clinician)
        assert page.total == len(clients), page.total
        with reading.Stores(settings) as stores:
            mine = [(store, aid) for client in sorted(clients) for store, aid in members(stores, client)]
            plans = [(store, aid) for store, aid in mine if store.name == "care"
                     and type(project(None, (store.event_at(aid, 1),))).__name__ == "CarePlan"]
            scores = [(store, aid) for store, aid in mine if store.name == "assessment"]

            def direct(found: list[tuple[reading.Store, uuid.UUID]]) -> Callable[[], int]:
                return lambda: _read_aggregates({aid: store for store, aid in found}, [aid for _, aid in found])

            plan_events, score_events = direct(plans)(), direct(scores)()

            def caseload() -> None:
                views.catch_up()
                views.caseload(clients, clinician=middle.clinician)

            def outcomes() -> None:
                views.catch_up()
                views.outcomes(clients)

            ours, base = _pair(caseload, direct(plans))
            rows.append({"key": "caseload", "what": f"a clinician's caseload ({len(plans)} plans, {plan_events} events)",
                         "ours": ours, "direct": base, "events": plan_events})
            ours, base = _pair(outcomes, direct(scores))
            rows.append({"key": "outcomes", "what": f"their outcomes ({len(scores)} assessment records, {score_events} "
                         "events)", "ours": ours, "direct": base, "events": score_events})
    finally:
        views.close()
    rows.append({"key": "views_build", "what": f"views from zero over every store, events/s ({views_seconds:.1f} s)",
                 "rate_only": True, "rate": 0.0, "seconds": views_seconds})

    # audit verify, every store
    started = time.perf_counter()
    total = 0
    for name in RECORD_STORES:
        report = verify_store(settings, name)
        assert report.ok, report
        total += report.events
    elapsed = time.perf_counter() - started
    rows.append({"key": "verify", "what": f"audit verify of every store ({total:,} events), events/s",
                 "rate": total / elapsed})
    for row in rows:
        if row.get("rate_only"):
            row["rate"] = total / row["seconds"]
    return rows


@contextmanager
def _bench_settings(base: Settings, backend: str) -> Iterator[Settings]:
    with tempfile.TemporaryDirectory(prefix="careplan-bench-scale-") as tmp:
        settings = base.model_copy(update={
            "database": backend, "data_dir": Path(tmp) / "stores", "snapshot_interval": 0, "aggregate_cache_size": 0,
            "postgres_pool_size": 2, "client_keys": False,
            "postgres_schema_prefix": f"benchscale{uuid.uuid4().hex[:6]}",
        })
        try:
            yield settings
        finally:
            if backend == "postgres":
                drop_postgres_schemas(settings)


def run_scale_benchmark(base: Settings, *, backend: str, events: int | None, console: Console) -> dict[str, float]:
    events = events or DEFAULT_EVENTS[backend]
    with tempfile.TemporaryDirectory(prefix="careplan-bench-scale-template-") as tmp:
        started = time.perf_counter()
        template = build_template(Path(tmp))
        template_seconds = time.perf_counter() - started
    with _bench_settings(base, backend) as settings:
        started = time.perf_counter()
        units = build(settings, template, events)
        build_seconds = time.perf_counter() - started
        written = units * template.size
        size = data_size(settings)
        rows = measure(settings, template, units)
    clients = units * len(template.clients)
    table = Table(title=f"careplan bench scale ({backend}: {written:,} events, {clients:,} clients, "
                        f"{size / 2**20:,.0f} MiB; built in {build_seconds:,.1f} s)")
    for column in ("read", "careplan ms", "direct ms", "ratio", "target"):
        table.add_column(column, justify="left" if column == "read" else "right")
    results: dict[str, float] = {"events": written, "build_seconds": build_seconds, "bytes": size}
    for row in rows:
        if "rate" in row:
            table.add_row(row["what"], f"{row['rate']:,.0f}", "", "", "" if row.get("rate_only") else f"≥ {VERIFY_TARGET:,}")
            results[row["key"]] = row["rate"]
            continue
        ratio = row["direct"] / row["ours"]
        results[row["key"]] = ratio
        table.add_row(row["what"], f"{row['ours'] * 1000:.2f}", f"{row['direct'] * 1000:.2f}", f"{ratio:.2f}",
                      f"≥ {RATIO_TARGET}")
    console.print(table)
    print(f"RESULT scale_build_{backend} events={written} clients={clients} seconds={build_seconds:.1f} "
          f"events_per_s={written / build_seconds:.0f} bytes={size} template_seconds={template_seconds:.1f}")
    for row in rows:
        if row.get("rate_only"):
            print(f"RESULT scale_{row['key']}_{backend} events_per_s={row['rate']:.0f} seconds={row['seconds']:.1f}")
        elif "rate" in row:
            print(f"RESULT scale_{row['key']}_{backend} events_per_s={row['rate']:.0f} target={VERIFY_TARGET}")
        else:
            print(f"RESULT scale_{row['key']}_{backend} ratio={results[row['key']]:.2f} target={RATIO_TARGET} "
                  f"events={row['events']} ms={row['ours'] * 1000:.2f}")
    return results
