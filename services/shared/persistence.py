"""Storing pydantic events with the eventsourcing library.

``PydanticMapper`` turns events into stored bytes and back. Trusted stored events are
decoded straight from JSON bytes by pydantic's core (no intermediate dict), which is what
makes replay faster than the library's default JSON path. Classes whose ``class_version``
has moved on go through a dict so their ``upcast_vN_vN+1`` steps can run first.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Iterator
from time import monotonic as _monotonic
from typing import Any, NamedTuple, TypeVar
from uuid import UUID

import orjson
from eventsourcing.persistence import Mapper, MapperDeserialisationError, Notification, StoredEvent, Transcoder
from eventsourcing.utils import get_topic, resolve_topic
from pydantic import BaseModel

from domain.base import derive_event_id
from services.shared.indexes import with_index
from services.shared.privacy.keys import KeyDestroyedError as KeyError_
from services.shared.settings import Settings

log = logging.getLogger(__name__)

# The library hands out deep copies of cached aggregates. UUIDs are immutable, yet
# ``copy.deepcopy`` rebuilds each one through ``__reduce__``; in aggregates that keep ids
# (an assessment record's decided submissions, a plan's goals) that was most of the cost of
# every load from the cache. Sharing them is what deepcopy already does for str and int.
copy._deepcopy_dispatch[UUID] = copy._deepcopy_atomic  # type: ignore[attr-defined]  # noqa: SLF001

#: Computed fields are derived again on load, so they are not stored.
_NOT_STORED = {"event_id"}


class OrjsonTranscoder(Transcoder):
    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


class PydanticMapper(Mapper[Any]):
    def __init__(self, transcoder: Transcoder, compressor: Any = None, cipher: Any = None) -> None:
        super().__init__(transcoder=transcoder, compressor=compressor, cipher=cipher)
        from services.shared.privacy.cipher import ClientCipher

        #: The per-client cipher (issue 16), when the stores use one.
        self.clients: ClientCipher | None = cipher if isinstance(cipher, ClientCipher) else None
        #: topic -> its class when current (class_version 1), else None (see public_json)
        self._current: dict[str, type[BaseModel] | None] = {}

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        event: BaseModel = domain_event
        cls = type(event)
        class_version = getattr(cls, "class_version", 1)
        if class_version > 1:
            state = event.model_dump(mode="json", exclude=_NOT_STORED)
            state["class_version"] = class_version
            stored_state = orjson.dumps(state)
        else:
            stored_state = event.model_dump_json(exclude=_NOT_STORED).encode()
        if self.compressor:
            stored_state = self.compressor.compress(stored_state)
        if self.clients is not None:
            stored_state = self.clients.seal(event, stored_state)
        elif self.cipher:
            stored_state = self.cipher.encrypt(stored_state)
        stored = StoredEvent(
            originator_id=event.originator_id,  # type: ignore[attr-defined]
            originator_version=event.originator_version,  # type: ignore[attr-defined]
            topic=get_topic(cls),
            state=stored_state,
        )
        # what the indexes keep (by causation, by client), from the domain event before encoding
        return with_index(stored, event)

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        cls: type[BaseModel] = resolve_topic(stored_event.topic)
        stored_state = stored_event.state
        try:
            clients = self.clients
            if clients is not None:
                if stored_event.originator_version == 1:
                    clients.learn(stored_event.originator_id, 1, stored_state)
                if stored_state.startswith(b"CPK1"):
                    # ClientCipher.content, inlined: every event of a client passes here on a replay
                    cipher = clients.ciphers.get(stored_state[4:20])
                    if cipher is None or _monotonic() >= clients.fresh_until or clients.generation != clients.keys.generation:
                        try:
                            cipher = clients.cipher_of(stored_state[4:20])
                        except KeyError_ as destroyed:
                            return erased_event(stored_event, destroyed.tombstone)
                    end = 22 + (stored_state[20] << 8 | stored_state[21])
                    stored_state = cipher.decrypt(stored_state[end : end + 12], stored_state[end + 12 :],
                                                  stored_state[:end])
                elif self.cipher:
                    stored_state = self.cipher.decrypt(stored_state)
            elif self.cipher:
                stored_state = self.cipher.decrypt(stored_state)
            if self.compressor:
                stored_state = self.compressor.decompress(stored_state)
            class_version = getattr(cls, "class_version", 1)
            if class_version == 1:
                return cls.model_validate_json(stored_state)
            state = orjson.loads(stored_state)
            return cls.model_validate(upcast(cls, state))
        except Exception as e:
            msg = (
                f"Cannot load stored event {stored_event.topic} of {stored_event.originator_id} "
                f"version {stored_event.originator_version}: {e}"
            )
            raise MapperDeserialisationError(msg) from e


    def to_public_json(self, stored_event: StoredEvent) -> PublicEvent:
        """The event's public JSON (its contract form) and what a CloudEvent needs of it,
        without building the model when the stored form is current: the stored state
        plus the derived ``event_id``. Events that need upcasting take the model path."""
        public = self.public_json(str(stored_event.originator_id), stored_event.originator_version,
                                  stored_event.topic, stored_event.state)
        if public is not None:
            return public
        cls: type[BaseModel] = resolve_topic(stored_event.topic)
        event_id = derive_event_id(stored_event.originator_id, stored_event.originator_version)
        if getattr(cls, "class_version", 1) != 1:
            body = self.to_domain_event(stored_event).model_dump_json().encode()
        else:
            state = stored_event.state
            if self.clients is not None and state[:4] == b"CPK1":
                try:
                    state = self.clients.open(state)[0]
                except KeyError_ as destroyed:
                    erased = erased_event(stored_event, destroyed.tombstone)
                    return PublicEvent(type(erased), erased.model_dump_json().encode(), event_id,
                                       erased.timestamp.isoformat(), str(erased.correlation_id))
            elif self.cipher:
                state = self.cipher.decrypt(state)
            if self.compressor:
                state = self.compressor.decompress(state)
            body = b"".join((state[:-1], b',"event_id":"', event_id.encode(), b'"}'))
        return _public_event(cls, body, event_id)

    def public_json(self, aggregate_id: str, version: int, topic: str, state: bytes) -> PublicEvent | None:
        """:meth:`to_public_json` of the usual event (its class current, its key not destroyed)
        from the parts of a log row, as the relay reads them (``aggregate_id`` as ``str(UUID)``
        writes it); None for any other event, which :meth:`to_public_json` then reads."""
        try:
            cls = self._current[topic]
        except KeyError:
            resolved: type[BaseModel] = resolve_topic(topic)
            cls = self._current[topic] = resolved if getattr(resolved, "class_version", 1) == 1 else None
        if cls is None:
            return None
        if self.clients is not None and state[:4] == b"CPK1":
            try:
                state = self.clients.content(state)
            except KeyError_:
                return None  # erased: what is kept of it comes from to_public_json
        elif self.cipher:
            state = self.cipher.decrypt(state)
        if self.compressor:
            state = self.compressor.decompress(state)
        event_id = derive_event_id(aggregate_id, version)
        body = b"".join((state[:-1], b',"event_id":"', event_id.encode(), b'"}'))
        return _public_event(cls, body, event_id)


def _public_event(cls: type[BaseModel], body: bytes, event_id: str) -> PublicEvent:
    # pydantic writes fields in declaration order, so the first "timestamp" key is the
    # event's own (DomainEvent declares it before any nested model could carry one).
    start = body.index(b'"timestamp":"') + 13
    timestamp = body[start : body.index(b'"', start)].decode()
    # Likewise the event's own correlation_id precedes any nested one.
    start = body.index(b'"correlation_id":"') + 18
    correlation_id = body[start : body.index(b'"', start)].decode()
    return PublicEvent(cls, body, event_id, timestamp, correlation_id)


def erased_event(stored_event: StoredEvent, tombstone: Any) -> Any:
    """An event whose client's key was destroyed: what is kept of it (services.shared.privacy.erased)."""
    from uuid import uuid5

    from domain.base import Actor, Role
    from services.shared.privacy.cipher import ClientCipher
    from services.shared.privacy.erased import ErasedEvent

    meta = ClientCipher.metadata(stored_event.state) or {}
    actor = Actor(id=meta.get("a", "unknown"), role=Role(meta.get("r", Role.SERVICE.value)))
    correlation = meta.get("c") or str(uuid5(stored_event.originator_id, "erased"))
    return ErasedEvent(originator_id=stored_event.originator_id, originator_version=stored_event.originator_version,
                       timestamp=meta.get("t") or tombstone.destroyed_at, actor=actor, correlation_id=correlation,
                       erased_type=stored_event.topic.rsplit(":", 1)[-1], erased_at=tombstone.destroyed_at,
                       erased_why=tombstone.why)


