"""The projection: the read models kept from the stores' notification logs, exactly once.

It follows four logs — care (plans, courses, the courses' sessions), assessment (scores),
scheduling (the timetable's slots) and escalation (read for open crises by
:class:`services.escalation.open_view.OpenCrises`, so only its position is kept here) —
each from the position recorded in the view store. A batch of one log is applied and its
new position written in ONE transaction of the view store, so a crash before the commit
leaves neither rows nor position (the batch is read again) and a crash after it leaves
both (it is not read again): every event changes the views exactly once.

Writers take turns (SQLite's write lock, PostgreSQL's row locks on the positions) and read
the positions inside their transaction, so the ``careplan views run`` process and an API
catching up before a read never apply one event twice.

Rows of different logs meet only at query time (a score names its course, a slot its
course): the logs are read one after the other, never in a global order, so no row may
depend on another log's row existing when it is written.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment, get_topic

from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.events import assessment as ae
from domain.events import care_plan as pe
from domain.events import scheduling as se
from domain.events import therapy_course as ce
from services.shared.persistence import eventsourcing_env, surviving_catalog_races
from services.shared.settings import Settings
from services.views.store import SOURCES, VIEW_TABLES, ViewStore, moment

log = logging.getLogger(__name__)

#: Notifications applied per transaction.
BATCH = 1000

Apply = Callable[[ViewStore, Any], None]


def _value(x: Any) -> Any:
    return x.value if hasattr(x, "value") else x


# ------------------------------------------------------------------ care: plans


def _drafted(db: ViewStore, e: pe.CarePlanDrafted) -> None:
    at = moment(e.timestamp)
    db.execute(
        "INSERT INTO view_plans (plan_id, client_id, clinician, title, status, strategy, risk_level, risk_rank, "
        "created_at, updated_at) VALUES (?, ?, ?, ?, 'draft', ?, 'none', 0, ?, ?) ON CONFLICT (plan_id) DO NOTHING",
        (str(e.originator_id), e.client_id, e.actor.id, db.seal(e.title), _value(e.strategy), at, at),
    )


def _plan_set(column: str, value: Callable[[Any], Any]) -> Apply:
    def apply(db: ViewStore, e: Any) -> None:
        db.execute(f"UPDATE view_plans SET {column} = ?, updated_at = ? WHERE plan_id = ?",
                   (value(e), moment(e.timestamp), str(e.originator_id)))
    return apply


def _risk(db: ViewStore, e: pe.RiskLevelRaised | pe.RiskLevelLowered) -> None:
    level = RiskLevel(e.level)
    db.execute("UPDATE view_plans SET risk_level = ?, risk_rank = ?, updated_at = ? WHERE plan_id = ?",
               (level.value, level.rank, moment(e.timestamp), str(e.originator_id)))


# ------------------------------------------------------------------ care: courses and their sessions


def _course_started(db: ViewStore, e: ce.CourseStarted) -> None:
    db.execute(
        "INSERT INTO view_courses (course_id, plan_id, client_id, modality, phase, status, planned_sessions, "
        "started_at, ended_at) VALUES (?, ?, ?, ?, 'initial', 'active', ?, ?, NULL) ON CONFLICT (course_id) DO NOTHING",
        (str(e.originator_id), str(e.plan_id), e.client_id, _value(e.modality), e.planned_sessions,
         moment(e.timestamp)),
    )


def _course_set(column: str, value: Callable[[Any], Any]) -> Apply:
    def apply(db: ViewStore, e: Any) -> None:
        db.execute(f"UPDATE view_courses SET {column} = ? WHERE course_id = ?", (value(e), str(e.originator_id)))
    return apply


def _course_ended(status: str) -> Apply:
    def apply(db: ViewStore, e: Any) -> None:
        db.execute("UPDATE view_courses SET status = ?, ended_at = ? WHERE course_id = ?",
                   (status, moment(e.timestamp), str(e.originator_id)))
    return apply


def _course_session(db: ViewStore, e: ce.SessionScheduled) -> None:
    db.execute(
        "INSERT INTO view_sessions (session_key, course_id, source, kind, number, starts_at, state) "
        "VALUES (?, ?, 'course', 'session', ?, ?, 'scheduled') ON CONFLICT (session_key) DO NOTHING",
        (f"course:{e.session_id}", str(e.originator_id), e.number, moment(e.scheduled_for)),
    )


def _course_session_state(state: str) -> Apply:
    def apply(db: ViewStore, e: Any) -> None:
        db.execute("UPDATE view_sessions SET state = ? WHERE session_key = ?", (state, f"course:{e.session_id}"))
    return apply


# ------------------------------------------------------------------ assessment: scores


def _decision(db: ViewStore, e: ae.AssessmentScored | ae.AssessmentRejected) -> None:
    scored = isinstance(e, ae.AssessmentScored)
    db.execute(
        "INSERT INTO view_scores (submission_id, course_id, plan_id, client_id, instrument, total, severity, "
        "answered_at, suicide_item_positive, suicide_risk, scored) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (submission_id) DO NOTHING",
        (str(e.submission_id), str(e.course_id), str(e.plan_id), e.client_id, e.instrument,
         e.total if scored else None, _value(e.severity) if scored and e.severity is not None else None,
         moment(e.answered_at), int(e.suicide_item_positive),
         _value(e.suicide_risk) if scored and e.suicide_risk is not None else None, int(scored)),
    )


# ------------------------------------------------------------------ scheduling: the timetable's slots


def _slot_key(e: Any) -> str:
    return f"slot:{e.course_id}:{_value(e.kind)}:{e.number}"


def _slot(db: ViewStore, e: se.SessionScheduled) -> None:
    db.execute(
        "INSERT INTO view_sessions (session_key, course_id, source, kind, number, starts_at, state) "
        "VALUES (?, ?, 'schedule', ?, ?, ?, 'scheduled') ON CONFLICT (session_key) DO UPDATE SET "
        "starts_at = excluded.starts_at, state = 'scheduled'",
        (_slot_key(e), str(e.course_id), _value(e.kind), e.number, moment(e.starts_at)),
    )


def _slot_moved(db: ViewStore, e: se.SessionRescheduled) -> None:
    db.execute("UPDATE view_sessions SET starts_at = ? WHERE session_key = ?", (moment(e.starts_at), _slot_key(e)))


def _slot_held_by_number(db: ViewStore, e: se.SessionAttendanceRecorded) -> None:
    # attendance names the course's session number; the timetable's slot of that number (a session, not a check-in)
    db.execute("UPDATE view_sessions SET state = 'held' WHERE session_key = ?",
               (f"slot:{e.course_id}:session:{e.number}",))


def _slot_state(state: str) -> Apply:
    def apply(db: ViewStore, e: Any) -> None:
        db.execute("UPDATE view_sessions SET state = ? WHERE session_key = ?", (state, _slot_key(e)))
    return apply


#: What each log's events do to the views; events not named here change nothing.
APPLIERS: dict[str, dict[type[Any], Apply]] = {
    "care": {
        pe.CarePlanDrafted: _drafted,
        pe.CarePlanActivated: _plan_set("status", lambda e: "active"),
        pe.CarePlanPutOnHold: _plan_set("status", lambda e: "on-hold"),
        pe.CarePlanResumed: _plan_set("status", lambda e: "active"),
        pe.CarePlanCompleted: _plan_set("status", lambda e: "completed"),
        pe.CarePlanRevoked: _plan_set("status", lambda e: "revoked"),
        pe.StrategyChanged: _plan_set("strategy", lambda e: _value(e.strategy)),
        pe.EmergencySupportActivated: _plan_set("strategy", lambda e: Strategy.EMERGENCY_SUPPORT.value),
        pe.EmergencySupportEnded: _plan_set("strategy", lambda e: _value(e.strategy)),
        pe.RiskLevelRaised: _risk,
        pe.RiskLevelLowered: _risk,
        ce.CourseStarted: _course_started,
        ce.PhaseStarted: _course_set("phase", lambda e: _value(e.phase)),
        ce.CourseExtended: _course_set("planned_sessions", lambda e: e.planned_sessions),
        ce.CourseCompleted: _course_ended("completed"),
        ce.CourseDiscontinued: _course_ended("discontinued"),
        ce.SessionScheduled: _course_session,
        ce.SessionHeld: _course_session_state("held"),
        ce.SessionMissed: _course_session_state("missed"),
        ce.SessionCancelled: _course_session_state("cancelled"),
    },
    "assessment": {ae.AssessmentScored: _decision, ae.AssessmentRejected: _decision},
    "scheduling": {
        se.SessionScheduled: _slot,
        se.SessionRescheduled: _slot_moved,
        se.SessionAttendanceRecorded: _slot_held_by_number,
        se.SessionMissed: _slot_state("missed"),
        se.SessionAttendanceCorrected: _slot_state("held"),
    },
    # Open crises are OpenCrises's (services/escalation/open_view.py); nothing is kept here.
    "escalation": {},
}


class Source:
    """One store's notification log, read-only: its recorder and mapper."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self._factory = InfrastructureFactory.construct(Environment(name, eventsourcing_env(settings, name)))
        self.recorder = surviving_catalog_races(self._factory.application_recorder)
        self.mapper = self._factory.mapper(transcoder=self._factory.transcoder())
        self.appliers = {get_topic(cls): apply for cls, apply in APPLIERS[name].items()}
        self.topics = tuple(self.appliers)

    def close(self) -> None:
        self._factory.close()


