"""Per-client data keys (issue 16): the key store behind crypto-shredding.

Every client has a data key (AES-256-GCM) of their own; the key is stored wrapped
(AES-GCM) by a key-encryption key (KEK) from configuration, never in the clear. Clients are
named in the key store only by a pseudonym: HMAC-SHA256 of the client id under a secret
derived from the KEK, so the key store holds no client id.

``KeyStore`` is the interface (a KMS can be plugged in behind it); ``LocalKeyStore`` the
default: one SQLite file in the data folder (``client-keys.sqlite``) with

- ``client_keys``: the live key of each client pseudonym (key id, wrapped key, when made),
- ``key_tombstones``: append-only, one row per destroyed key (key id, pseudonym, when, why),
- ``key_links``: which key an aggregate's events are under (aggregate id -> key id), so an
  event that does not name its client (a goal added to a plan) finds its key at write time
  in any process.

Destroying a key deletes its row with ``secure_delete`` on (SQLite overwrites the freed
bytes) and then checkpoints and truncates the WAL, so no copy of the wrapped key remains in a
file; the tombstone stays. Unwrapped keys are cached in memory (an
LRU of ``client_key_cache_size``); every process checks the tombstones at most every
``CHECK_SECONDS`` when it uses the cache and drops destroyed keys (docs/decisions.md), and a
key that cannot be found is looked up in the tombstones: destroyed means erased, not an error.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol
from uuid import UUID

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.shared.keys import key_in_file
from services.shared.settings import Settings

#: How often (at most) a process looks for keys destroyed by another process.
CHECK_SECONDS = 1.0


class Tombstone(NamedTuple):
    """A destroyed key: which (key id, client pseudonym), when and why. No client id."""

    key_id: bytes
    client_hash: str
    destroyed_at: str
    why: str


class KeyDestroyedError(Exception):
    """The key was destroyed: the data under it is erased."""

    def __init__(self, tombstone: Tombstone) -> None:
        super().__init__(f"key {tombstone.key_id.hex()} was destroyed at {tombstone.destroyed_at}")
        self.tombstone = tombstone


class KeyStore(Protocol):
    def pseudonym(self, client_id: str) -> str: ...
    def key_for(self, client_id: str) -> tuple[bytes, AESGCM]:
        """The client's live key (made on first use): its id and cipher."""
    def key(self, key_id: bytes) -> AESGCM:
        """The key of ``key_id``; raises KeyDestroyedError when it was destroyed, KeyError if unknown."""
    def destroy(self, client_id: str, *, why: str) -> list[Tombstone]: ...
    def is_destroyed(self, client_id: str) -> bool: ...
    def destroyed(self, key_id: bytes) -> bool: ...
    def tombstones(self) -> list[Tombstone]: ...
    def apply_tombstones(self, tombstones: Iterable[Tombstone]) -> int: ...
    def link(self, aggregate_id: UUID, key_id: bytes) -> None: ...
    def linked(self, aggregate_id: UUID) -> bytes | None: ...


_SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS client_keys (client_hash TEXT PRIMARY KEY, key_id BLOB NOT NULL UNIQUE, "
     "wrapped BLOB NOT NULL, created_at TEXT NOT NULL)"),
    ("CREATE TABLE IF NOT EXISTS key_tombstones (seq INTEGER PRIMARY KEY AUTOINCREMENT, key_id BLOB NOT NULL UNIQUE, "
     "client_hash TEXT NOT NULL, destroyed_at TEXT NOT NULL, why TEXT NOT NULL)"),
    "CREATE INDEX IF NOT EXISTS key_tombstones_client ON key_tombstones (client_hash)",
    "CREATE TABLE IF NOT EXISTS key_links (aggregate_id BLOB PRIMARY KEY, key_id BLOB NOT NULL)",
)