class PublicEvent(NamedTuple):
    event_class: type[BaseModel]
    body: bytes
    event_id: str
    timestamp: str
    correlation_id: str


def paged_notifications(recorder: Any, page: int = 1000) -> Iterator[Notification]:
    """An application's whole notification log in order, read a page at a time."""
    start = 1
    while batch := recorder.select_notifications(start=start, limit=page):
        yield from batch
        start = batch[-1].id + 1


def upcast(cls: type[Any], state: dict[str, Any]) -> dict[str, Any]:
    """Runs ``upcast_vN_vN+1`` steps until the state matches the class's version."""
    from_version = state.pop("class_version", 1)
    target = getattr(cls, "class_version", 1)
    while from_version < target:
        getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(state)
        from_version += 1
    return state


T = TypeVar("T")


def surviving_catalog_races(construct: Callable[[], T], attempts: int = 8) -> T:
    """Runs ``construct`` again when PostgreSQL reports a race on its catalogue.

    Processes that start together (``careplan up``) each create their schema and tables
    with ``IF NOT EXISTS``; PostgreSQL can still fail one of two concurrent creations
    ("tuple concurrently updated", a duplicate key in pg_namespace). The second try sees
    the object and goes on."""
    from eventsourcing.persistence import IntegrityError, InternalError

    for attempt in range(attempts):
        try:
            return construct()
        except (InternalError, IntegrityError) as e:
            if attempt == attempts - 1:
                raise
            log.info("catalogue race while creating tables (%s); trying again", e)
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