class Projection:
    """Applies what is new in each log to the view store (:meth:`catch_up`), or everything
    again from nothing (:meth:`rebuild`)."""

    def __init__(self, settings: Settings, store: ViewStore | None = None, sources: dict[str, Source] | None = None,
                 batch: int = BATCH) -> None:
        self.settings = settings
        self.store = store if store is not None else ViewStore(settings)
        self.sources = sources if sources is not None else {name: Source(settings, name) for name in SOURCES}
        self.batch = batch
        #: events applied by this object (for figures and tests)
        self.applied = 0
        self._marks_sql: str | None = None
        self._marks_conn: Any = None
        self._marks_lock = threading.Lock()

    def step(self, name: str) -> int:
        """Applies at most one batch of ``name``'s log after its recorded position, with the
        new position, in one transaction. Returns the notifications read (0: caught up)."""
        source = self.sources[name]
        with self.store.transaction():
            position = self.store.lock_positions()[name]
            max_id = source.recorder.max_notification_id() or 0
            if max_id <= position:
                return 0
            # topics filter: only the events the views need are read and decoded
            batch = source.recorder.select_notifications(
                start=position + 1, limit=self.batch, stop=max_id, topics=source.topics
            ) if source.topics else []
            for notification in batch:
                apply = source.appliers[notification.topic]
                event = source.mapper.to_domain_event(notification)
                if not event.erased:  # an erased client's event changes no view
                    apply(self.store, event)
            self.applied += len(batch)
            # a short (or empty) batch read everything up to max_id
            new_position = batch[-1].id if len(batch) == self.batch else max_id
            self.store.execute("UPDATE view_positions SET position = ? WHERE source = ?", (new_position, name))
            return max(len(batch), 1)

    def marks(self) -> tuple[dict[str, int], dict[str, int]]:
        """The views' positions and each followed log's end (0: empty), read together: one
        statement (PostgreSQL: the stores are schemas of the views' database; SQLite: the files
        attached read-only to a connection of this object's own), else one per store."""
        if self._marks_sql is None:
            self._marks_sql = self._marks_statement()
        if self._marks_sql:
            if self.store.postgres:
                (row,) = self.store.rows(self._marks_sql)
            else:
                with self._marks_lock:
                    row = self._marks_connection().execute(self._marks_sql).fetchone()
            positions = {name: int(row[2 * i] or 0) for i, name in enumerate(SOURCES)}
            ends = {name: int(row[2 * i + 1] or 0) for i, name in enumerate(SOURCES)}
            return positions, ends
        positions = self.store.positions()
        return positions, {name: self.sources[name].recorder.max_notification_id() or 0 for name in SOURCES}

    def _marks_statement(self) -> str:
        """The statement of :meth:`marks` ("": none, ask each store)."""
        parts = []
        for i, name in enumerate(SOURCES):
            recorder = self.sources[name].recorder
            table = getattr(recorder, "events_table_name", None)
            if table is None:
                return ""
            if self.store.postgres:
                schema = getattr(recorder.datastore, "schema", None)
                if not schema:
                    return ""
                events = '"{}"."{}"'.format(schema.replace('"', '""'), table.replace('"', '""'))
                parts.append(f"(SELECT position FROM view_positions WHERE source = '{name}'), "
                             f"(SELECT MAX(notification_id) FROM {events})")
            else:
                if getattr(recorder.datastore.pool, "is_sqlite_memory_mode", True):
                    return ""
                parts.append(f"(SELECT position FROM v.view_positions WHERE source = '{name}'), "
                             f"(SELECT MAX(rowid) FROM s{i}.{table})")
        return "SELECT " + ", ".join(parts)

    def _marks_connection(self) -> Any:
        """SQLite: the view file and the stores' files attached read-only to one connection (as
        services.shared.indexes.AcrossStores reads the stores' indexes)."""
        if self._marks_conn is None:
            import sqlite3

            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None, uri=True)
            files = [("v", str(self.store.path))] + [
                (f"s{i}", str(self.sources[name].recorder.datastore.pool.db_name).removeprefix("file:").split("?", 1)[0])
                for i, name in enumerate(SOURCES)]
            for alias, path in files:
                conn.execute(f"ATTACH DATABASE 'file:{path.replace(chr(39), chr(39) * 2)}?mode=ro' AS {alias}")
            self._marks_conn = conn
        return self._marks_conn

    def catch_up(self, marks: tuple[dict[str, int], dict[str, int]] | None = None) -> int:
        """Everything recorded up to now, every log; returns the events applied. ``marks``: the
        positions and ends :meth:`marks` just read (not read again)."""
        before = self.applied
        positions, ends = marks if marks is not None else self.marks()
        behind = [name for name in SOURCES if ends[name] < positions[name]]
        if behind:
            # A log that ends before the views' position was restored or replaced: what the
            # views hold of it may no longer be true, and waiting for it to grow past the
            # position would skip its new events. The views are derived: build them again.
            for name in behind:
                log.warning("views: the %s store's log ends at %d, before the views' position %d (a restored "
                            "store?); rebuilding the views", name, ends[name], positions[name])
            return self.rebuild()
        for name in SOURCES:
            # Nothing new (the usual case before a read): no write lock taken.
            if ends[name] <= positions[name]:
                continue
            while self.step(name):
                pass
        return self.applied - before

    def lag(self) -> dict[str, int]:
        """Per log: notifications after the recorded position (what a catch-up has left to read)."""
        positions, ends = self.marks()
        return {name: max(0, ends[name] - positions[name]) for name in self.sources}

    def rebuild(self) -> int:
        """Empties the views and their positions in one transaction, then applies every log
        from its start. Readers during a rebuild see the views filling up again."""
        with self.store.transaction():
            self.store.lock_positions()
            for table in VIEW_TABLES:
                self.store.execute(f"DELETE FROM {table}")
            self.store.execute("UPDATE view_positions SET position = 0")
        before = self.applied
        for name in SOURCES:
            while self.step(name):
                pass
        self.store.analyze()
        return self.applied - before

    def close(self) -> None:
        if self._marks_conn is not None:
            self._marks_conn.close()
        for source in self.sources.values():
            source.close()
        self.store.close()
