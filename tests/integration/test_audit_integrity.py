"""The hash chain over each notification log: kept as events are written, and verify
finds any edited, deleted, inserted or reordered stored event — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from domain.catalogues.care import CopingSkill
from services.audit.integrity import RECORD_STORES, Anchor, verify_all, verify_store
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.shared.persistence import OutboxStores
from services.shared.settings import Settings
from tests.conftest import CLINICIAN

META = CommandMeta(actor=CLINICIAN)


def fill(settings: Settings, notes: int = 30) -> None:
    """A care plan with ``notes`` progress notes, in a system that has started (every store of
    the registry exists, as `careplan up` leaves it)."""
    for store in RECORD_STORES:
        OutboxStores(settings, store).close()
    app = CareApplication(settings)
    try:
        plan = app.handle(c.DraftCarePlan(client_id="client-1", title="Chain", strategy="short_term_moderate",
                                          therapy_models=["steady_drive"]), META).aggregate_id
        app.handle(c.TargetCopingSkill(plan_id=plan, skill=CopingSkill.COMMUNICATION), META)
        for i in range(notes):
            app.handle(c.RecordSkillProgress(plan_id=plan, skill=CopingSkill.COMMUNICATION, note=f"note {i}"), META)
    finally:
        app.close()


class Table:
    """Direct access to the stored events, as someone with the database file would have."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.database == "sqlite":
            self.conn: Any = sqlite3.connect(settings.sqlite_path("care"))
            self.events, self.id_column, self.mark = "stored_events", "rowid", "?"
        else:
            import psycopg

            self.conn = psycopg.connect(host=settings.postgres_host, port=settings.postgres_port, user=settings.postgres_user,
                                        dbname=settings.postgres_dbname, autocommit=True)
            self.events, self.id_column, self.mark = f"{settings.postgres_schema('care')}.care_events", "notification_id", "%s"

    def run(self, sql: str, *params: Any) -> list[Any]:
        cursor = self.conn.execute(sql.format(t=self.events, id=self.id_column, m=self.mark), params)
        rows = cursor.fetchall() if cursor.description else []
        if self.settings.database == "sqlite":
            self.conn.commit()
        return rows

    def close(self) -> None:
        self.conn.close()


def by_store(reports: list[Any]) -> dict[str, Any]:
    return {r.store: r for r in reports}


