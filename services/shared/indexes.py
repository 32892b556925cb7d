"""Indexes kept with the events: by causation, by client, and of open items (issue 17).

Three small tables beside each application's events, written by the recorders in the same
transaction as the events they describe (so there is never an event without its rows):

- ``<events>_trace``: one row per event — its id (derived from aggregate and version), the
  aggregate and version, and the id of the event (or command) that caused it. The causation
  trace finds an event, its causes and its effects through it, and reads only those events.
- ``<events>_clients``: one row per aggregate whose first event names a client or a parent
  (``client_id``; ``plan_id`` or ``subscription_id``; a subscription to exactly one client's
  events counts as that client's). A client's export finds its aggregates through it.
- ``<events>_open``: one row per item open (a crisis, from its raising to its resolution),
  with its log position: the escalation service's open-crises view starts from it.

The rows are derived at write time from the *domain* event, not from the stored bytes (which
may be encrypted per client). The hook: the mapper ends ``to_stored_event`` with
``return with_index(stored, event)``; a mapper that builds its stored events otherwise can
attach ``IndexedStoredEvent(..., index=index_entry(originator_id, version, causation_id,
client_id, parent_id))`` itself. The recorder writes what is attached; a stored event without
it (a raw bulk insert) gets no rows. ``careplan store reindex`` rebuilds the tables from the log
(:meth:`reindex`); readers check :meth:`index_ready` and read the whole log when the indexes do
not cover it (a store written before they existed). :class:`AcrossStores` asks every store's
indexes in one statement.

At erasure, a client's rows go with :meth:`forget_client` (services.audit.export's
``forget_client`` does it in every store, with the rows of the aggregates under the client's
plans).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import Notification, StoredEvent

from domain.base import derive_event_id

#: Rows per statement when ids are looked up in bulk.
CHUNK = 500


class IndexEntry(NamedTuple):
    """What the indexes keep of one event."""

    event_id: str
    originator_id: UUID
    version: int
    causation_id: str | None
    #: Only on an aggregate's first event: the client it belongs to, and its parent (a plan or subscription).
    client_id: str | None = None
    parent_id: UUID | None = None
    #: The event opens an item of its aggregate that stays open until one that ``closes`` it (a crisis).
    opens: bool = False
    closes: bool = False


@dataclass(frozen=True)
class IndexedStoredEvent(StoredEvent):
    """A stored event with what the indexes keep of it (see :func:`with_index`)."""

    index: IndexEntry | None = None


def index_entry(originator_id: UUID | str, version: int, causation_id: str | None, client_id: str | None = None,
                parent_id: UUID | str | None = None, *, opens: bool = False, closes: bool = False) -> IndexEntry:
    """The hook's plain form: what a mapper (or anything writing stored events) knows of an event."""
    oid = originator_id if isinstance(originator_id, UUID) else UUID(str(originator_id))
    return IndexEntry(derive_event_id(oid, version), oid, version, causation_id,
                      None if client_id is None else str(client_id),
                      None if parent_id is None else UUID(str(parent_id)), opens, closes)


#: The events that open an item (kept in ``<events>_open`` until an event that closes it): a
#: crisis is open from its raising to its resolution (the open-crises list reads them).
OPENING = frozenset({"EscalationRaised"})
CLOSING = frozenset({"CrisisResolved"})
#: A row that says the open items are not known (a recovered tail): readers read the log instead.
UNKNOWN = UUID(int=0)


#: The client index's name for a subscription shared by several clients (or all of them).
SHARED = "*"


def entry_of(event: Any) -> IndexEntry:
    """What the indexes keep of a domain event."""
    client = parent = None
    if event.originator_version == 1:
        client = getattr(event, "client_id", None)
        if client is None and type(event).__name__ == "SubscriptionCreated":
            # a subscription to one client's events: who received what, when; one shared by
            # several clients (or all, "*") is kept under SHARED, each client's share read from it
            client = event.clients[0] if len(event.clients) == 1 else SHARED
        parent = getattr(event, "plan_id", None) or getattr(event, "subscription_id", None)
    name = type(event).__name__
    opens = name in OPENING
    if opens:
        client, parent = getattr(event, "client_id", None), getattr(event, "plan_id", None)
    return index_entry(event.originator_id, event.originator_version, getattr(event, "causation_id", None),
                       client, parent, opens=opens, closes=name in CLOSING)


