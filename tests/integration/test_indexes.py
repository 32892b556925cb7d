"""The indexes kept with the events (services/shared/indexes.py): written with the events,
rebuilt identically from the logs, and what lets the causation trace and a client's export read
only the aggregates of their answer (issue 17)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.audit import export as exporting
from services.audit import reading
from services.bench import scale
from services.shared.errors import AggregateMissingError
from services.shared.indexes import AcrossStores
from services.shared.settings import Settings


def test_indexes_are_written_with_the_events_rebuilt_alike_and_reads_touch_only_their_answer(
        backend_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # three clones of the bench's template: plans, courses, scores, crises with escalations, schedules
    template = scale.build_template(tmp_path / "template")
    units = scale.build(backend_settings, template, 3 * template.size)
    clone = scale.Clone(template, 1)
    client = clone.clients[template.clients[5]]  # a client whose crisis was resolved
    raised = next(e for s, e in template.events["escalation"] if s.topic.endswith(":EscalationRaised"))
    event_id = uuid.UUID(clone.ids[raised.event_id.encode()].decode())

    with reading.Stores(backend_settings) as stores:
        # written with the events: a trace row for every event, a client row for every aggregate that has one
        assert stores.indexed and len(stores.all) == 5
        dumps = {}
        for store in stores.all:
            dumps[store.name] = store.recorder.index_dump()
            assert len(dumps[store.name][0]) == units * len(template.events.get(store.name, []))
        assert dumps["care"][1] and dumps["escalation"][1]
        # the crises open (one per clone), as the view built from the log has them
        from services.escalation.open_view import OpenCrises

        escalation = stores.store("escalation")
        from_log = OpenCrises(escalation.recorder, escalation.mapper)
        monkeypatch.setattr(escalation.recorder, "open_items", lambda: None, raising=False)
        expected_open = from_log.refresh()
        monkeypatch.undo()
        from_index = OpenCrises(escalation.recorder, escalation.mapper)
        assert from_index.refresh() == expected_open and len(expected_open) == units
        assert from_index.read == units and from_log.read > 2 * units

        expected_trace = reading._trace_by_scan(stores, event_id)
        expected_members = exporting._members_by_scan(stores, client)
        assert len(expected_trace.causes) >= 2 and len(expected_trace.effects) >= 2

        # what each read touches: rows through the indexes, and no log scanned
        touched: dict[str, int] = {"rows": 0, "events": 0, "scans": 0}
        rows = AcrossStores._rows

        def counted_rows(self: AcrossStores, sql: str, params: list[Any]) -> list[Any]:
            found = rows(self, sql, params)
            touched["rows"] += len(found)
            return found

        monkeypatch.setattr(AcrossStores, "_rows", counted_rows)
        for store in stores.all:
            select_events, select_notifications = store.recorder.select_events, store.recorder.select_notifications

            def events(*args: Any, _f: Any = select_events, **kwargs: Any) -> Any:
                found = _f(*args, **kwargs)
                touched["events"] += len(found)
                return found

            def notifications(*args: Any, _f: Any = select_notifications, **kwargs: Any) -> Any:
                touched["scans"] += 1
                return _f(*args, **kwargs)

            monkeypatch.setattr(store.recorder, "select_events", events)
            monkeypatch.setattr(store.recorder, "select_notifications", notifications)

        traced = reading.trace(stores, event_id)
        assert traced == expected_trace
        answer = 1 + len(traced.causes) + len(traced.effects)
        assert touched == {"rows": answer, "events": 0, "scans": 0}, touched  # each event of the answer, once

        touched.update(rows=0, events=0, scans=0)
        found = exporting.members(stores, client)
        assert [(s.name, a) for s, a in found] == [(s.name, a) for s, a in expected_members]
        assert touched == {"rows": len(found), "events": 0, "scans": 0}, touched
        text = "".join(exporting.export_json(stores, client))
        exported_events = sum(len(a["events"]) for a in json.loads(text)["aggregates"])
        assert touched["events"] == exported_events and touched["scans"] == 0, touched
        monkeypatch.undo()

        # rebuilt from the logs: the same rows
        for store in stores.all:
            assert store.recorder.reindex(store.mapper) == len(dumps[store.name][0])
            assert store.recorder.index_dump() == dumps[store.name]

        # erasure: the client is no longer found through the index
        assert exporting.forget_client(stores, client) == len(found)
        with pytest.raises(AggregateMissingError):
            exporting.members(stores, client)


def test_bench_scale_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cli.bench import app

    monkeypatch.setenv("CAREPLAN_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["scale", "--events", "2000"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("RESULT scale_")]
    assert {line.split()[1] for line in lines} >= {"scale_build_sqlite", "scale_trace_sqlite", "scale_export_sqlite",
                                                    "scale_history_sqlite", "scale_replay_at_sqlite",
                                                    "scale_open_crises_sqlite", "scale_verify_sqlite"}
