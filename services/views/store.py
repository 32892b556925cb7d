"""The view store: the read models' tables and the positions they were built to, in one
database (``views.sqlite`` in the data folder, or the schema ``<prefix>_views`` on
PostgreSQL), so rows and positions change in one transaction.

One SQL dialect serves both databases: ``?`` placeholders (turned into ``%s`` for
psycopg), ``INSERT ... ON CONFLICT ... DO UPDATE``, window functions, and moments stored as
fixed-width UTC text (``2026-03-02T09:00:00.000000Z``) so that text order is time order.
"""

from __future__ import annotations

import base64
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from services.shared.settings import Settings

log = logging.getLogger(__name__)

#: The stores the views follow, in the order a catch-up reads them.
SOURCES: tuple[str, ...] = ("care", "assessment", "scheduling", "escalation")

TABLES: dict[str, str] = {
    "view_positions": "source TEXT PRIMARY KEY, position BIGINT NOT NULL",
    "view_plans": (
        "plan_id TEXT PRIMARY KEY, client_id TEXT NOT NULL, clinician TEXT NOT NULL, title TEXT NOT NULL, "
        "status TEXT NOT NULL, strategy TEXT NOT NULL, risk_level TEXT NOT NULL, risk_rank INTEGER NOT NULL, "
        "created_at TEXT NOT NULL, updated_at TEXT NOT NULL"
    ),
    "view_courses": (
        "course_id TEXT PRIMARY KEY, plan_id TEXT NOT NULL, client_id TEXT NOT NULL, modality TEXT NOT NULL, "
        "phase TEXT NOT NULL, status TEXT NOT NULL, planned_sessions INTEGER NOT NULL, "
        "started_at TEXT NOT NULL, ended_at TEXT"
    ),
    "view_scores": (
        "submission_id TEXT PRIMARY KEY, course_id TEXT NOT NULL, plan_id TEXT NOT NULL, client_id TEXT NOT NULL, "
        "instrument TEXT NOT NULL, total INTEGER, severity TEXT, answered_at TEXT NOT NULL, "
        "suicide_item_positive INTEGER NOT NULL, suicide_risk TEXT, scored INTEGER NOT NULL"
    ),
    "view_sessions": (
        "session_key TEXT PRIMARY KEY, course_id TEXT NOT NULL, source TEXT NOT NULL, kind TEXT NOT NULL, "
        "number INTEGER NOT NULL, starts_at TEXT NOT NULL, state TEXT NOT NULL"
    ),
}
#: The read models proper (what a rebuild empties and a comparison reads), not the positions.
VIEW_TABLES: tuple[str, ...] = tuple(t for t in TABLES if t != "view_positions")
INDEXES: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS view_plans_client ON view_plans (client_id, created_at)",
    "CREATE INDEX IF NOT EXISTS view_plans_clinician ON view_plans (clinician, created_at)",
    "CREATE INDEX IF NOT EXISTS view_plans_created ON view_plans (created_at, plan_id)",
    "CREATE INDEX IF NOT EXISTS view_plans_attention ON view_plans (risk_rank DESC, created_at, plan_id)",
    "CREATE INDEX IF NOT EXISTS view_courses_plan ON view_courses (plan_id, started_at)",
    "CREATE INDEX IF NOT EXISTS view_scores_plan ON view_scores (plan_id, instrument, answered_at)",
    "CREATE INDEX IF NOT EXISTS view_scores_course ON view_scores (course_id, answered_at)",
    "CREATE INDEX IF NOT EXISTS view_sessions_course ON view_sessions (course_id, starts_at)",
)


