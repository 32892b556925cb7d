"""``careplan backup DEST`` / ``careplan restore SRC`` (issue 16): the whole data folder —
every store, the relays' and consumers' positions, the read models, the key store, the
tokens — and the embedded NATS's JetStream store, taken together so that the stores and
their positions agree with the streams.

Consistency is bought by stopping the world: both refuse while ``careplan up`` runs on the
data folder (docs/decisions.md). With every writer stopped, SQLite files are copied with
SQLite's online backup API (a page-consistent copy even if a reader holds the file), the
JetStream store directory as files (the server is stopped with the system), and PostgreSQL
with one ``pg_dump`` of the project's schemas (one transaction snapshot over all of them).

Erasures survive a restore. Restoring an older backup brings back the key store as it was,
with keys destroyed since; so before the data folder is replaced, restore collects every
tombstone it can find — the current key store's, the backup's own, and those of every
backup kept next to ``SRC`` (a newer backup carries later erasures) — and destroys those keys
again in the restored key store. For the erasures the backup did not know, it then purges
the erased aggregates' subjects from the restored streams (on a private, loopback-only
server started on the restored JetStream store for the purpose) and builds the read models
again from the stores (in which the erased clients' events cannot be read any more).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from services.shared.settings import Settings

FORMAT = 1
MANIFEST = "manifest.json"
TOMBSTONES = "tombstones.json"
POSTGRES_DUMP = "postgres.dump"
DATA = "data"
KEY_STORE = "client-keys.sqlite"
#: Files of a running system, not of its data: left out of a backup.
TRANSIENT = {"careplan-up.json", "careplan-up.json.tmp"}


class BackupError(Exception):
    """A backup or restore that cannot be done (the system runs, a damaged backup, ...)."""


def running_pids(data_dir: Path) -> list[int]:
    """The processes of a ``careplan up`` on ``data_dir`` that are alive (its ready file)."""
    try:
        info = json.loads((data_dir / "careplan-up.json").read_text())
    except (OSError, ValueError):
        return []
    alive = []
    for pid in (info.get("processes") or {}).values():
        try:
            os.kill(int(pid), 0)
        except (OSError, ValueError):
            continue
        alive.append(int(pid))
    return alive


def _refuse_if_running(data_dir: Path, what: str) -> None:
    if pids := running_pids(data_dir):
        msg = (f"careplan up is running on {data_dir} (pids {', '.join(map(str, pids))}): stop it (Ctrl-C) before "
               f"the {what}; a {what} is taken with every writer stopped, so the stores, their positions and the "
               "streams agree.")
        raise BackupError(msg)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_sqlite(path: Path) -> bool:
    if path.suffix != ".sqlite":
        return False
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _copy_sqlite(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def read_tombstones(key_store: Path) -> list[dict[str, str]]:
    """The tombstones of a key store file (hex key ids), oldest first; none if there is none."""
    if not key_store.exists():
        return []
    db = sqlite3.connect(f"file:{key_store}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key_id, client_hash, destroyed_at, why FROM key_tombstones ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # a key store without tombstones yet
        return []
    finally:
        db.close()
    return [{"key_id": bytes(k).hex(), "client_hash": c, "destroyed_at": d, "why": w} for k, c, d, w in rows]


def _linked_aggregates(key_store: Path, key_ids: Iterable[str]) -> list[UUID]:
    wanted = [bytes.fromhex(k) for k in key_ids]
    if not wanted or not key_store.exists():
        return []
    db = sqlite3.connect(f"file:{key_store}?mode=ro", uri=True)
    try:
        marks = ",".join("?" * len(wanted))
        rows = db.execute(f"SELECT aggregate_id FROM key_links WHERE key_id IN ({marks})", wanted).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [UUID(bytes=bytes(r[0])) for r in rows]


def _postgres_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, "PGHOST": settings.postgres_host, "PGPORT": str(settings.postgres_port),
            "PGUSER": settings.postgres_user, "PGPASSWORD": settings.postgres_password.get_secret_value(),
            "PGDATABASE": settings.postgres_dbname}


def backup(settings: Settings, dest: Path) -> dict[str, Any]:
    """Writes the backup into ``dest`` (which must not exist; it appears only once whole) and
    returns its manifest."""
    data_dir = settings.data_dir.resolve()
    if dest.exists():
        msg = f"{dest} exists: a backup goes into a new folder"
        raise BackupError(msg)
    if dest.resolve().is_relative_to(data_dir):
        msg = f"{dest} is inside the data folder {data_dir}: keep backups elsewhere"
        raise BackupError(msg)
    if not data_dir.is_dir():
        msg = f"no data folder {data_dir}"
        raise BackupError(msg)
    _refuse_if_running(data_dir, "backup")
    partial = dest.with_name(dest.name + ".part")
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True, mode=0o700)
    try:
        files: dict[str, str] = {}
        for source in sorted(data_dir.rglob("*")):
            relative = source.relative_to(data_dir)
            if source.is_dir() or relative.as_posix() in TRANSIENT or source.name.endswith(("-wal", "-shm", "-journal")):
                continue
            target = partial / DATA / relative
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if _is_sqlite(source):
                _copy_sqlite(source, target)  # with its WAL folded in
            else:
                shutil.copy2(source, target)
            files[relative.as_posix()] = _digest(target)
        postgres = None
        if settings.database == "postgres":
            postgres = POSTGRES_DUMP
            done = subprocess.run(["pg_dump", "--format=custom", "--no-owner", "--schema",
                                   f"{settings.postgres_schema_prefix}_*", "--file", str(partial / POSTGRES_DUMP)],
                                  env=_postgres_env(settings), capture_output=True, text=True, check=False)
            if done.returncode != 0:
                msg = f"pg_dump failed: {done.stderr.strip()[:500]}"
                raise BackupError(msg)
        tombstones = read_tombstones(data_dir / KEY_STORE)
        (partial / TOMBSTONES).write_text(json.dumps(tombstones, indent=1))
        manifest = {
            "format": FORMAT, "created_at": datetime.now(UTC).isoformat(), "data_dir": str(data_dir),
            "database": settings.database, "postgres": postgres,
            "postgres_schema_prefix": settings.postgres_schema_prefix if postgres else None,
            "postgres_digest": _digest(partial / POSTGRES_DUMP) if postgres else None,
            "jetstream": (data_dir / "nats").is_dir(), "tombstones": len(tombstones), "files": files,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1))
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


def _check(src: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((src / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        msg = f"{src} is not a careplan backup (no readable {MANIFEST})"
        raise BackupError(msg) from e
    if manifest.get("format") != FORMAT:
        msg = f"{src}: backup format {manifest.get('format')} is not {FORMAT}"
        raise BackupError(msg)
    for relative, digest in manifest["files"].items():
        path = src / DATA / relative
        if not path.exists() or _digest(path) != digest:
            msg = f"{src}: {relative} is missing or differs from the manifest: the backup is damaged"
            raise BackupError(msg)
    if manifest.get("postgres") and _digest(src / manifest["postgres"]) != manifest["postgres_digest"]:
        msg = f"{src}: the PostgreSQL dump differs from the manifest: the backup is damaged"
        raise BackupError(msg)
    return manifest


def known_tombstones(data_dir: Path, src: Path, extra: Iterable[Path] = ()) -> list[dict[str, str]]:
    """Every tombstone restore can find: the current key store's, the backup's, every backup's
    next to ``src`` and any file of tombstones given. One per key id."""
    found: dict[str, dict[str, str]] = {}
    sources = [*read_tombstones(data_dir / KEY_STORE)]
    for sibling in sorted(src.resolve().parent.iterdir()) if src.resolve().parent.is_dir() else []:
        if (sibling / MANIFEST).exists() and (sibling / TOMBSTONES).exists():
            sources += json.loads((sibling / TOMBSTONES).read_text())
    for path in extra:
        sources += json.loads(path.read_text())
    for t in sources:
        found.setdefault(t["key_id"], t)
    return list(found.values())


def restore(settings: Settings, src: Path, *, extra_tombstones: Iterable[Path] = ()) -> dict[str, Any]:
    """Replaces the data folder (and the project's PostgreSQL schemas) with the backup in
    ``src``, then destroys again every key erased since the backup was taken. The data folder
    being replaced is moved aside (``<data dir>.replaced-<time>``), never deleted. Returns what
    was done."""
    data_dir = settings.data_dir.resolve()
    if src.resolve().is_relative_to(data_dir):
        msg = f"{src} is inside the data folder {data_dir}, which the restore replaces: move it out first"
        raise BackupError(msg)
    manifest = _check(src)
    if manifest["database"] != settings.database:
        msg = f"the backup is of a {manifest['database']} system; this one is configured for {settings.database}"
        raise BackupError(msg)
    if manifest.get("postgres") and manifest["postgres_schema_prefix"] != settings.postgres_schema_prefix:
        msg = (f"the backup holds the schemas {manifest['postgres_schema_prefix']}_*; this system's prefix is "
               f"{settings.postgres_schema_prefix} (CAREPLAN_POSTGRES_SCHEMA_PREFIX)")
        raise BackupError(msg)
    if data_dir.exists():
        _refuse_if_running(data_dir, "restore")
    tombstones = known_tombstones(data_dir, src, extra_tombstones)
    backup_knew = {t["key_id"] for t in json.loads((src / TOMBSTONES).read_text())}
    aside, stamp = None, datetime.now(UTC)
    if data_dir.exists():
        aside = data_dir.with_name(f"{data_dir.name}.replaced-{stamp:%Y%m%dT%H%M%S%f}")
        data_dir.rename(aside)
    shutil.copytree(src / DATA, data_dir)
    data_dir.chmod(0o700)
    schemas_aside: list[str] = []
    if manifest.get("postgres"):
        schemas_aside = _move_schemas_aside(settings, f"replaced{stamp:%Y%m%d%H%M%S}_")
        done = subprocess.run(["pg_restore", "--no-owner", "--dbname", settings.postgres_dbname,
                               str(src / manifest["postgres"])],
                              env=_postgres_env(settings), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            msg = f"pg_restore failed: {done.stderr.strip()[:500]}"
            raise BackupError(msg)
    newer = [t for t in tombstones if t["key_id"] not in backup_knew]
    destroyed = _apply_tombstones(settings, tombstones)
    erased = _linked_aggregates(data_dir / KEY_STORE, (t["key_id"] for t in newer))
    purged = _purge_streams(settings, erased) if erased and manifest.get("jetstream") else 0
    if newer:
        _rebuild_views(settings)
    return {"restored_from": str(src), "backup_created_at": manifest["created_at"], "moved_aside": str(aside) if aside
            else None, "schemas_moved_aside": schemas_aside, "tombstones_applied": len(tombstones), "erased_since_backup": len(newer),
            "keys_destroyed_again": destroyed, "erased_aggregates": len(erased), "messages_purged": purged}


def _move_schemas_aside(settings: Settings, prefix: str) -> list[str]:
    """Renames the project's schemas to ``<prefix><schema>`` (outside the project's prefix, so
    no dump or drop of the project touches them): undoable until the operator drops them."""
    from psycopg import sql

    from services.shared import persistence

    moved = []
    with persistence._admin_connection(settings) as conn:
        rows = conn.execute("SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
                            (settings.postgres_schema_prefix.replace("_", "\\_") + "\\_%",)).fetchall()
        for (schema,) in rows:
            conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(sql.Identifier(schema),
                                                                        sql.Identifier(prefix + schema)))
            moved.append(prefix + schema)
    with persistence._schemas_lock:  # the library's tables must be made again in the restored schemas' place
        persistence._schemas_made.difference_update(
            {k for k in persistence._schemas_made if k[1].startswith(settings.postgres_schema_prefix + "_")})
    return moved


def _apply_tombstones(settings: Settings, tombstones: list[dict[str, str]]) -> int:
    if not tombstones:
        return 0
    from services.shared.keys import key_in_file
    from services.shared.privacy import keys

    path = settings.data_dir.resolve() / KEY_STORE
    with keys._stores_lock:  # a cached store of this process would hold the replaced file open
        for cached in [k for k in keys._stores if k[0] == str(path)]:
            keys._stores.pop(cached).close()
    store = keys.LocalKeyStore(path, key_in_file(keys.kek_path(settings)))
    try:
        return store.apply_tombstones(keys.Tombstone(bytes.fromhex(t["key_id"]), t["client_hash"], t["destroyed_at"],
                                                     t["why"]) for t in tombstones)
    finally:
        store.close()


def _purge_streams(settings: Settings, aggregates: list[UUID]) -> int:
    """Removes every message of ``aggregates`` from the restored stream, as the erasure does
    (services.privacy.erasure: each message deleted with the server's secure erase), on a
    private server without users on the loopback, started on the restored JetStream store for
    this and stopped again. Returns how many messages were removed."""
    from services.privacy.erasure import _purge_streams as purge
    from services.privacy.erasure import _run
    from services.shared.bus import EmbeddedNats, nats_store_key

    cipher_key = settings.cipher_key.get_secret_value() if settings.cipher_key is not None else None
    server = EmbeddedNats(store_dir=settings.data_dir.resolve() / "nats", server_name="careplan-restore",
                          store_key=nats_store_key(cipher_key) if cipher_key else None).start()
    try:
        return sum(_run(purge(server.url, settings, set(aggregates))).values())
    finally:
        server.stop()


def _rebuild_views(settings: Settings) -> None:
    """The read models again from the stores: for SQLite a new file (nothing of the old one's
    pages remains)."""
    from services.views.projection import Projection

    if settings.database == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(settings.sqlite_path("views")) + suffix).unlink(missing_ok=True)
    projection = Projection(settings)
    try:
        projection.rebuild()
    finally:
        projection.close()