def with_index(stored: StoredEvent, event: Any) -> StoredEvent:
    """The mapper's hook: ``stored`` (made from the domain ``event``) carrying its index entry."""
    return IndexedStoredEvent(stored.originator_id, stored.originator_version, stored.topic, stored.state,
                              entry_of(event))


def entries(stored_events: Iterable[StoredEvent]) -> list[IndexEntry]:
    return [e.index for e in stored_events if isinstance(e, IndexedStoredEvent) and e.index is not None]


def opened_and_closed(stored_events: Sequence[StoredEvent], ids: Sequence[int] | None) -> list[tuple[IndexEntry, int]]:
    """The events (with their log positions) that open or close an item, in order."""
    if not ids:
        return []
    return [(e.index, i) for e, i in zip(stored_events, ids, strict=False)
            if isinstance(e, IndexedStoredEvent) and e.index is not None and (e.index.opens or e.index.closes)]


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i:i + CHUNK]


class ClientRow(NamedTuple):
    originator_id: UUID
    client_id: str | None
    parent_id: UUID | None


class _Tail:
    def _reindex_tail(self, c: Any, removed: set[tuple[UUID, int]], events: Sequence[StoredEvent]) -> None:
        """A recovered tail (chained ``rewrite_tail``): the rows of events gone are dropped; the
        events taken back from the stream carry theirs; events moved to a new position keep theirs."""
        new = {(UUID(str(e.originator_id)), e.originator_version) for e in events}
        self._drop_index_of(c, removed - new)  # type: ignore[attr-defined]
        self._write_index(c, entries(events))  # type: ignore[attr-defined]
        # positions moved and resolutions may be gone: the open items are read from the log until a reindex
        self._mark_open_unknown(c)  # type: ignore[attr-defined]

    def _index_log(self, c: Any, mapper: Any, page: int) -> int:
        """Indexes the whole log a page at a time into the (emptied) tables, on the reindex's
        transaction ``c``; returns the events indexed."""
        count, start = 0, 1
        while batch := self.select_notifications(start=start, limit=page):  # type: ignore[attr-defined]
            rows = [entry_of(mapper.to_domain_event(n)) for n in batch]
            self._write_index(c, rows)  # type: ignore[attr-defined]
            self._write_open(c, [(r, n.id) for r, n in zip(rows, batch, strict=True) if r.opens or r.closes])  # type: ignore[attr-defined]
            count += len(batch)
            start = batch[-1].id + 1
        return count


# ------------------------------------------------------------------------- SQLite


