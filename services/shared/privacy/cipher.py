"""The stores' cipher with per-client keys (issue 16).

Selected through the library's ``CIPHER_TOPIC`` (services.shared.persistence), so every
factory built from our settings (applications, relays, audit readers, views) has it.
``PydanticMapper`` asks it to seal each event: an event that belongs to a client is
encrypted under the client's data key and stored as

    MAGIC | key id (16 bytes) | metadata length (2 bytes) | metadata (JSON) | nonce (12) | AES-GCM(content)

with the header (everything before the nonce) as associated data. The metadata is the
event's time, actor id and role, and correlation id: no personal data, kept in the clear
so an erased event still says when, who and in which story. The key id names the key, so
decryption needs no lookup of the client. Events of no client keep the single-key
``CIPHER_KEY`` encryption (or none), as before.

Which client an event belongs to, at write time:

1. its own ``client_id`` (the first event of every client aggregate names it; so do a few later ones);
2. else the client of the plan named by its ``plan_id`` (a PlanRisk, a PlanStrategy);
3. else the client of its aggregate: the key its first event was under.

(2) and (3) read the key store's links (aggregate id -> key id), written when an
aggregate's first event is sealed, in whichever process; a bounded memo in each mapper keeps
the answer, so only an aggregate's first write (or first write after a restart) asks the key store.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from time import monotonic as _monotonic
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.cipher import AESCipher
from eventsourcing.persistence import Cipher
from eventsourcing.utils import Environment

from services.shared.keys import key_in_file
from services.shared.privacy.keys import CHECK_SECONDS, KeyDestroyedError, LocalKeyStore, Tombstone, key_store_at

MAGIC = b"CPK1"
#: event class -> (has client_id, has plan_id, is a snapshot)
_shapes: dict[type, tuple[bool, bool, bool]] = {}
_HEAD = len(MAGIC) + 16 + 2
_MEMO_MAX = 200_000
_NONE = b""


class ClientCipher(Cipher):
    def __init__(self, environment: Environment) -> None:
        self.keys: LocalKeyStore = key_store_at(
            Path(environment["CLIENT_KEYS_PATH"]), key_in_file(Path(environment["CLIENT_KEK_PATH"])),
            int(environment.get("CLIENT_KEY_CACHE_SIZE") or 10_000))
        self.fallback: Cipher | None = AESCipher(environment) if environment.get("CIPHER_KEY") else None
        #: aggregate id -> key id of its client (b"" for an aggregate of no client)
        self._memo: dict[UUID, bytes] = {}
        #: unwrapped keys at hand without the key store's lock: emptied every CHECK_SECONDS (so the
        #: next use asks the key store, which looks for keys destroyed elsewhere) and when this
        #: process destroys one (the key store's generation moves)
        self._ciphers: dict[bytes, Any] = {}
        self._fresh_until = 0.0
        self._generation = -1
        self._cache_size = int(environment.get("CLIENT_KEY_CACHE_SIZE") or 10_000)

    # --------------------------------------------------------------- the Cipher interface

    def encrypt(self, plaintext: bytes) -> bytes:
        return self.fallback.encrypt(plaintext) if self.fallback else plaintext

    def decrypt(self, ciphertext: bytes) -> bytes:
        if ciphertext[:4] == MAGIC:
            return self.open(ciphertext)[0]
        return self.fallback.decrypt(ciphertext) if self.fallback else ciphertext

    # --------------------------------------------------------------- per client

    def seal(self, event: Any, plaintext: bytes) -> bytes:
        key_id = self.key_id_of(event)
        if not key_id:
            return self.encrypt(plaintext)
        cipher = self._cipher(key_id)
        actor = getattr(event, "actor", None)
        meta_bytes = orjson.dumps({"t": event.timestamp} if actor is None else
                                  {"t": event.timestamp, "a": actor.id, "r": actor.role, "c": event.correlation_id})
        header = MAGIC + key_id + struct.pack(">H", len(meta_bytes)) + meta_bytes
        nonce = os.urandom(12)
        return header + nonce + cipher.encrypt(nonce, plaintext, header)

    def open(self, stored: bytes) -> tuple[bytes, bytes]:
        """The content of a sealed state and its key id; KeyDestroyedError when erased."""
        key_id = stored[4:20]
        end = _HEAD + (stored[20] << 8 | stored[21])
        cipher = self._cipher(key_id)
        return cipher.decrypt(stored[end : end + 12], stored[end + 12 :], stored[:end]), key_id

    @staticmethod
    def metadata(stored: bytes) -> dict[str, Any] | None:
        """The clear metadata of a sealed state (None: not sealed under a client key)."""
        if stored[:4] != MAGIC:
            return None
        (meta_len,) = struct.unpack(">H", stored[20:22])
        return orjson.loads(stored[_HEAD : _HEAD + meta_len])

    def _cipher(self, key_id: bytes) -> Any:
        now = _monotonic()
        if now >= self._fresh_until or self._generation != self.keys.generation:
            self._ciphers.clear()
            self._fresh_until, self._generation = now + CHECK_SECONDS, self.keys.generation
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            if len(self._ciphers) >= self._cache_size:
                self._ciphers.clear()
            cipher = self._ciphers[key_id] = self.keys.key(key_id)  # KeyDestroyedError: erased
        return cipher

    def learn(self, originator_id: UUID, version: int, stored: bytes, *, snapshot: bool = False) -> None:
        """What a read teaches: the key an aggregate's first event (or snapshot) was under is its client's."""
        if (version == 1 or snapshot) and originator_id not in self._memo:
            self._remember(originator_id, stored[4:20] if stored[:4] == MAGIC else _NONE)

    def key_id_of(self, event: Any) -> bytes:
        aggregate_id: UUID = event.originator_id
        version = event.originator_version
        cls = type(event)
        shape = _shapes.get(cls)
        if shape is None:
            fields = getattr(cls, "model_fields", {})
            shape = _shapes[cls] = ("client_id" in fields, "plan_id" in fields, "state" in fields and "aggregate_type" in fields)
        has_client, has_plan, snapshot = shape
        if snapshot:  # a snapshot: its aggregate's key
            return self._aggregate_key(aggregate_id)
        client = event.client_id if has_client else None
        if client:
            key_id, _ = self.keys.key_for(str(client))
            if version == 1:
                self.keys.link(aggregate_id, key_id)
                self._remember(aggregate_id, key_id)
            return key_id
        plan_id = event.plan_id if has_plan else None
        if plan_id is not None and (key_id := self._aggregate_key(plan_id)):
            if version == 1:
                self.keys.link(aggregate_id, key_id)
                self._remember(aggregate_id, key_id)
            return key_id
        if version == 1 and cls.__name__ == "AuditRead" and (key_id := self._read_subject_key(event.subject)):
            self.keys.link(aggregate_id, key_id)  # the audit access log: a read of a client's records
            self._remember(aggregate_id, key_id)
            return key_id
        if version == 1:
            self._remember(aggregate_id, _NONE)
            return _NONE
        return self._aggregate_key(aggregate_id)

    def _read_subject_key(self, subject: str) -> bytes:
        """The key of the client an audit read names (services.audit.auditor's subjects:
        ``client C``, ``aggregate A ...``, ``the client of aggregate A``); none for an event id."""
        if subject.startswith("client "):
            return self.keys.key_for(subject.removeprefix("client "))[0]
        words = subject.split()
        if "aggregate" in words[:-1]:
            try:
                return self._aggregate_key(UUID(words[words.index("aggregate") + 1]))
            except ValueError:
                return _NONE
        return _NONE

    def _aggregate_key(self, aggregate_id: UUID) -> bytes:
        key_id = self._memo.get(aggregate_id)
        if key_id is None:
            key_id = self.keys.linked(aggregate_id) or _NONE
            self._remember(aggregate_id, key_id)
        return key_id

    def _remember(self, aggregate_id: UUID, key_id: bytes) -> None:
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        self._memo[aggregate_id] = key_id

    def erased(self, aggregate_id: UUID) -> bool:
        """Whether the aggregate (one this process wrote or read) belongs to a client whose key was
        destroyed since, in any process: a cached copy of it must go (services.shared.tracking)."""
        key_id = self._memo.get(aggregate_id)
        return bool(key_id) and self.keys.destroyed(key_id)  # type: ignore[arg-type]

    def forget(self, aggregate_ids: set[UUID]) -> None:
        for aggregate_id in aggregate_ids:
            self._memo.pop(aggregate_id, None)


__all__ = ["MAGIC", "ClientCipher", "KeyDestroyedError", "Tombstone"]
