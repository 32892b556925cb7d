"""The restore drill (issue 16), on SQLite and PostgreSQL: a backup of the data folder (and the
schemas) and the JetStream store, taken
with the system stopped; then the world moves on (client B's plan changes, client A is
erased); then the earlier backup is restored. Everything the backup held is back — B's plan
at its backed-up version, the stream with the same messages, and `audit verify` (chains,
anchors from the restored stream, positions) passes — while A stays erased: A's keys are
destroyed again, A's subjects are purged from the restored stream, and A's events cannot be
read — also after a total loss of the data folder, from a newer backup kept beside the old
one. A damaged backup, and a backup or restore while `careplan up` runs, are refused."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from uuid import UUID

from typer.testing import CliRunner

from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.cli import app as cli
from services.privacy.erasure import erase_client
from services.registry import SERVICES
from services.shared.bus import EmbeddedNats
from services.shared.privacy.erased import is_erased
from services.shared.settings import Settings
from tests.conftest import CLINICIAN, SUPERVISOR
from tests.support.bus import InProcessRelay, read_stream, with_streams

META = CommandMeta(actor=CLINICIAN)
A, B = "client-a", "client-b"
SENTINEL = "SENTINEL-4b1d"


def draft(app: CareApplication, client_id: str) -> UUID:
    return app.handle(c.DraftCarePlan(client_id=client_id, title=f"Low mood {SENTINEL}-{client_id}", strategy="short_term_moderate",
                                      therapy_models=["steady_progress"]), META).aggregate_id


async def publish_all(settings: Settings, url: str) -> None:
    async with InProcessRelay(settings, url) as relay:
        app = CareApplication(settings)
        try:
            last = app.recorder.max_notification_id() or 0
        finally:
            app.close()
        await relay.wait_position(last)


def invoke(*args: str, env: dict[str, str] | None = None) -> str:
    done = CliRunner().invoke(cli, list(args), env=env)
    assert done.exit_code == 0, done.output
    return done.output


def test_restoring_an_earlier_backup_brings_everything_back_but_the_erased_client(
    tmp_path: Path, backend_settings: Settings,
) -> None:
    data = tmp_path / "data"
    settings = backend_settings.model_copy(update={"data_dir": data, "chain_head_interval": 0.2})
    env = settings.as_environment()
    backups = tmp_path / "backups"
    for made in SERVICES:  # every store of the registry, as a started system has them
        made.application(settings).close()
    app = CareApplication(settings)
    try:
        plans = {client: draft(app, client) for client in (A, B)}
        app.handle(c.AddGoal(plan_id=plans[B], description="Walk daily"), META)
    finally:
        app.close()
    with EmbeddedNats(store_dir=data / "nats") as server:
        with_streams(server, settings)
        asyncio.run(publish_all(settings, server.url))
        backed_up_stream = asyncio.run(read_stream(server.url))
    assert len(backed_up_stream) == 3

    invoke("backup", str(backups / "b1"), env=env)
    manifest = json.loads((backups / "b1" / "manifest.json").read_text())
    assert manifest["jetstream"] and "client-keys.sqlite" in manifest["files"]
    assert ("care.sqlite" in manifest["files"]) is (settings.database == "sqlite")
    assert manifest["postgres"] == ("postgres.dump" if settings.database == "postgres" else None)

    # the world moves on: B's plan changes, and A is erased
    app = CareApplication(settings)
    try:
        app.handle(c.AddGoal(plan_id=plans[B], description="Call a friend"), META)
        assert app.get_plan(plans[B]).version == 3
    finally:
        app.close()
    with EmbeddedNats(store_dir=data / "nats") as server:  # the erasure purges the live stream too
        outcome = erase_client(settings, A, reason="Art. 17 request 2026-31", actor=SUPERVISOR, nats_url=server.url)
        assert outcome.erased and outcome.messages_purged == 1

    done = json.loads(invoke("restore", str(backups / "b1"), env=env).split("\nrestored")[0])
    assert Path(done["moved_aside"]).is_dir()
    drop_aside(settings, done["schemas_moved_aside"])
    assert done["erased_since_backup"] == 1 and done["keys_destroyed_again"] == 1
    assert done["erased_aggregates"] >= 1 and done["messages_purged"] == 1  # A's plan, back from the backup: gone again

    app = CareApplication(settings)
    try:
        assert app.get_plan(plans[B]).version == 2  # as backed up
        assert_erased(app, plans[A])
    finally:
        app.close()
    with EmbeddedNats(store_dir=data / "nats") as server:
        stream = asyncio.run(read_stream(server.url))
        assert [m.subject for m in stream] == [m.subject for m in backed_up_stream if str(plans[A]) not in m.subject]
        verified = CliRunner().invoke(cli, ["audit", "verify", "--nats", server.url], env=env)
    assert verified.exit_code == 0, verified.output
    # nothing of A's remains readable in the restored data folder (B's, restored, is there)
    assert files_holding(data, f"{SENTINEL}-{A}") == []
    assert files_holding(data, f"{SENTINEL}-{B}")

    # a total loss: the data folder is gone with its key store; a newer backup kept next to the old one
    # carries the erasure, so restoring the old one still leaves A erased
    invoke("backup", str(backups / "b2"), env=env)
    for folder in (data, *tmp_path.glob("data.replaced-*")):
        shutil.rmtree(folder)
    done = json.loads(invoke("restore", str(backups / "b1"), env=env).split("\nrestored")[0])
    assert done["moved_aside"] is None and done["erased_since_backup"] == 1 and done["messages_purged"] == 1
    drop_aside(settings, done["schemas_moved_aside"])
    assert files_holding(data, f"{SENTINEL}-{A}") == []
    app = CareApplication(settings)
    try:
        assert_erased(app, plans[A])
        assert app.get_plan(plans[B]).version == 2
    finally:
        app.close()


def test_a_damaged_backup_and_a_running_system_are_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data)
    app = CareApplication(settings)
    try:
        draft(app, A)
    finally:
        app.close()
    (data / "careplan-up.json").write_text(json.dumps({"processes": {"api": os.getpid()}}))
    refused = CliRunner().invoke(cli, ["backup", str(tmp_path / "b"), "--data-dir", str(data)])
    assert refused.exit_code == 1 and "running" in refused.output and not (tmp_path / "b").exists()
    (data / "careplan-up.json").unlink()
    invoke("backup", str(tmp_path / "b"), "--data-dir", str(data))
    with (tmp_path / "b" / "data" / "care.sqlite").open("r+b") as f:
        f.seek(200)
        f.write(b"\x00\x01")
    refused = CliRunner().invoke(cli, ["restore", str(tmp_path / "b"), "--data-dir", str(data)])
    assert refused.exit_code == 1 and "damaged" in refused.output
    assert (data / "care.sqlite").exists() and not list(tmp_path.glob("data.replaced-*"))  # nothing was touched


def assert_erased(app: CareApplication, plan_id: UUID) -> None:
    assert all(is_erased(e) for e in app.repository.event_store.get(plan_id))


def drop_aside(settings: Settings, schemas: list[str]) -> None:
    """The PostgreSQL schemas a restore moved aside (the operator drops them once it is checked)."""
    assert bool(schemas) is (settings.database == "postgres")
    if schemas:
        from psycopg import sql

        from services.shared.persistence import _admin_connection

        with _admin_connection(settings) as conn:
            for schema in schemas:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def files_holding(folder: Path, text: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]