def moment(value: datetime) -> str:
    """A moment as stored: UTC, fixed width, so text order is time order."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_moment(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text)  # the trailing Z is UTC (Python 3.11)


class ViewStore:
    """One connection to the view database, used by one thread at a time (a lock).

    With ``CAREPLAN_CIPHER_KEY`` set, free text kept in the views (a plan's title) is stored
    encrypted with the stores' cipher (:meth:`seal`, :meth:`unseal`), as the events are: the
    views hold no clinical text readable at rest. Ids, statuses and numbers stay plain, since
    the queries filter and sort by them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.postgres = settings.database == "postgres"
        self.cipher: Any | None = None
        if settings.cipher_key is not None:
            from eventsourcing.cipher import AESCipher
            from eventsourcing.utils import Environment

            self.cipher = AESCipher(Environment("views", {"CIPHER_KEY": settings.cipher_key.get_secret_value()}))
        self._lock = threading.RLock()
        if self.postgres:

            from services.shared.persistence import ensure_postgres_schema

            self.schema = settings.postgres_schema("views")
            ensure_postgres_schema(settings, self.schema)
            self.conn: Any = self._connect()
        else:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
            self.path = settings.sqlite_path("views")
            self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            # The switch to WAL does not wait out the busy timeout: the views process and the
            # API open the file together at `careplan up` (docs/decisions.md, stores created
            # one process at a time), so the loser tries again.
            for attempt in range(40):
                try:
                    self.conn.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError:
                    if attempt == 39:
                        raise
                    time.sleep(0.05)
            self.conn.execute("PRAGMA synchronous=NORMAL")
            # rows removed by an erasure (issue 16) leave no bytes behind in the file
            self.conn.execute("PRAGMA secure_delete=ON")
        self._create()

    def _create(self) -> None:
        """Tables made with ``IF NOT EXISTS``; on PostgreSQL two processes starting together
        (the views process and the API) can still collide in the catalogue: the next try sees
        the tables (as services.shared.persistence.surviving_catalog_races does)."""
        if not self.postgres:
            self._create_once()
            return
        import psycopg

        for attempt in range(8):
            try:
                self._create_once()
                return
            except (psycopg.errors.UniqueViolation, psycopg.errors.InternalError):
                if attempt == 7:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _create_once(self) -> None:
        with self.transaction():
            for table, columns in TABLES.items():
                self.execute(f"CREATE TABLE IF NOT EXISTS {table} ({columns})")
            for statement in INDEXES:
                self.execute(statement)
            for source in SOURCES:
                self.execute("INSERT INTO view_positions (source, position) VALUES (?, 0) "
                             "ON CONFLICT (source) DO NOTHING", (source,))

    def seal(self, text: str) -> str:
        """Text as the views store it: encrypted (base64) when a cipher key is set."""
        if self.cipher is None:
            return text
        return "enc:" + base64.b64encode(self.cipher.encrypt(text.encode())).decode()

    def unseal(self, stored: str) -> str:
        if not stored.startswith("enc:"):
            return stored
        if self.cipher is None:
            msg = "the views hold encrypted text and no CAREPLAN_CIPHER_KEY is set"
            raise RuntimeError(msg)
        return self.cipher.decrypt(base64.b64decode(stored[4:])).decode()  # type: ignore[no-any-return]

    def _connect(self) -> Any:
        import psycopg

        settings = self.settings
        return psycopg.connect(
            host=settings.postgres_host, port=settings.postgres_port, user=settings.postgres_user,
            password=settings.postgres_password.get_secret_value() or None, dbname=settings.postgres_dbname,
            # jit off: the caseload's correlated subqueries look costly to a planner without
            # statistics, and compiling them (most of a second) cost far more than running them
            autocommit=True, options=f"-c search_path={self.schema} -c jit=off", connect_timeout=10,
        )

    def _usable(self) -> None:
        """A PostgreSQL connection lost (a server restart, a failover) is replaced at the next
        use: the call that met the loss failed, the next one works."""
        if self.postgres and (self.conn.closed or self.conn.broken):
            log.warning("views: the PostgreSQL connection was lost; connecting again")
            self.conn = self._connect()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.postgres else statement

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One writer at a time across processes: SQLite's ``BEGIN IMMEDIATE`` takes the
        write lock; on PostgreSQL the positions are read ``FOR UPDATE`` (:meth:`lock_positions`)."""
        with self._lock:
            self._usable()
            if self.postgres:
                with self.conn.transaction():
                    yield
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(self._sql(statement), tuple(params))

    def executemany(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if self.postgres:
            with self.conn.cursor() as cursor:
                cursor.executemany(self._sql(statement), [tuple(r) for r in rows])
        else:
            self.conn.executemany(statement, [tuple(r) for r in rows])

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            self._usable()
            return list(self.conn.execute(self._sql(statement), tuple(params)).fetchall())

    def lock_positions(self) -> dict[str, int]:
        """The positions, locked until the transaction ends (call inside :meth:`transaction`)."""
        suffix = " FOR UPDATE" if self.postgres else ""
        return {s: int(p) for s, p in self.conn.execute(f"SELECT source, position FROM view_positions{suffix}").fetchall()}

    def positions(self) -> dict[str, int]:
        return {s: int(p) for s, p in self.rows("SELECT source, position FROM view_positions")}

    def analyze(self) -> None:
        """Fresh planner statistics after the tables were filled at once (a rebuild)."""
        with self._lock:
            self._usable()
            for table in VIEW_TABLES:
                self.conn.execute(f"ANALYZE {table}")

    def close(self) -> None:
        with self._lock:
            self.conn.close()