_schemas_made: set[tuple[str, str]] = set()
_schemas_lock = threading.Lock()


def _admin_connection(settings: Settings) -> Any:
    """A plain autocommit connection for schema statements (outside the library's pools)."""
    import psycopg

    return psycopg.connect(
        host=settings.postgres_host,
        port=settings.postgres_port,
        user=settings.postgres_user,
        password=settings.postgres_password.get_secret_value() or None,
        dbname=settings.postgres_dbname,
        autocommit=True,
    )


def ensure_postgres_schema(settings: Settings, schema: str) -> None:
    """The library creates tables but not schemas; each application owns one schema."""
    import psycopg
    from psycopg import sql

    key = (settings.postgres_dbname, schema)
    with _schemas_lock:
        if key in _schemas_made:
            return
        with _admin_connection(settings) as conn:
            for attempt in range(8):
                try:
                    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                    break
                except (psycopg.errors.UniqueViolation, psycopg.errors.InternalError):
                    # another process created it at the same moment (see surviving_catalog_races)
                    if attempt == 7:
                        raise
                    time.sleep(0.05 * (attempt + 1))
        _schemas_made.add(key)


def drop_postgres_schemas(settings: Settings) -> None:
    """Drops every application schema of ``settings.postgres_schema_prefix`` (benchmarks
    and tests make throw-away prefixes; nothing else should call this)."""
    from psycopg import sql

    with _admin_connection(settings) as conn:
        rows = conn.execute(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE %s",
            (settings.postgres_schema_prefix.replace("_", "\\_") + "\\_%",),
        ).fetchall()
        for (schema,) in rows:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    with _schemas_lock:
        _schemas_made.difference_update({k for k in _schemas_made if k[1].startswith(settings.postgres_schema_prefix + "_")})