def edit_a_byte(t: Table) -> int:
    ((state,),) = t.run("SELECT state FROM {t} WHERE {id} = 10")
    changed = bytearray(state)
    changed[len(changed) // 2] ^= 0x01
    t.run("UPDATE {t} SET state = {m} WHERE {id} = 10", bytes(changed))
    return 10


def delete_a_row(t: Table) -> int:
    t.run("DELETE FROM {t} WHERE {id} = 12")
    return 12


def insert_a_row(t: Table) -> int:
    ((originator, version, topic, state),) = t.run(
        "SELECT originator_id, originator_version, topic, state FROM {t} ORDER BY {id} DESC LIMIT 1")
    t.run("INSERT INTO {t} (originator_id, originator_version, topic, state) VALUES ({m}, {m}, {m}, {m})",
          originator, version + 1, topic, state)
    (((position,),)) = t.run("SELECT max({id}) FROM {t}")
    return position


def swap_two_rows(t: Table) -> int:
    rows = {r[0]: r[1:] for r in t.run("SELECT {id}, originator_id, originator_version, topic, state FROM {t} "
                                       "WHERE {id} IN (14, 15)")}
    # the rows keep their positions; their contents trade places (versions via a free value first)
    t.run("UPDATE {t} SET originator_version = -1 WHERE {id} = 14")
    t.run("UPDATE {t} SET originator_id = {m}, originator_version = {m}, topic = {m}, state = {m} WHERE {id} = 15", *rows[14])
    t.run("UPDATE {t} SET originator_id = {m}, originator_version = {m}, topic = {m}, state = {m} WHERE {id} = 14", *rows[15])
    return 14


TAMPERING: dict[str, Callable[[Table], int]] = {
    "edited": edit_a_byte, "deleted": delete_a_row, "inserted": insert_a_row, "reordered": swap_two_rows,
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_verify_names_the_first_broken_position_and_the_kind_of_break(backend_settings: Settings, kind: str) -> None:
    fill(backend_settings)
    before = by_store(verify_all(backend_settings))["care"]
    assert all(r.ok for r in verify_all(backend_settings)) and before.ok and before.events == 32 and before.head_position == 32
    table = Table(backend_settings)
    try:
        position = TAMPERING[kind](table)
    finally:
        table.close()
    report = verify_store(backend_settings, "care")
    assert not report.ok and report.first_break is not None
    assert (report.first_break.kind, report.first_break.position) == (kind, position), report.first_break


def test_links_are_written_with_the_events_or_not_at_all(backend_settings: Settings) -> None:
    fill(backend_settings, notes=3)
    app = CareApplication(backend_settings)
    try:
        plan = next(iter(app.recorder.select_notifications(start=1, limit=1))).originator_id
        stale = app.get_plan(plan)
        app.handle(c.RecordSkillProgress(plan_id=plan, skill=CopingSkill.COMMUNICATION, note="now"), META)
        with pytest.raises(Exception):  # noqa: B017 - a conflicting write: nothing of it may remain
            app.handle(c.RecordSkillProgress(plan_id=plan, skill=CopingSkill.COMMUNICATION, note="late"),
                       META.model_copy(update={"expected_version": stale.version}))
        head = app.recorder.chain_head()
    finally:
        app.close()
    report = verify_store(backend_settings, "care")
    assert report.ok and head == (report.head_position, bytes.fromhex(report.head_link)) and report.events == 6


def test_an_anchor_catches_a_rewritten_chain(backend_settings: Settings) -> None:
    fill(backend_settings, notes=5)
    report = by_store(verify_all(backend_settings))["care"]
    anchor = Anchor(store="care", position=report.head_position, link=report.head_link)
    assert verify_store(backend_settings, "care", [anchor]).ok
    forged = Anchor(store="care", position=report.head_position, link="00" * 32)
    broken = verify_store(backend_settings, "care", [forged])
    assert not broken.ok and broken.first_break.kind == "anchor-mismatch"


def test_verify_command_exits_non_zero_on_a_break(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    fill(settings)
    verify = [sys.executable, "-m", "services.cli", "audit", "verify", "--data-dir", str(tmp_path), "--json"]
    ok = subprocess.run(verify, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(r["ok"] for r in json.loads(ok.stdout))
    table = Table(settings)
    try:
        delete_a_row(table)
    finally:
        table.close()
    broken = subprocess.run(verify[:-1], capture_output=True, text=True, env={**__import__("os").environ, "COLUMNS": "200"})
    assert broken.returncode == 1
    assert "deleted" in broken.stdout and "12" in broken.stdout


async def test_the_relay_publishes_the_chain_head_and_it_anchors_verify(tmp_path: Path) -> None:
    import nats

    from services.shared.bus import AUDIT_STREAM, EmbeddedNats
    from tests.support.bus import InProcessRelay, with_streams

    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        settings = Settings(data_dir=tmp_path / "data", chain_head_interval=0.2)
        fill(settings, notes=3)
        async with InProcessRelay(settings, server.url) as relay:
            await relay.wait_position(5)
            nc = await nats.connect(server.url)
            try:
                js = nc.jetstream()
                for _ in range(100):
                    try:
                        if (await js.stream_info(AUDIT_STREAM)).state.messages:
                            break
                    except Exception:  # noqa: BLE001 - not created yet
                        pass
                    await asyncio.sleep(0.1)
                message = await js.get_last_msg(AUDIT_STREAM, "audit.careplan.v1.chain.care")
                held = await read_all(js, "CARE")  # the events' stream holds events (and relay watermarks), no heads
                assert len([m for m in held if m.subject.startswith("care.")]) == 5
                assert not [m for m in held if m.subject.startswith("audit.")]
            finally:
                await nc.close()
    head = json.loads(message.data)
    assert (head["store"], head["position"]) == ("care", 5)
    anchor = Anchor(store="care", position=head["position"], link=head["link"])
    assert verify_store(settings, "care", [anchor]).ok
    table = Table(settings)
    try:  # rewrite the last event and its link, as someone holding the database could
        edit_a_byte_and_relink(table, 5)
    finally:
        table.close()
    assert verify_store(settings, "care").ok  # the chain alone is consistent again...
    rewritten = verify_store(settings, "care", [anchor])
    assert not rewritten.ok and rewritten.first_break.kind == "anchor-mismatch"  # ...the published head is not


async def read_all(js: Any, stream: str) -> list[Any]:
    last = (await js.stream_info(stream)).state.last_seq
    return [await js.get_msg(stream, seq) for seq in range(1, last + 1)]


def edit_a_byte_and_relink(t: Table, position: int) -> None:
    from services.shared.chained import link_of

    ((originator, version, topic, state),) = t.run(
        "SELECT originator_id, originator_version, topic, state FROM {t} WHERE {id} = {m}", position)
    changed = bytearray(state)
    changed[len(changed) // 2] ^= 0x01
    t.run("UPDATE {t} SET state = {m} WHERE {id} = {m}", bytes(changed), position)
    chain = "stored_events_chain" if t.settings.database == "sqlite" else f"{t.events}_chain"
    ((previous,),) = t.run(f"SELECT link FROM {chain} WHERE notification_id = {{m}}", position - 1)
    t.run(f"UPDATE {chain} SET link = {{m}} WHERE notification_id = {{m}}",
          link_of(bytes(previous), position, originator, version, topic, bytes(changed)), position)


# ------------------------------------------------------------------ side doors (issue 13, finding 7)


def drop_store(settings: Settings, store: str, *, relay_too: bool = False) -> None:
    """Removes a whole store, as someone holding the database could: the SQLite file (with
    its WAL; ``relay_too``: and its relay's position file), or the PostgreSQL schema."""
    if settings.database == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{settings.sqlite_path(store)}{suffix}").unlink(missing_ok=True)
            if relay_too:
                (settings.data_dir / f"relay-{store}.sqlite{suffix}").unlink(missing_ok=True)
        return
    import psycopg

    with psycopg.connect(host=settings.postgres_host, port=settings.postgres_port, user=settings.postgres_user,
                         dbname=settings.postgres_dbname, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{settings.postgres_schema(store)}" CASCADE')


def test_a_store_of_the_registry_that_is_gone_fails_verify(backend_settings: Settings) -> None:
    fill(backend_settings, notes=3)
    assert all(r.ok for r in verify_all(backend_settings))
    drop_store(backend_settings, "care")
    reports = by_store(verify_all(backend_settings))
    assert not reports["care"].ok and reports["care"].first_break.kind == "missing", reports
    assert all(r.ok for store, r in reports.items() if store != "care")


def test_a_store_with_a_published_head_must_exist_and_hold_it(backend_settings: Settings) -> None:
    fill(backend_settings, notes=3)
    care = by_store(verify_all(backend_settings))["care"]
    head = Anchor(store="care", position=care.head_position, link=care.head_link)
    for store in RECORD_STORES:  # every store gone: without the head this looks like a fresh install
        drop_store(backend_settings, store, relay_too=True)
    assert verify_all(backend_settings) == []
    (report,) = verify_all(backend_settings, [head])
    assert (report.store, report.ok, report.first_break.kind) == ("care", False, "missing")


def test_an_emptied_store_fails_against_its_published_head(backend_settings: Settings) -> None:
    fill(backend_settings, notes=3)
    care = by_store(verify_all(backend_settings))["care"]
    head = Anchor(store="care", position=care.head_position, link=care.head_link)
    table = Table(backend_settings)
    try:
        chain = "stored_events_chain" if backend_settings.database == "sqlite" else f"{table.events}_chain"
        table.run("DELETE FROM {t}")
        table.run(f"DELETE FROM {chain}")
    finally:
        table.close()
    assert verify_store(backend_settings, "care").ok  # an empty chain is consistent...
    report = verify_store(backend_settings, "care", [head])  # ...the published head is not there
    assert not report.ok and report.first_break.kind == "anchor-mismatch" and "before the published head" in \
        report.first_break.detail


def test_a_store_holding_events_with_its_published_heads_gone_fails_unless_first_anchoring(
        backend_settings: Settings) -> None:
    """A chain rewritten by someone who also removed its published heads (a purged
    CARE_AUDIT, an emptied anchor file) is consistent; asked to check against the heads,
    verify must not take "no head" for "nothing to check"."""
    import os

    fill(backend_settings, notes=3)
    care = by_store(verify_all(backend_settings))["care"]
    head = Anchor(store="care", position=care.head_position, link=care.head_link)
    assert all(r.ok for r in verify_all(backend_settings, [head], anchored=True))
    table = Table(backend_settings)
    try:
        edit_a_byte_and_relink(table, care.head_position)
    finally:
        table.close()
    assert all(r.ok for r in verify_all(backend_settings, []))  # the chain alone is consistent again
    reports = by_store(verify_all(backend_settings, [], anchored=True))
    assert not reports["care"].ok and reports["care"].first_break.kind == "unanchored", reports["care"]
    assert "no published chain head" in reports["care"].first_break.detail
    # stores without events need no head; nor does the auditors' log, whose head is never published
    assert all(r.ok for store, r in reports.items() if store != "care")

    anchors = backend_settings.data_dir / "heads.json"
    anchors.write_text("[]")
    env = {**os.environ, **backend_settings.as_environment(), "COLUMNS": "250"}
    verify = [sys.executable, "-m", "services.cli", "audit", "verify", "--data-dir", str(backend_settings.data_dir),
              "--anchor", str(anchors)]
    refused = subprocess.run(verify, check=False, capture_output=True, text=True, env=env)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "unanchored" in refused.stdout and "--first-anchoring" in refused.stdout, refused.stdout
    first = subprocess.run([*verify, "--first-anchoring"], check=False, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "First anchoring" in first.stdout


async def test_a_purged_care_audit_stream_does_not_make_a_rewritten_chain_verify_green(
        backend_settings: Settings) -> None:
    """The realistic way to remove the anchors: purge the published heads from CARE_AUDIT
    (a server of our own here, without users) after rewriting the chain."""
    import os

    import nats

    from services.shared.bus import AUDIT_STREAM, EmbeddedNats
    from tests.support.bus import InProcessRelay, with_streams

    settings = backend_settings.model_copy(update={"chain_head_interval": 0.2})
    env = {**os.environ, **settings.as_environment(), "COLUMNS": "250"}
    with EmbeddedNats(store_dir=settings.data_dir / "nats") as server:
        with_streams(server)
        fill(settings, notes=3)
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            async with InProcessRelay(settings, server.url) as relay:
                await relay.wait_position(5)
                for _ in range(100):
                    if (await js.stream_info(AUDIT_STREAM)).state.messages:
                        break
                    await asyncio.sleep(0.1)
            verify = [sys.executable, "-m", "services.cli", "audit", "verify", "--data-dir", str(settings.data_dir),
                      "--nats", server.url]
            anchored = await asyncio.to_thread(subprocess.run, verify, check=False, capture_output=True, text=True,
                                               env=env)
            assert anchored.returncode == 0, anchored.stdout + anchored.stderr
            table = Table(settings)
            try:
                edit_a_byte_and_relink(table, 5)
            finally:
                table.close()
            await js.purge_stream(AUDIT_STREAM)
            refused = await asyncio.to_thread(subprocess.run, verify, check=False, capture_output=True, text=True,
                                              env=env)
            assert refused.returncode == 1, refused.stdout + refused.stderr
            assert "unanchored" in refused.stdout and "care" in refused.stdout, refused.stdout
        finally:
            await nc.close()


def test_a_fresh_install_verifies_green(tmp_path: Path) -> None:
    verify = [sys.executable, "-m", "services.cli", "audit", "verify", "--data-dir", str(tmp_path)]
    fresh = subprocess.run(verify, check=False, capture_output=True, text=True, env={**__import__("os").environ, "COLUMNS": "200"})
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "fresh install" in fresh.stdout and "not checked" in fresh.stdout


def plan_in_crisis(settings: Settings) -> tuple[Any, Any]:
    """A plan whose events say: one open crisis; a snapshot taken after it (interval 4)."""
    from uuid import uuid4

    from domain.base import CommandContext
    from services.shared.clock import MonotonicClock

    app = CareApplication(settings)
    try:
        plan_id = app.handle(c.DraftCarePlan(client_id="client-1", title="Crisis", strategy="short_term_moderate",
                                             therapy_models=["steady_drive"]), META).aggregate_id
        app.handle(c.TargetCopingSkill(plan_id=plan_id, skill=CopingSkill.COMMUNICATION), META)
        crisis = uuid4()
        plan = app.get_plan(plan_id)
        plan.activate_emergency_support(crisis, reason="PHQ-9 item 9", ctx=CommandContext(
            actor=CareApplication.actor, at=MonotonicClock()(), correlation_id=uuid4()))
        app.save(plan)
        app.handle(c.RecordSkillProgress(plan_id=plan_id, skill=CopingSkill.COMMUNICATION, note="v4"), META)
    finally:
        app.close()
    return plan_id, crisis


def edit_snapshot(settings: Settings, plan_id: Any, change: Callable[[dict[str, Any]], None]) -> None:
    """Rewrites the plan's latest snapshot's state in the database."""
    table = Table(settings)
    try:
        snapshots = "stored_snapshots" if settings.database == "sqlite" else f"{settings.postgres_schema('care')}.care_snapshots"
        key = plan_id.hex if settings.database == "sqlite" else plan_id
        rows = table.run(f"SELECT originator_version, state FROM {snapshots} WHERE originator_id = {{m}} "
                         "ORDER BY originator_version DESC", key)
        assert rows, "no snapshot was taken"
        version, state = rows[0]
        body = json.loads(bytes(state))
        change(body["state"])
        table.run(f"UPDATE {snapshots} SET state = {{m}} WHERE originator_id = {{m}} AND originator_version = {{m}}",
                  json.dumps(body).encode(), key, version)
    finally:
        table.close()


def test_an_edited_snapshot_fails_verify_and_the_application_decides_on_the_events(backend_settings: Settings) -> None:
    from domain.errors import DomainError

    # snapshots edited by hand in the clear: per-client keys off (with them a snapshot is sealed too)
    settings = backend_settings.model_copy(update={"snapshot_interval": 4, "aggregate_cache_size": 0, "client_keys": False})
    for store in RECORD_STORES:
        OutboxStores(settings, store).close()
    plan_id, crisis = plan_in_crisis(settings)
    care = by_store(verify_all(settings))["care"]
    assert care.ok and care.snapshots_checked == 1, care
    edit_snapshot(settings, plan_id, lambda state: state.update(open_crises=[]))
    assert verify_store(settings, "care").ok is False
    care = by_store(verify_all(settings))["care"]
    assert not care.ok and care.first_break is None  # the chain is whole; the snapshot is not
    assert [(p.aggregate_id, p.version) for p in care.snapshot_problems] == [(str(plan_id), 4)], care
    app = CareApplication(settings)
    try:
        plan = app.get_plan(plan_id)
        assert plan.open_crises == [crisis] and plan.version == 4  # what the events say
        from uuid import uuid4

        from domain.base import CommandContext

        with pytest.raises(DomainError, match="already active"):  # the decision the events imply
            plan.activate_emergency_support(crisis, reason="again", ctx=CommandContext(
                actor=CareApplication.actor, at=plan.modified_on, correlation_id=uuid4()))
    finally:
        app.close()


def test_a_snapshot_relinked_by_hand_is_caught_by_the_replay(backend_settings: Settings) -> None:
    """Someone who recomputes the digest (no cipher key: its key is known) gets the snapshot
    used, but verify replays the aggregate and names it."""
    from services.shared.snapshots import snapshot_digest, snapshot_key

    settings = backend_settings.model_copy(update={"snapshot_interval": 4, "aggregate_cache_size": 0, "client_keys": False})
    for store in RECORD_STORES:
        OutboxStores(settings, store).close()
    plan_id, _ = plan_in_crisis(settings)
    app = CareApplication(settings)
    try:
        link = app.recorder.event_link(plan_id, 4)
    finally:
        app.close()

    def forge(state: dict[str, Any]) -> None:
        state.update(open_crises=[])

    edit_snapshot(settings, plan_id, forge)
    table = Table(settings)  # recompute the digest of the edited snapshot
    try:
        snapshots = "stored_snapshots" if settings.database == "sqlite" else f"{settings.postgres_schema('care')}.care_snapshots"
        key = plan_id.hex if settings.database == "sqlite" else plan_id
        ((state,),) = table.run(f"SELECT state FROM {snapshots} WHERE originator_id = {{m}}", key)
        body = json.loads(bytes(state))
        from domain.base import AggregateSnapshot

        body["chain_digest"] = snapshot_digest(AggregateSnapshot.model_validate(
            {**body, "originator_id": plan_id, "originator_version": 4}), link, snapshot_key(None))
        table.run(f"UPDATE {snapshots} SET state = {{m}} WHERE originator_id = {{m}}", json.dumps(body).encode(), key)
    finally:
        table.close()
    care = by_store(verify_all(settings))["care"]
    assert not care.ok and [p.detail for p in care.snapshot_problems] == ["its state is not what the aggregate's events give"]


async def test_positions_moved_forward_by_hand_are_caught_against_the_stream(backend_settings: Settings) -> None:
    import nats
    from eventsourcing.persistence import InfrastructureFactory, Tracking
    from eventsourcing.utils import Environment

    from services.audit.integrity import check_positions, published_heads, with_positions
    from services.shared.bus import EmbeddedNats
    from services.shared.persistence import eventsourcing_env
    from services.shared.tracking import stream_tracking_name
    from tests.support.bus import InProcessRelay, with_streams

    settings = backend_settings.model_copy(update={"chain_head_interval": 0.2})
    with EmbeddedNats(store_dir=settings.data_dir / "nats") as server:
        with_streams(server)
        fill(settings, notes=3)
        async with InProcessRelay(settings, server.url) as relay:
            await relay.wait_position(5)
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            assert all(c.ok for c in await check_positions(settings, js))
            # the relay's position moved past three events it never published
            fill_more = CareApplication(settings)
            try:
                plan = next(iter(fill_more.recorder.select_notifications(start=1, limit=1))).originator_id
                for i in range(3):
                    fill_more.handle(c.RecordSkillProgress(plan_id=plan, skill=CopingSkill.COMMUNICATION, note=f"x{i}"), META)
            finally:
                fill_more.close()
            stores = OutboxStores(settings, "care")
            try:
                stores.tracking.insert_tracking(Tracking("care", 8))
            finally:
                stores.close()
            # the escalation consumer's positions moved past what the stream holds
            last_seq = (await js.stream_info("CARE")).state.last_seq
            factory = InfrastructureFactory.construct(Environment("escalation", eventsourcing_env(settings, "escalation")))
            try:
                recorder = factory.process_recorder()
                recorder.insert_tracking(Tracking(stream_tracking_name("CARE", "escalation"), last_seq + 10))
                recorder.insert_tracking(Tracking("care", 7))
            finally:
                factory.close()
            assert all(r.ok for r in verify_all(settings, await published_heads(js)))  # the chains say nothing of it
            checks = {(ch.who, ch.of): ch for ch in await check_positions(settings, js)}
            reports = by_store(with_positions(verify_all(settings), list(checks.values())))
        finally:
            await nc.close()
        relay_care = checks[("relay:care", "care")]
        assert (relay_care.ok, relay_care.recorded, relay_care.on_stream) == (False, 8, 5)
        assert not checks[("consumer:escalation", "stream CARE")].ok
        assert (checks[("consumer:escalation", "care")].ok, checks[("consumer:escalation", "care")].on_stream) == (False, 5)
        assert not reports["care"].ok and not reports["escalation"].ok
        assert reports["assessment"].ok and reports["scheduling"].ok
        if settings.database == "sqlite":
            verify = [sys.executable, "-m", "services.cli", "audit", "verify", "--data-dir", str(settings.data_dir),
                      "--nats", server.url]
            cli = subprocess.run(verify, check=False, capture_output=True, text=True,
                                 env={**__import__("os").environ, "COLUMNS": "250"})
            assert cli.returncode == 1, cli.stdout + cli.stderr
            assert "relay:care position of care 8 is ahead of the stream (5)" in cli.stdout, cli.stdout