class SQLiteIndexes(_Tail):
    """Mixed into the SQLite recorders (services.shared.chained)."""

    events_table_name: str
    datastore: Any

    @property
    def trace_table_name(self) -> str:
        return f"{self.events_table_name}_trace"

    @property
    def clients_table_name(self) -> str:
        return f"{self.events_table_name}_clients"

    @property
    def open_table_name(self) -> str:
        return f"{self.events_table_name}_open"

    def construct_create_table_statements(self) -> list[str]:
        t, c = self.trace_table_name, self.clients_table_name
        return [
            *super().construct_create_table_statements(),  # type: ignore[misc]
            (f"CREATE TABLE IF NOT EXISTS {t} (event_id TEXT PRIMARY KEY, originator_id TEXT NOT NULL, "
             "originator_version INTEGER NOT NULL, causation_id TEXT) WITHOUT ROWID"),
            f"CREATE INDEX IF NOT EXISTS {t}_causation ON {t} (causation_id) WHERE causation_id IS NOT NULL",
            f"CREATE TABLE IF NOT EXISTS {c} (originator_id TEXT PRIMARY KEY, client_id TEXT, parent_id TEXT) WITHOUT ROWID",
            f"CREATE INDEX IF NOT EXISTS {c}_client ON {c} (client_id) WHERE client_id IS NOT NULL",
            f"CREATE INDEX IF NOT EXISTS {c}_parent ON {c} (parent_id) WHERE parent_id IS NOT NULL",
            (f"CREATE TABLE IF NOT EXISTS {self.open_table_name} (originator_id TEXT PRIMARY KEY, client_id TEXT, "
             "parent_id TEXT, position INTEGER NOT NULL) WITHOUT ROWID"),
        ]

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)  # type: ignore[misc]
        self._write_index(c, entries(stored_events))
        self._write_open(c, opened_and_closed(stored_events, ids))
        return ids

    def _write_open(self, c: Any, rows: Sequence[tuple[IndexEntry, int]]) -> None:
        for entry, position in rows:
            if entry.opens:
                c.execute(f"INSERT OR REPLACE INTO {self.open_table_name} VALUES (?, ?, ?, ?)",
                          (entry.originator_id.hex, entry.client_id, entry.parent_id.hex if entry.parent_id else None,
                           position))
            if entry.closes:
                c.execute(f"DELETE FROM {self.open_table_name} WHERE originator_id = ?", (entry.originator_id.hex,))

    def _mark_open_unknown(self, c: Any) -> None:
        c.execute(f"INSERT OR REPLACE INTO {self.open_table_name} VALUES (?, NULL, NULL, 0)", (UNKNOWN.hex,))

    def open_items(self) -> tuple[list[ClientRow], int] | None:
        """The items open (oldest first, as (aggregate, client, parent)) and the log position they
        are as of, read in one statement; None when not known (read the log instead)."""
        if not self.index_ready():
            return None
        rows = self._query(f"SELECT originator_id, client_id, parent_id, position FROM {self.open_table_name} "
                           f"UNION ALL SELECT NULL, NULL, NULL, MAX(rowid) FROM {self.events_table_name}", ())
        top = next((int(r[3] or 0) for r in rows if r[0] is None), 0)
        items = sorted((r for r in rows if r[0] is not None), key=lambda r: int(r[3]))
        if any(UUID(r[0]) == UNKNOWN for r in items):
            return None
        return [ClientRow(UUID(r[0]), r[1], UUID(r[2]) if r[2] else None) for r in items], top

    def _write_index(self, c: Any, rows: Sequence[IndexEntry]) -> None:
        if not rows:
            return
        c.executemany(f"INSERT OR REPLACE INTO {self.trace_table_name} VALUES (?, ?, ?, ?)",
                      [(r.event_id, r.originator_id.hex, r.version, r.causation_id) for r in rows])
        firsts = [(r.originator_id.hex, r.client_id, None if r.parent_id is None else r.parent_id.hex)
                  for r in rows if r.client_id is not None or r.parent_id is not None]
        if firsts:
            c.executemany(f"INSERT OR REPLACE INTO {self.clients_table_name} VALUES (?, ?, ?)", firsts)

    def _drop_index_of(self, c: Any, events: Iterable[tuple[UUID | str, int]]) -> None:
        keys = [(derive_event_id(UUID(str(o)), v), UUID(str(o)).hex, v) for o, v in events]
        c.executemany(f"DELETE FROM {self.trace_table_name} WHERE event_id = ?", [(k[0],) for k in keys])
        c.executemany(f"DELETE FROM {self.clients_table_name} WHERE originator_id = ?",
                      [(k[1],) for k in keys if k[2] == 1])

    def _query(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """One SELECT on a reading connection: a statement is its own transaction (the
        connections are in autocommit mode), so no BEGIN and COMMIT around it."""
        with self.datastore.get_connection(commit=False) as conn:
            cursor = conn.cursor()
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def positions_of(self, aggregate_ids: Sequence[UUID]) -> list[int]:
        """The log positions of every event of these aggregates (through the events' own
        index by aggregate), ascending."""
        found: list[int] = []
        for chunk in _chunks([UUID(str(a)).hex for a in aggregate_ids]):
            marks = ",".join("?" * len(chunk))
            found += [int(r[0]) for r in self._query(
                f"SELECT rowid FROM {self.events_table_name} WHERE originator_id IN ({marks})", chunk)]
        return sorted(found)

    def notifications_at(self, positions: Sequence[int]) -> list[Notification]:
        """The events at these log positions, in log order."""
        marks = ",".join("?" * len(positions))
        return [Notification(id=int(r[0]), originator_id=UUID(r[1]), originator_version=int(r[2]), topic=r[3],
                             state=bytes(r[4])) for r in self._query(
            f"SELECT rowid, originator_id, originator_version, topic, state FROM {self.events_table_name} "
            f"WHERE rowid IN ({marks}) ORDER BY rowid", list(positions))] if positions else []

    def forget_aggregates(self, aggregate_ids: Sequence[UUID]) -> None:
        """Drops the client-index rows of these aggregates (erasure; see ``forget_client``)."""
        with self.datastore.transaction(commit=True) as c:
            c.executemany(f"DELETE FROM {self.clients_table_name} WHERE originator_id = ?",
                          [(UUID(str(a)).hex,) for a in aggregate_ids])

    def forget_client(self, client_id: str) -> None:
        """Drops this store's client-index rows that name the client."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {self.clients_table_name} WHERE client_id = ?", (client_id,))

    def index_ready(self) -> bool:
        """Whether the indexes cover the log: its first event has its row (a store written
        before the indexes existed has none until ``careplan store reindex``)."""
        rows = self._query(f"SELECT originator_id, originator_version FROM {self.events_table_name} "
                           "ORDER BY rowid LIMIT 1", ())
        if not rows:
            return True
        return bool(self._query(f"SELECT 1 FROM {self.trace_table_name} WHERE event_id = ?",
                                (derive_event_id(UUID(rows[0][0]), int(rows[0][1])),)))

    def index_dump(self) -> tuple[list[tuple[Any, ...]], ...]:
        """The tables' rows, in a stable order (tests compare a rebuild with what was written)."""
        return ([tuple(r) for r in self._query(f"SELECT * FROM {self.trace_table_name} ORDER BY event_id", ())],
                [tuple(r) for r in self._query(f"SELECT * FROM {self.clients_table_name} ORDER BY originator_id", ())],
                [tuple(r) for r in self._query(f"SELECT * FROM {self.open_table_name} ORDER BY originator_id", ())])

    def reindex(self, mapper: Any, page: int = 5000) -> int:
        """Rebuilds both tables from the log, in one transaction; returns the events indexed."""
        with self.datastore.transaction(commit=True) as c:
            c.execute(f"DELETE FROM {self.trace_table_name}")
            c.execute(f"DELETE FROM {self.clients_table_name}")
            c.execute(f"DELETE FROM {self.open_table_name}")
            count = self._index_log(c, mapper, page)
        return count


# ------------------------------------------------------------------------- PostgreSQL


class PostgresIndexes(_Tail):
    """Mixed into the PostgreSQL recorders (services.shared.chained)."""

    events_table_name: str
    datastore: Any
    sql_create_statements: list[Any]

    def _add_index_tables(self) -> None:
        from psycopg.sql import SQL, Identifier

        schema = self.datastore.schema
        self.trace_table = Identifier(schema, f"{self.events_table_name}_trace")
        self.clients_table = Identifier(schema, f"{self.events_table_name}_clients")
        self.open_table = Identifier(schema, f"{self.events_table_name}_open")
        t, c = self.trace_table, self.clients_table
        self.sql_create_statements += [
            SQL("CREATE TABLE IF NOT EXISTS {0} (event_id uuid PRIMARY KEY, originator_id uuid NOT NULL, "
                "originator_version bigint NOT NULL, causation_id text)").format(t),
            SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (causation_id) WHERE causation_id IS NOT NULL").format(
                Identifier(f"{self.events_table_name}_trace_causation"), t),
            SQL("CREATE TABLE IF NOT EXISTS {0} (originator_id uuid PRIMARY KEY, client_id text, parent_id uuid)").format(c),
            SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (client_id) WHERE client_id IS NOT NULL").format(
                Identifier(f"{self.events_table_name}_clients_client"), c),
            SQL("CREATE INDEX IF NOT EXISTS {0} ON {1} (parent_id) WHERE parent_id IS NOT NULL").format(
                Identifier(f"{self.events_table_name}_clients_parent"), c),
            SQL("CREATE TABLE IF NOT EXISTS {0} (originator_id uuid PRIMARY KEY, client_id text, parent_id uuid, "
                "position bigint NOT NULL)").format(self.open_table),
        ]

    def _fetch_ids_after_insert_events(self, curs: Any, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        ids = super()._fetch_ids_after_insert_events(curs, stored_events, **kwargs)  # type: ignore[misc]
        self._write_index(curs, entries(stored_events))
        self._write_open(curs, opened_and_closed(stored_events, ids))
        return ids

    def _write_open(self, curs: Any, rows: Sequence[tuple[IndexEntry, int]]) -> None:
        from psycopg.sql import SQL

        for entry, position in rows:
            if entry.opens:
                curs.execute(SQL("INSERT INTO {0} VALUES (%s, %s, %s, %s) ON CONFLICT (originator_id) DO UPDATE SET "
                                 "client_id = EXCLUDED.client_id, parent_id = EXCLUDED.parent_id, "
                                 "position = EXCLUDED.position").format(self.open_table),
                             (entry.originator_id, entry.client_id, entry.parent_id, position))
            if entry.closes:
                curs.execute(SQL("DELETE FROM {0} WHERE originator_id = %s").format(self.open_table), (entry.originator_id,))

    def _mark_open_unknown(self, curs: Any) -> None:
        from psycopg.sql import SQL

        curs.execute(SQL("INSERT INTO {0} VALUES (%s, NULL, NULL, 0) ON CONFLICT (originator_id) DO NOTHING").format(
            self.open_table), (UNKNOWN,))

    def open_items(self) -> tuple[list[ClientRow], int] | None:
        from psycopg.sql import SQL, Identifier

        if not self.index_ready():
            return None
        table = Identifier(self.datastore.schema, self.events_table_name)
        rows = self._query(SQL("SELECT originator_id, client_id, parent_id, position FROM {0} UNION ALL "
                               "SELECT NULL, NULL, NULL, MAX(notification_id) FROM {1}").format(self.open_table, table), ())
        top = next((int(r["position"] or 0) for r in rows if r["originator_id"] is None), 0)
        items = sorted((r for r in rows if r["originator_id"] is not None), key=lambda r: int(r["position"]))
        if any(r["originator_id"] == UNKNOWN for r in items):
            return None
        return [ClientRow(r["originator_id"], r["client_id"], r["parent_id"]) for r in items], top

    def _write_index(self, curs: Any, rows: Sequence[IndexEntry]) -> None:
        from psycopg.sql import SQL

        if not rows:
            return
        curs.executemany(SQL("INSERT INTO {0} VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO UPDATE SET "
                             "originator_id = EXCLUDED.originator_id, originator_version = EXCLUDED.originator_version, "
                             "causation_id = EXCLUDED.causation_id").format(self.trace_table),
                         [(r.event_id, r.originator_id, r.version, r.causation_id) for r in rows])
        firsts = [(r.originator_id, r.client_id, r.parent_id) for r in rows if r.client_id is not None or r.parent_id is not None]
        if firsts:
            curs.executemany(SQL("INSERT INTO {0} VALUES (%s, %s, %s) ON CONFLICT (originator_id) DO UPDATE SET "
                                 "client_id = EXCLUDED.client_id, parent_id = EXCLUDED.parent_id").format(self.clients_table),
                             firsts)

    def _drop_index_of(self, curs: Any, events: Iterable[tuple[UUID | str, int]]) -> None:
        from psycopg.sql import SQL

        keys = [(derive_event_id(UUID(str(o)), v), UUID(str(o)), v) for o, v in events]
        if not keys:
            return
        curs.execute(SQL("DELETE FROM {0} WHERE event_id = ANY(%s::uuid[])").format(self.trace_table), ([k[0] for k in keys],))
        curs.execute(SQL("DELETE FROM {0} WHERE originator_id = ANY(%s)").format(self.clients_table),
                     ([k[1] for k in keys if k[2] == 1],))

    def _query(self, sql: Any, params: Sequence[Any]) -> list[Any]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(sql, params)
            return list(curs.fetchall())

    def positions_of(self, aggregate_ids: Sequence[UUID]) -> list[int]:
        from psycopg.sql import SQL, Identifier

        table = Identifier(self.datastore.schema, self.events_table_name)
        found: list[int] = []
        for chunk in _chunks([UUID(str(a)) for a in aggregate_ids]):
            found += [int(r["notification_id"]) for r in self._query(
                SQL("SELECT notification_id FROM {0} WHERE originator_id = ANY(%s)").format(table), (list(chunk),))]
        return sorted(found)

    def notifications_at(self, positions: Sequence[int]) -> list[Notification]:
        from psycopg.sql import SQL, Identifier

        if not positions:
            return []
        table = Identifier(self.datastore.schema, self.events_table_name)
        return [Notification(id=int(r["notification_id"]), originator_id=r["originator_id"],
                             originator_version=int(r["originator_version"]), topic=r["topic"], state=bytes(r["state"]))
                for r in self._query(SQL("SELECT notification_id, originator_id, originator_version, topic, state "
                                         "FROM {0} WHERE notification_id = ANY(%s) ORDER BY notification_id").format(table),
                                     (list(positions),))]

    def forget_aggregates(self, aggregate_ids: Sequence[UUID]) -> None:
        from psycopg.sql import SQL

        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(SQL("DELETE FROM {0} WHERE originator_id = ANY(%s)").format(self.clients_table),
                         (list(aggregate_ids),))

    def forget_client(self, client_id: str) -> None:
        from psycopg.sql import SQL

        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(SQL("DELETE FROM {0} WHERE client_id = %s").format(self.clients_table), (client_id,))

    def index_ready(self) -> bool:
        from psycopg.sql import SQL, Identifier

        table = Identifier(self.datastore.schema, self.events_table_name)
        rows = self._query(SQL("SELECT originator_id, originator_version FROM {0} ORDER BY notification_id LIMIT 1").format(
            table), ())
        if not rows:
            return True
        return bool(self._query(SQL("SELECT 1 FROM {0} WHERE event_id = %s").format(self.trace_table),
                                (derive_event_id(rows[0]["originator_id"], int(rows[0]["originator_version"])),)))

    def index_dump(self) -> tuple[list[tuple[Any, ...]], ...]:
        from psycopg.sql import SQL

        trace = self._query(SQL("SELECT event_id, originator_id, originator_version, causation_id FROM {0} "
                                "ORDER BY event_id").format(self.trace_table), ())
        clients = self._query(SQL("SELECT originator_id, client_id, parent_id FROM {0} ORDER BY originator_id").format(
            self.clients_table), ())
        opened = self._query(SQL("SELECT originator_id, client_id, parent_id, position FROM {0} ORDER BY originator_id").format(
            self.open_table), ())
        return [tuple(r.values()) for r in trace], [tuple(r.values()) for r in clients], [tuple(r.values()) for r in opened]

    def reindex(self, mapper: Any, page: int = 5000) -> int:
        from psycopg.sql import SQL

        with self.datastore.get_connection() as conn, conn.transaction(), conn.cursor() as curs:
            curs.execute(SQL("DELETE FROM {0}").format(self.trace_table))
            curs.execute(SQL("DELETE FROM {0}").format(self.clients_table))
            curs.execute(SQL("DELETE FROM {0}").format(self.open_table))
            count = self._index_log(curs, mapper, page)
        return count


# ------------------------------------------------------------------------- every store at once


class Read(NamedTuple):
    """An event read through the indexes: its store, what it was looked up by, its position."""

    store: str
    key: str
    position: int
    event: StoredEvent


class Member(NamedTuple):
    """A row of a store's client index with the aggregate's first event."""

    store: str
    row: ClientRow
    #: the first event's position in its store's log
    position: int
    first: StoredEvent


class AcrossStores:
    """The indexes of several stores read in one statement per question: on PostgreSQL the
    stores are schemas of one database (a UNION ALL over their tables); on SQLite, files
    attached to one read-only connection of its own. A causation trace then costs one
    statement per step of the chain, not one per store and step. ``None`` from :meth:`of`
    when the stores cannot be read so (in-memory SQLite, different PostgreSQL databases)."""

    def __init__(self, names: list[str], recorders: list[Any], backend: str) -> None:
        self.names, self.recorders, self.backend = names, recorders, backend
        self._sqlite: Any = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, stores: list[tuple[str, Any]]) -> AcrossStores | None:
        if not stores:
            return None
        names, recorders = [n for n, _ in stores], [r for _, r in stores]
        if all(isinstance(r, PostgresIndexes) for r in recorders):
            if len({(r.datastore.pool.kwargs.get("dbname"), r.datastore.pool.kwargs.get("host"),
                     r.datastore.pool.kwargs.get("port")) for r in recorders}) == 1:
                return cls(names, recorders, "postgres")
            return None
        if all(isinstance(r, SQLiteIndexes) for r in recorders):
            if any(r.datastore.pool.is_sqlite_memory_mode for r in recorders):
                return None
            return cls(names, recorders, "sqlite")
        return None

    # the SQL of each backend

    def _tables(self, i: int) -> tuple[str, str, str]:
        r = self.recorders[i]
        if self.backend == "postgres":
            schema = r.datastore.schema.replace('"', '""')
            q = lambda t: f'"{schema}"."{t}"'
            return q(r.events_table_name), q(f"{r.events_table_name}_trace"), q(f"{r.events_table_name}_clients")
        return (f"s{i}.{r.events_table_name}", f"s{i}.{r.events_table_name}_trace", f"s{i}.{r.events_table_name}_clients")

    def _connection(self) -> Any:
        import sqlite3

        if self._sqlite is None:
            paths = [str(r.datastore.pool.db_name).removeprefix("file:").split("?", 1)[0] for r in self.recorders]
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None, uri=True)
            for i, path in enumerate(paths):
                conn.execute(f"ATTACH DATABASE 'file:{path.replace(chr(39), chr(39) * 2)}?mode=ro' AS s{i}")
            self._sqlite = conn
        return self._sqlite

    def _rows(self, sql: str, params: list[Any]) -> list[Any]:
        if self.backend == "postgres":
            from psycopg.rows import tuple_row

            with self.recorders[0].datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
                # not prepared: a generic plan cannot see how few ids an array holds, and scans
                curs.execute(sql.replace("?", "%s"), params, prepare=False)
                return list(curs.fetchall())
        with self._lock:
            return list(self._connection().execute(sql, params).fetchall())

    def _event(self, row: Sequence[Any]) -> StoredEvent:
        oid, version, topic, state = row
        return StoredEvent(oid if isinstance(oid, UUID) else UUID(oid), int(version), topic, bytes(state))

    def _union(self, select: Callable[[int], str], params: Callable[[int], list[Any]]) -> tuple[str, list[Any]]:
        parts, values = [], []
        for i in range(len(self.recorders)):
            parts.append(select(i))
            values += params(i)
        return " UNION ALL ".join(parts), values

    def read_events(self, event_ids: Sequence[str]) -> list[Read]:
        """Each event of these ids that any store holds (``key``: its id)."""
        ids = self._ids(event_ids)
        if not ids:
            return []
        marks = self._marks(len(ids))

        def select(i: int) -> str:
            events, trace, _ = self._tables(i)
            return (f"SELECT {i}, t.event_id, {self._position}, e.originator_id, e.originator_version, e.topic, e.state "
                    f"FROM {trace} t "
                    f"{self._join(events, 't', 't.originator_version')} "
                    f"WHERE t.event_id {marks}")

        sql, params = self._union(select, lambda i: self._params(ids))
        return [Read(self.names[r[0]], str(r[1]), int(r[2]), self._event(r[3:])) for r in self._rows(sql, params)]

    def read_caused_by(self, cause_ids: Sequence[str]) -> list[Read]:
        """Every event these caused, in any store (``key``: its cause)."""
        if not cause_ids:
            return []
        marks = self._marks(len(cause_ids))

        def select(i: int) -> str:
            events, trace, _ = self._tables(i)
            return (f"SELECT {i}, t.causation_id, {self._position}, e.originator_id, e.originator_version, e.topic, e.state "
                    f"FROM {trace} t "
                    f"{self._join(events, 't', 't.originator_version')} "
                    f"WHERE t.causation_id {marks}")

        sql, params = self._union(select, lambda i: self._params(list(cause_ids)))
        return [Read(self.names[r[0]], r[1], int(r[2]), self._event(r[3:])) for r in self._rows(sql, params)]

    def trace_chain(self, event_id: str) -> tuple[list[Read], list[tuple[int, Read]]] | None:
        """PostgreSQL only (None elsewhere): a whole causation trace in one statement — the
        event and its causes upward ((depth 0: the event, then its cause, ...), ``key``: the
        event's own cause) and its effects downward ((depth, read), ``key``: the cause) — by two
        recursive queries over every store's index, each step a row at a time by key."""
        if self.backend != "postgres":
            return None
        try:
            start = UUID(str(event_id))
        except ValueError:
            return [], []

        def branches(where: str) -> str:
            parts = []
            for i in range(len(self.recorders)):
                events, trace, _ = self._tables(i)
                parts.append(f"SELECT {i} AS s, t.event_id, t.causation_id, {self._position} AS p, e.originator_id, "
                             f"e.originator_version, e.topic, e.state FROM {trace} t "
                             f"{self._join(events, 't', 't.originator_version')} WHERE {where}")
            return " UNION ALL ".join(parts)

        cause = "CASE WHEN u.causation_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' " \
                "THEN u.causation_id::uuid END"
        sql = (f"WITH RECURSIVE up AS (SELECT 0 AS depth, x.* FROM ({branches('t.event_id = ?')}) x "
               f"UNION ALL SELECT u.depth + 1, x.* FROM up u CROSS JOIN LATERAL ({branches(f't.event_id = {cause}')}) x "
               f"WHERE u.depth < 1000), "
               f"down AS (SELECT 0 AS depth, x.* FROM ({branches('t.event_id = ?')}) x "
               f"UNION ALL SELECT d.depth + 1, x.* FROM down d CROSS JOIN LATERAL "
               f"({branches('t.causation_id = d.event_id::text')}) x WHERE d.depth < 1000) "
               f"SELECT 0, * FROM up UNION ALL SELECT 1, * FROM down WHERE depth > 0")
        up, down = [], []
        for r in self._rows(sql, [start] * (2 * len(self.recorders))):
            read = Read(self.names[r[2]], r[4], int(r[5]), self._event(r[6:]))
            if r[0] == 0:
                up.append((r[1], read))
            else:
                down.append((int(r[1]), read))
        return [read for _, read in sorted(up, key=lambda pair: pair[0])], down

    def members(self, client_id: str) -> list[Member]:
        """The aggregates of a client in every store with their first events: those whose first
        event names the client, then those under the plans and subscriptions among them (and
        the plans they name). Two statements."""

        def select(where: str) -> Callable[[int], str]:
            def one(i: int) -> str:
                events, _, clients = self._tables(i)
                return (f"SELECT {i}, c.originator_id, c.client_id, c.parent_id, {self._position}, e.originator_id, "
                        f"e.originator_version, "
                        f"e.topic, e.state FROM {clients} c {self._join(events, 'c', '1')} WHERE {where}")
            return one

        def members(rows: list[Any]) -> list[Member]:
            return [Member(self.names[r[0]], ClientRow(self._uuid(r[1]), r[2], self._uuid(r[3]) if r[3] else None),
                           int(r[4]), self._event(r[5:])) for r in rows]

        sql, params = self._union(select("c.client_id = ?"), lambda i: [client_id])
        found = members(self._rows(sql, params))
        if not found:
            return []
        parents = sorted({m.row.originator_id for m in found} | {m.row.parent_id for m in found if m.row.parent_id},
                         key=str)
        known = {m.row.originator_id for m in found}
        for chunk in _chunks(parents):
            keys = [self._id_param(p) for p in chunk]
            # those that name the client were found by the first statement
            where = f"c.parent_id {self._marks(len(keys))} AND (c.client_id IS NULL OR c.client_id <> ?)"
            sql, params = self._union(select(where), lambda i, keys=keys: [*self._params(keys), client_id])
            for member in members(self._rows(sql, params)):
                if member.row.originator_id not in known:
                    known.add(member.row.originator_id)
                    found.append(member)
        return found

    @property
    def _position(self) -> str:
        """The event's position in its store's log."""
        return "e.notification_id" if self.backend == "postgres" else "e.rowid"

    def _join(self, events: str, alias: str, version: str) -> str:
        """The event an index row names, by the events' own key. On PostgreSQL a LATERAL
        subquery: a row at a time through that key, never a hash join over the whole log
        (which the planner picks for a handful of ids it cannot estimate); OFFSET 0 keeps the
        subquery from being flattened into one."""
        if self.backend == "postgres":
            return (f"CROSS JOIN LATERAL (SELECT notification_id, originator_id, originator_version, topic, state FROM {events} "
                    f"WHERE originator_id = {alias}.originator_id AND originator_version = {version} OFFSET 0) e")
        return f"JOIN {events} e ON e.originator_id = {alias}.originator_id AND e.originator_version = {version}"

    def _marks(self, n: int) -> str:
        return "= ANY(?)" if self.backend == "postgres" else f"IN ({','.join('?' * n)})"

    def _params(self, values: list[Any]) -> list[Any]:
        return [values] if self.backend == "postgres" else values

    def _uuid(self, value: Any) -> UUID:
        return value if isinstance(value, UUID) else UUID(value)

    def _id_param(self, value: UUID) -> Any:
        return value if self.backend == "postgres" else value.hex

    def _ids(self, event_ids: Sequence[str]) -> list[Any]:
        if self.backend == "sqlite":
            return list(event_ids)
        ids = []
        for e in event_ids:
            try:
                ids.append(UUID(str(e)))
            except ValueError:
                continue  # a cause that is not an event (a command's id of another form)
        return ids

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