def eventsourcing_env(settings: Settings, application: str) -> dict[str, str]:
    """The library's environment for one application, derived from our settings."""
    env: dict[str, str] = {
        "MAPPER_TOPIC": get_topic(PydanticMapper),
        "TRANSCODER_TOPIC": get_topic(OrjsonTranscoder),
    }
    if settings.database == "sqlite":
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(settings.sqlite_path(application)),
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    else:
        schema = settings.postgres_schema(application)
        ensure_postgres_schema(settings, schema)
        env |= {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_HOST": settings.postgres_host,
            "POSTGRES_PORT": str(settings.postgres_port),
            "POSTGRES_USER": settings.postgres_user,
            "POSTGRES_PASSWORD": settings.postgres_password.get_secret_value(),
            "POSTGRES_DBNAME": settings.postgres_dbname,
            "POSTGRES_SCHEMA": schema,
            "POSTGRES_POOL_SIZE": str(settings.postgres_pool_size),
            "POSTGRES_LOCK_TIMEOUT": "5",
        }
    # Our recorders: the library's, plus the hash chain over the notification log.
    from services.shared.chained import recorder_topics

    env |= recorder_topics(settings.database)
    if settings.cipher_key is not None:
        env |= {"CIPHER_TOPIC": "eventsourcing.cipher:AESCipher", "CIPHER_KEY": settings.cipher_key.get_secret_value()}
    if settings.client_keys:
        # per-client data keys (issue 16); CIPHER_KEY, if any, still encrypts what belongs to no client
        from services.shared.privacy.keys import kek_path, key_store_path

        env |= {"CIPHER_TOPIC": "services.shared.privacy.cipher:ClientCipher", "CLIENT_KEYS_PATH": str(key_store_path(settings)),
                "CLIENT_KEK_PATH": str(kek_path(settings)), "CLIENT_KEY_CACHE_SIZE": str(settings.client_key_cache_size)}
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.aggregate_cache_size:
        env["AGGREGATE_CACHE_MAXSIZE"] = str(settings.aggregate_cache_size)
    env["IS_SNAPSHOTTING_ENABLED"] = "y" if settings.snapshot_interval else "n"
    return env


def relay_tracking_factory(settings: Settings, application: str) -> Any:
    """Where the relay of ``application`` records its position: a tracking recorder of its own
    (on SQLite a file of its own, so the relay's writes never wait on the application's)."""
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment

    env = eventsourcing_env(settings, application)
    if settings.database == "sqlite":
        env["SQLITE_DBNAME"] = str(settings.data_dir / f"relay-{application.lower()}.sqlite")
    return InfrastructureFactory.construct(Environment(f"relay_{application}", env))


class OutboxStores:
    """What a relay needs of one application's store: its recorder and mapper (to read and
    decode the notification log) and a tracking recorder for the relay's own position."""

    def __init__(self, settings: Settings, application: str) -> None:
        from eventsourcing.persistence import InfrastructureFactory
        from eventsourcing.utils import Environment

        env = eventsourcing_env(settings, application)
        self._app_factory = InfrastructureFactory.construct(Environment(application, env))
        self.recorder = surviving_catalog_races(self._app_factory.application_recorder)
        self.mapper = self._app_factory.mapper(transcoder=self._app_factory.transcoder())
        self._tracking_factory = relay_tracking_factory(settings, application)
        self.tracking = surviving_catalog_races(self._tracking_factory.tracking_recorder)

    def close(self) -> None:
        self._tracking_factory.close()
        self._app_factory.close()