class LocalKeyStore:
    """The default key store: a SQLite file under the data folder, keys wrapped by the KEK."""

    def __init__(self, path: Path, kek: bytes, *, cache_size: int = 10_000) -> None:
        self.path = path
        self._wrap = AESGCM(kek)
        self._pseudonym_key = hmac.new(kek, b"careplan client pseudonym", hashlib.sha256).digest()
        self._lock = threading.RLock()
        self._cache: OrderedDict[bytes, AESGCM] = OrderedDict()
        self._live: dict[str, bytes] = {}  # client pseudonym -> live key id (cached)
        self._cache_size = max(cache_size, 1)
        self._dead: dict[bytes, Tombstone] = {}
        self._seen_seq = 0
        self._checked = 0.0
        #: moves whenever a key is seen destroyed (here or elsewhere): callers' own caches empty then
        self.generation = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA secure_delete = ON")
        # WAL: a commit is one fsync (a new aggregate's link is written before its first event);
        # FULL: a key or link is on disk before any event under it; the WAL is truncated after a
        # key is destroyed, so no copy of the wrapped key stays in a file
        for attempt in range(40):
            try:
                self._db.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 39:
                    raise
                time.sleep(0.05)
        self._db.execute("PRAGMA synchronous = FULL")
        for statement in _SCHEMA:
            self._db.execute(statement)
        self._refresh(force=True)

    # ------------------------------------------------------------------ names

    def pseudonym(self, client_id: str) -> str:
        return hmac.new(self._pseudonym_key, client_id.encode(), hashlib.sha256).hexdigest()

    # ------------------------------------------------------------------ keys

    def key_for(self, client_id: str) -> tuple[bytes, AESGCM]:
        client_hash = self.pseudonym(client_id)
        with self._lock:
            self._refresh()
            key_id = self._live.get(client_hash)
            if key_id is not None and (cipher := self._cache.get(key_id)) is not None:
                self._cache.move_to_end(key_id)
                return key_id, cipher
            row = self._db.execute("SELECT key_id, wrapped FROM client_keys WHERE client_hash = ?",
                                   (client_hash,)).fetchone()
            if row is None:
                new_id, data_key = os.urandom(16), AESGCM.generate_key(bit_length=256)
                wrapped = self._wrap_key(new_id, client_hash, data_key)
                self._db.execute("INSERT OR IGNORE INTO client_keys (client_hash, key_id, wrapped, created_at) "
                                 "VALUES (?, ?, ?, ?)", (client_hash, new_id, wrapped, _now()))
                row = self._db.execute("SELECT key_id, wrapped FROM client_keys WHERE client_hash = ?",
                                       (client_hash,)).fetchone()
            key_id, cipher = bytes(row[0]), AESGCM(self._unwrap_key(bytes(row[0]), client_hash, bytes(row[1])))
            self._live[client_hash] = key_id
            self._remember(key_id, cipher)
            return key_id, cipher

    def key(self, key_id: bytes) -> AESGCM:
        with self._lock:
            self._refresh()
            cipher = self._cache.get(key_id)
            if cipher is not None:
                self._cache.move_to_end(key_id)
                return cipher
            if (tombstone := self._dead.get(key_id)) is not None:
                raise KeyDestroyedError(tombstone)
            row = self._db.execute("SELECT client_hash, wrapped FROM client_keys WHERE key_id = ?", (key_id,)).fetchone()
            if row is None:
                self._refresh(force=True)
                if (tombstone := self._dead.get(key_id)) is not None:
                    raise KeyDestroyedError(tombstone)
                raise KeyError(key_id.hex())
            cipher = AESGCM(self._unwrap_key(key_id, row[0], bytes(row[1])))
            self._remember(key_id, cipher)
            return cipher

    def destroy(self, client_id: str, *, why: str) -> list[Tombstone]:
        """Destroys the client's live key: its row is deleted (overwritten on disk), a
        tombstone is written, and the key leaves this process's cache at once (other
        processes' within CHECK_SECONDS). Destroying a client without a key is a no-op."""
        client_hash = self.pseudonym(client_id)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute("SELECT key_id FROM client_keys WHERE client_hash = ?", (client_hash,)).fetchall()
                made = []
                for (key_id,) in rows:
                    tombstone = Tombstone(bytes(key_id), client_hash, _now(), why[:200])
                    self._db.execute("INSERT OR IGNORE INTO key_tombstones (key_id, client_hash, destroyed_at, why) "
                                     "VALUES (?, ?, ?, ?)", tombstone)
                    made.append(tombstone)
                self._db.execute("DELETE FROM client_keys WHERE client_hash = ?", (client_hash,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._truncate_wal()
            self._live.pop(client_hash, None)
            self.generation += 1
            for tombstone in made:
                self._cache.pop(tombstone.key_id, None)
                self._dead[tombstone.key_id] = tombstone
            return made

    def is_destroyed(self, client_id: str) -> bool:
        client_hash = self.pseudonym(client_id)
        with self._lock:
            row = self._db.execute("SELECT 1 FROM key_tombstones WHERE client_hash = ? LIMIT 1", (client_hash,)).fetchone()
            return row is not None

    def destroyed(self, key_id: bytes) -> bool:
        """Whether ``key_id`` was destroyed (by any process; seen within CHECK_SECONDS)."""
        with self._lock:
            self._refresh()
            return key_id in self._dead

    def tombstones(self) -> list[Tombstone]:
        """Every destroyed key, oldest first: what a restore of an older backup must apply again."""
        with self._lock:
            rows = self._db.execute("SELECT key_id, client_hash, destroyed_at, why FROM key_tombstones ORDER BY seq").fetchall()
            return [Tombstone(bytes(r[0]), r[1], r[2], r[3]) for r in rows]

    def apply_tombstones(self, tombstones: Iterable[Tombstone]) -> int:
        """After a restore: destroys again every key named by ``tombstones`` (kept from before the
        restore) and records the tombstones; returns how many keys were still there."""
        destroyed = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for t in tombstones:
                    self._db.execute("INSERT OR IGNORE INTO key_tombstones (key_id, client_hash, destroyed_at, why) "
                                     "VALUES (?, ?, ?, ?)", (t.key_id, t.client_hash, t.destroyed_at, t.why))
                    destroyed += self._db.execute("DELETE FROM client_keys WHERE key_id = ?", (t.key_id,)).rowcount
                    self._cache.pop(t.key_id, None)
                    if self._live.get(t.client_hash) == t.key_id:
                        self._live.pop(t.client_hash, None)
                self.generation += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._truncate_wal()
            self._refresh(force=True)
        return destroyed

    # ------------------------------------------------------------------ links

    def link(self, aggregate_id: UUID, key_id: bytes) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO key_links (aggregate_id, key_id) VALUES (?, ?)",
                             (aggregate_id.bytes, key_id))

    def linked(self, aggregate_id: UUID) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT key_id FROM key_links WHERE aggregate_id = ?", (aggregate_id.bytes,)).fetchone()
            return bytes(row[0]) if row else None

    def linked_to_client(self, client_id: str) -> list[UUID]:
        """The aggregates whose events are under any key the client has had (live or destroyed)."""
        client_hash = self.pseudonym(client_id)
        with self._lock:
            rows = self._db.execute(
                "SELECT l.aggregate_id FROM key_links l WHERE l.key_id IN "
                "(SELECT key_id FROM client_keys WHERE client_hash = ? UNION "
                " SELECT key_id FROM key_tombstones WHERE client_hash = ?)", (client_hash, client_hash)).fetchall()
            return [UUID(bytes=bytes(r[0])) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ internals

    def _truncate_wal(self) -> None:
        """Checkpoints and empties the WAL (other processes' readers may hold it a moment)."""
        for _ in range(100):
            busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy and not busy[0]:
                return
            time.sleep(0.02)

    def _remember(self, key_id: bytes, cipher: AESGCM) -> None:
        self._cache[key_id] = cipher
        self._cache.move_to_end(key_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _refresh(self, *, force: bool = False) -> None:
        """Drops keys destroyed (by any process) since the last look, at most every CHECK_SECONDS."""
        now = time.monotonic()
        if not force and now - self._checked < CHECK_SECONDS:
            return
        self._checked = now
        rows = self._db.execute("SELECT seq, key_id, client_hash, destroyed_at, why FROM key_tombstones WHERE seq > ? "
                                "ORDER BY seq", (self._seen_seq,)).fetchall()
        if rows:
            self.generation += 1
        for seq, key_id, client_hash, at, why in rows:
            tombstone = Tombstone(bytes(key_id), client_hash, at, why)
            self._dead[tombstone.key_id] = tombstone
            self._cache.pop(tombstone.key_id, None)
            if self._live.get(client_hash) == tombstone.key_id:
                self._live.pop(client_hash, None)
            self._seen_seq = seq

    def _wrap_key(self, key_id: bytes, client_hash: str, data_key: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._wrap.encrypt(nonce, data_key, key_id + client_hash.encode())

    def _unwrap_key(self, key_id: bytes, client_hash: str, wrapped: bytes) -> bytes:
        return self._wrap.decrypt(wrapped[:12], wrapped[12:], key_id + client_hash.encode())


def _now() -> str:
    return datetime.now(UTC).isoformat()


_stores: dict[tuple[str, bytes], LocalKeyStore] = {}
_stores_lock = threading.Lock()


def kek_path(settings: Settings) -> Path:
    return settings.client_kek_file or settings.data_dir / "client-keys.kek"


def key_store_path(settings: Settings) -> Path:
    return settings.data_dir / "client-keys.sqlite"


def key_store_at(path: Path, kek: bytes, cache_size: int = 10_000) -> LocalKeyStore:
    """One key store object per file and KEK in a process (every application's mapper shares it)."""
    key = (str(path.resolve()), kek)
    with _stores_lock:
        store = _stores.get(key)
        if store is None or not path.exists():
            store = _stores[key] = LocalKeyStore(path, kek, cache_size=cache_size)
        return store


def key_store(settings: Settings) -> LocalKeyStore:
    return key_store_at(key_store_path(settings), key_in_file(kek_path(settings)), settings.client_key_cache_size)
