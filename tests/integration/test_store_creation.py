"""Processes that share a store start together (the care API and care-policies under
`careplan up`); each creates the store's tables. None may fail because another got there
first: SQLite answers "database is locked" at once to the loser of that race, which once
made `careplan demo` fail to start one run in a few dozen."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from eventsourcing.sqlite import SQLiteDatastore

from services.shared.chained import ChainedSQLiteApplicationRecorder, ChainedSQLiteProcessRecorder

PROCESSES = 4
ROUNDS = 15


def _create(path: str, process_recorder: bool, barrier, results) -> None:
    recorder_class = ChainedSQLiteProcessRecorder if process_recorder else ChainedSQLiteApplicationRecorder
    recorder = recorder_class(SQLiteDatastore(path, lock_timeout=10))
    barrier.wait()
    try:
        recorder.create_table()
        results.put("created")
    except Exception as error:  # noqa: BLE001 - the test reports whatever the loser saw
        results.put(f"{type(error).__name__}: {error}")


def test_processes_creating_one_store_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    outcomes: list[str] = []
    for round_ in range(ROUNDS):
        path = str(tmp_path / f"store-{round_}.sqlite")
        barrier, results = context.Barrier(PROCESSES), context.Queue()
        processes = [context.Process(target=_create, args=(path, i % 2 == 1, barrier, results))
                     for i in range(PROCESSES)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(60)
        outcomes += [results.get(timeout=5) for _ in processes]
    assert [o for o in outcomes if o != "created"] == []
