"""Processes that share a store start together (the care API and care-policies under
`careplan up`); each creates the store's tables. None may fail because another got there
first: SQLite answers "database is locked" at once to the loser of that race, which once
made `careplan demo` fail to start one run in a few dozen; PostgreSQL's loser can trip on
the catalogue's unique index."""

from __future__ import annotations

import multiprocessing
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore

from services.shared.chained import (
    ChainedPostgresApplicationRecorder,
    ChainedPostgresProcessRecorder,
    ChainedSQLiteApplicationRecorder,
    ChainedSQLiteProcessRecorder,
)
from tests.conftest import PG

PROCESSES = 4
ROUNDS = 15


def _sqlite_recorder(path: str, process_recorder: bool) -> Any:
    recorder_class = ChainedSQLiteProcessRecorder if process_recorder else ChainedSQLiteApplicationRecorder
    return recorder_class(SQLiteDatastore(path, lock_timeout=10))


def _postgres_recorder(schema: str, process_recorder: bool) -> Any:
    recorder_class = ChainedPostgresProcessRecorder if process_recorder else ChainedPostgresApplicationRecorder
    datastore = PostgresDatastore(PG["dbname"], PG["host"], PG["port"], PG["user"], PG["password"],
                                  schema=schema, pool_size=2, max_overflow=2)
    return recorder_class(datastore, events_table_name="stored_events")


def _create(make: Callable[[str, bool], Any], where: str, process_recorder: bool, barrier: Any, results: Any) -> None:
    recorder = make(where, process_recorder)
    barrier.wait()
    try:
        recorder.create_table()
        results.put("created")
    except Exception as error:  # noqa: BLE001 - the test reports whatever the loser saw
        results.put(f"{type(error).__name__}: {error}")


def _race(make: Callable[[str, bool], Any], places: list[str]) -> list[str]:
    context = multiprocessing.get_context("fork")
    outcomes: list[str] = []
    for where in places:
        barrier, results = context.Barrier(PROCESSES), context.Queue()
        processes = [context.Process(target=_create, args=(make, where, i % 2 == 1, barrier, results))
                     for i in range(PROCESSES)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        outcomes += [results.get(timeout=5) for _ in processes]
    return [o for o in outcomes if o != "created"]


def test_processes_creating_one_sqlite_store_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    assert _race(_sqlite_recorder, [str(tmp_path / f"store-{i}.sqlite") for i in range(ROUNDS)]) == []


@pytest.mark.postgres
@pytest.mark.usefixtures("postgres_available")
def test_processes_creating_one_postgres_store_at_the_same_moment_all_succeed() -> None:
    schemas = [f"race_{secrets.token_hex(4)}" for _ in range(ROUNDS)]
    with psycopg.connect(host=PG["host"], port=PG["port"], user=PG["user"], dbname=PG["dbname"],
                         password=PG["password"] or None, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            assert _race(_postgres_recorder, schemas) == []
        finally:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
