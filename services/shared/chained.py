"""A hash chain over each application's notification log, kept as it is written.

Every stored event gets a link: SHA-256 over the previous link and the event's stored
bytes (its position, aggregate id, version, topic and state). The links are written in the
same transaction as the events, by the library's own recorders extended here (selected
through ``APPLICATION_RECORDER_TOPIC`` / ``PROCESS_RECORDER_TOPIC``), so there is never an
event without its link or a link without its event. ``services.audit.integrity`` recomputes
the chain; a published chain head (see the relay) anchors it outside the database.

Snapshots are not chained, but each carries a digest over itself and the link of the event
at its version (services.shared.snapshots): one that disagrees is not trusted on load, and
``audit verify`` replays the events under each aggregate's latest snapshot.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresProcessRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder, SQLiteProcessRecorder
from eventsourcing.utils import get_topic

from services.shared.indexes import PostgresIndexes, SQLiteIndexes

GENESIS = bytes(32)

#: One event of the notification log as the relay reads it: (position, aggregate id as
#: ``str(UUID)`` writes it, version, topic, stored state).
LogRow = tuple[int, str, int, str, bytes]


def link_of(previous: bytes, notification_id: int, originator_id: UUID | str, version: int, topic: str, state: bytes) -> bytes:
    h = hashlib.sha256(previous)
    h.update(notification_id.to_bytes(8, "big"))
    h.update(str(originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))).encode())
    h.update(version.to_bytes(8, "big"))
    h.update(topic.encode())
    h.update(b"\0")
    h.update(bytes(state))
    return h.digest()


def chain_links(previous: bytes, ids: Sequence[int], events: Sequence[StoredEvent]) -> list[tuple[int, bytes]]:
    links = []
    for notification_id, event in zip(ids, events, strict=True):
        previous = link_of(previous, notification_id, event.originator_id, event.originator_version, event.topic, event.state)
        links.append((notification_id, previous))
    return links


# ------------------------------------------------------------------------- SQLite


class _SQLiteChain:
    events_table_name: str
    datastore: Any

    @property
    def chain_table_name(self) -> str:
        return f"{self.events_table_name}_chain"

    def create_table(self) -> None:
        """Creates the tables, one process at a time.

        Processes that share a store (the care API and care-policies) start together. The first
        connection to a new file switches it to WAL, and SQLite's deferred ``BEGIN`` reads the
        schema before it upgrades to a write; either answers "database is locked" at once, without
        the busy timeout, to a process that loses the race (and a lost race while connecting leaves
        the library's pool waiting for a writer that never returns). An exclusive lock on a file
        beside the database puts the creators in line."""
        pool = self.datastore.pool
        if pool.is_sqlite_memory_mode:
            super().create_table()  # type: ignore[misc]
            return
        path = str(pool.db_name).removeprefix("file:").split("?", 1)[0]
        with open(f"{path}.create-lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                super().create_table()  # type: ignore[misc]
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),  # type: ignore[misc]
            f"CREATE TABLE IF NOT EXISTS {self.chain_table_name} (notification_id INTEGER PRIMARY KEY, link BLOB NOT NULL)",
        ]

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)  # type: ignore[misc]
        if ids:
            c.execute(f"SELECT link FROM {self.chain_table_name} ORDER BY notification_id DESC LIMIT 1")
            row = c.fetchone()
            previous = bytes(row[0]) if row else GENESIS
            c.executemany(f"INSERT INTO {self.chain_table_name} (notification_id, link) VALUES (?, ?)",
                          chain_links(previous, ids, stored_events))
        return ids

    def select_log(self, start: int, limit: int) -> list[LogRow]:
        """The notification log from ``start`` as plain rows, for the relay: what the library's
        ``select_notifications`` reads, without a ``Row``, a ``UUID`` and a ``Notification``
        per event (a third of its cost)."""
        with self.datastore.transaction(commit=False) as c:
            c.sqlite_cursor.row_factory = None  # plain tuples (the cursor is this transaction's own)
            c.execute(f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name} "
                      "WHERE rowid >= ? ORDER BY rowid LIMIT ?", (start, limit))
            rows = c.fetchall()
        if self.datastore.originator_id_type != "uuid":
            return rows
        # the library stores a UUID as 32 hex digits; the relay names it as str(UUID) does
        return [(p, f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}", v, t, s) for p, h, v, t, s in rows]

    def chain(self, start: int = 1, limit: int = 10_000) -> list[tuple[int, bytes]]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT notification_id, link FROM {self.chain_table_name} WHERE notification_id >= ? "
                      "ORDER BY notification_id LIMIT ?", (start, limit))
            return [(int(r[0]), bytes(r[1])) for r in c.fetchall()]

    def event_link(self, originator_id: UUID, version: int) -> bytes | None:
        """The chain link of an aggregate's event at ``version`` (None: no such event)."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT l.link FROM {self.events_table_name} e JOIN {self.chain_table_name} l "
                      "ON l.notification_id = e.rowid WHERE e.originator_id = ? AND e.originator_version = ?",
                      (UUID(str(originator_id)).hex, version))
            row = c.fetchone()
            return bytes(row[0]) if row else None

    def chain_head(self) -> tuple[int, bytes] | None:
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT notification_id, link FROM {self.chain_table_name} ORDER BY notification_id DESC LIMIT 1")
            row = c.fetchone()
            return (int(row[0]), bytes(row[1])) if row else None


    def rewrite_tail(self, after: int, events: Sequence[tuple[int, StoredEvent]], *, snapshots_of: set[UUID]) -> None:
        """Replaces every event after position ``after`` with ``events`` at the positions given,
        chained on from the link at ``after``; drops the snapshots of ``snapshots_of`` (they are
        taken again). Only the recovery of a restored store does this (services.operations.recovery)."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"SELECT link FROM {self.chain_table_name} WHERE notification_id <= ? "
                      "ORDER BY notification_id DESC LIMIT 1", (after,))
            row = c.fetchone()
            previous = bytes(row[0]) if row else GENESIS
            c.execute(f"SELECT originator_id, originator_version FROM {self.events_table_name} WHERE rowid > ?", (after,))
            removed = {(UUID(r[0]), int(r[1])) for r in c.fetchall()}
            c.execute(f"DELETE FROM {self.events_table_name} WHERE rowid > ?", (after,))
            c.execute(f"DELETE FROM {self.chain_table_name} WHERE notification_id > ?", (after,))
            c.executemany(
                f"INSERT INTO {self.events_table_name} (rowid, originator_id, originator_version, topic, state) "
                "VALUES (?, ?, ?, ?, ?)",
                [(i, UUID(str(e.originator_id)).hex, e.originator_version, e.topic, e.state) for i, e in events],
            )
            c.executemany(f"INSERT INTO {self.chain_table_name} (notification_id, link) VALUES (?, ?)",
                          chain_links(previous, [i for i, _ in events], [e for _, e in events]))
            self._reindex_tail(c, removed, [e for _, e in events])
            snapshots = _snapshots_table(self.events_table_name)
            if snapshots_of:
                c.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?", (snapshots,))
                if c.fetchone():
                    c.executemany(f"DELETE FROM {snapshots} WHERE originator_id = ?", [(u.hex,) for u in snapshots_of])


class ChainedSQLiteApplicationRecorder(SQLiteIndexes, _SQLiteChain, SQLiteApplicationRecorder):
    pass


class ChainedSQLiteProcessRecorder(SQLiteIndexes, _SQLiteChain, SQLiteProcessRecorder):
    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        for tracking in kwargs.get("more_tracking") or ():
            self._insert_tracking(c, tracking)
        return ids


# ------------------------------------------------------------------------- PostgreSQL


class _PostgresChain:
    events_table_name: str
    datastore: Any
    sql_create_statements: list[Any]

    def _add_chain_table(self) -> None:
        from psycopg.sql import SQL, Identifier

        self.chain_table = Identifier(self.datastore.schema, f"{self.events_table_name}_chain")
        self.sql_create_statements.append(
            SQL("CREATE TABLE IF NOT EXISTS {0} (notification_id bigint PRIMARY KEY, link bytea NOT NULL)").format(
                self.chain_table)
        )

    def create_table(self) -> None:
        """Creates the tables, types and functions, one session per schema at a time: PostgreSQL's
        ``CREATE ... IF NOT EXISTS`` (and the library's ``CREATE TYPE`` that ignores only
        "already exists") run by two sessions at once fails in the loser on the catalogue's
        unique index. The advisory lock is held on a connection of its own, outside the pool the
        creation uses, and goes with it."""
        import psycopg

        pool = self.datastore.pool
        kwargs = {k: v for k, v in pool.kwargs.items() if k != "row_factory"}
        if getattr(pool, "get_password_func", None):
            kwargs["password"] = pool.get_password_func()
        key = int.from_bytes(hashlib.sha256(f"careplan-create:{self.datastore.schema}".encode()).digest()[:8],
                             "big", signed=True)
        with psycopg.connect(**kwargs, autocommit=True, connect_timeout=10) as lock:
            lock.execute("SELECT pg_advisory_lock(%s)", (key,))
            super().create_table()  # type: ignore[misc]

    def _fetch_ids_after_insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        from psycopg.sql import SQL

        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)  # type: ignore[misc]
        if ids:
            # Still inside the insert's transaction and under its EXCLUSIVE lock on the events table.
            curs.execute(SQL("SELECT link FROM {0} ORDER BY notification_id DESC LIMIT 1").format(self.chain_table))
            row = curs.fetchone()
            previous = bytes(row["link"]) if row else GENESIS
            curs.executemany(SQL("INSERT INTO {0} (notification_id, link) VALUES (%s, %s)").format(self.chain_table),
                             chain_links(previous, ids, stored_events))
        return ids

    def select_log(self, start: int, limit: int) -> list[LogRow]:
        """As the SQLite recorder's: the log from ``start`` as plain rows, the aggregate id as text."""
        from psycopg.rows import tuple_row
        from psycopg.sql import SQL, Identifier

        table = Identifier(self.datastore.schema, self.events_table_name)
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(SQL("SELECT notification_id, originator_id::text, originator_version, topic, state FROM {0} "
                             "WHERE notification_id >= %s ORDER BY notification_id LIMIT %s").format(table),
                         (start, limit), prepare=True)
            return curs.fetchall()

    def chain(self, start: int = 1, limit: int = 10_000) -> list[tuple[int, bytes]]:
        from psycopg.sql import SQL

        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT notification_id, link FROM {0} WHERE notification_id >= %s "
                             "ORDER BY notification_id LIMIT %s").format(self.chain_table), (start, limit))
            return [(int(r["notification_id"]), bytes(r["link"])) for r in curs.fetchall()]

    def event_link(self, originator_id: UUID, version: int) -> bytes | None:
        """The chain link of an aggregate's event at ``version`` (None: no such event)."""
        from psycopg.sql import SQL, Identifier

        table = Identifier(self.datastore.schema, self.events_table_name)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT l.link FROM {0} e JOIN {1} l ON l.notification_id = e.notification_id "
                             "WHERE e.originator_id = %s AND e.originator_version = %s").format(table, self.chain_table),
                         (UUID(str(originator_id)), version))
            row = curs.fetchone()
            return bytes(row["link"]) if row else None

    def chain_head(self) -> tuple[int, bytes] | None:
        from psycopg.sql import SQL

        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT notification_id, link FROM {0} ORDER BY notification_id DESC LIMIT 1").format(
                self.chain_table))
            row = curs.fetchone()
            return (int(row["notification_id"]), bytes(row["link"])) if row else None


    def rewrite_tail(self, after: int, events: Sequence[tuple[int, StoredEvent]], *, snapshots_of: set[UUID]) -> None:
        """As the SQLite recorder's; also moves the notification id sequence past the new end."""
        from psycopg.sql import SQL, Identifier, Literal

        table = Identifier(self.datastore.schema, self.events_table_name)
        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(SQL("LOCK TABLE {0} IN EXCLUSIVE MODE").format(table))
            curs.execute(SQL("SELECT link FROM {0} WHERE notification_id <= %s ORDER BY notification_id DESC LIMIT 1").format(
                self.chain_table), (after,))
            row = curs.fetchone()
            previous = bytes(row["link"]) if row else GENESIS
            curs.execute(SQL("SELECT originator_id, originator_version FROM {0} WHERE notification_id > %s").format(table),
                         (after,))
            removed = {(r["originator_id"], int(r["originator_version"])) for r in curs.fetchall()}
            curs.execute(SQL("DELETE FROM {0} WHERE notification_id > %s").format(table), (after,))
            curs.execute(SQL("DELETE FROM {0} WHERE notification_id > %s").format(self.chain_table), (after,))
            if events:
                curs.executemany(
                    SQL("INSERT INTO {0} (notification_id, originator_id, originator_version, topic, state) "
                        "VALUES (%s, %s, %s, %s, %s)").format(table),
                    [(i, UUID(str(e.originator_id)), e.originator_version, e.topic, e.state) for i, e in events],
                )
                curs.executemany(SQL("INSERT INTO {0} (notification_id, link) VALUES (%s, %s)").format(self.chain_table),
                                 chain_links(previous, [i for i, _ in events], [e for _, e in events]))
            self._reindex_tail(curs, removed, [e for _, e in events])
            qualified = f'"{self.datastore.schema}"."{self.events_table_name}"'
            curs.execute(SQL("SELECT setval(pg_get_serial_sequence({0}, 'notification_id'), "
                             "GREATEST((SELECT COALESCE(MAX(notification_id), 0) FROM {1}), %s, 1))").format(
                Literal(qualified), table), (after,))
            snapshots_name = _snapshots_table(self.events_table_name)
            snapshots = Identifier(self.datastore.schema, snapshots_name)
            curs.execute("SELECT to_regclass(%s) AS found", (f'"{self.datastore.schema}"."{snapshots_name}"',))
            found = curs.fetchone()
            if snapshots_of and found and found["found"]:
                curs.execute(SQL("DELETE FROM {0} WHERE originator_id = ANY(%s)").format(snapshots), (list(snapshots_of),))


class ChainedPostgresApplicationRecorder(PostgresIndexes, _PostgresChain, PostgresApplicationRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._add_chain_table()
        self._add_index_tables()


class ChainedPostgresProcessRecorder(PostgresIndexes, _PostgresChain, PostgresProcessRecorder):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._add_chain_table()
        self._add_index_tables()

    def _insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        for tracking in kwargs.get("more_tracking") or ():
            self._insert_tracking(curs, tracking)


def _snapshots_table(events_table: str) -> str:
    """The library names an application's tables alike: ``<prefix>events`` and ``<prefix>snapshots``."""
    return events_table.removesuffix("events") + "snapshots"


def recorder_topics(database: str) -> dict[str, str]:
    if database == "sqlite":
        return {"APPLICATION_RECORDER_TOPIC": get_topic(ChainedSQLiteApplicationRecorder),
                "PROCESS_RECORDER_TOPIC": get_topic(ChainedSQLiteProcessRecorder)}
    return {"APPLICATION_RECORDER_TOPIC": get_topic(ChainedPostgresApplicationRecorder),
            "PROCESS_RECORDER_TOPIC": get_topic(ChainedPostgresProcessRecorder)}
