"""Erasure by crypto-shredding, legal holds, four eyes (issue 16; docs/data-protection.md).

``request_erasure`` (a supervisor, with a reason) → ``confirm_erasure`` (a different
supervisor, within ``erasure_confirm_hours``) → the client's data is shredded and
``ClientDataErased`` recorded. ``erase_client`` is the one call for the retention job
(``four_eyes=False``: asked and confirmed by the job itself, still refused under a hold or
with an open crisis). Each step is a command on the client's DataSubject in the care
store, so it is recorded (who, when, why) and published like every event.

Shredding, in this order, each step idempotent (a confirmation repeated after a crash
does the rest again):

1. the client's subjects are removed from the JetStream streams: each message of each of the
   client's aggregates (the key store's links name them) is deleted with the server's secure
   erase (its bytes overwritten in the store), as the ``admin`` user;
2. every data key the client has is destroyed in the key store (a tombstone stays): every
   event, snapshot and dead letter of the client in every store is unreadable from then on;
3. the client's rows are removed from the read models (SQLite's ``secure_delete``, the WAL
   truncated), and the calling application's aggregate cache forgets the client's aggregates;
4. ``ClientDataErased`` (pseudonym hash, who asked, who confirmed, why, counts) is recorded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from uuid import UUID

from domain.base import Actor, Role, require_reason
from domain.data_subject import DataSubject, data_subject_id
from domain.errors import ErasureRequestError, NotAuthorisedError, OpenCrisisBlocksErasureError
from services.care.commands import data_subject as ds
from services.shared.commands import CommandMeta
from services.shared.errors import AggregateMissingError, ConcurrencyConflictError
from services.shared.privacy.keys import key_store
from services.shared.settings import Settings

log = logging.getLogger("careplan.privacy")

#: The read models' tables that hold a client's rows, and how a row names the client.
VIEW_TABLES = ("view_scores", "view_sessions", "view_courses", "view_plans")


class StreamsUnreachableError(ErasureRequestError):
    """The streams that hold the client's messages cannot be reached: nothing was destroyed; confirm again."""

    code = "streams-unreachable"


@dataclass
class ErasureOutcome:
    request_id: UUID
    client_hash: str
    #: False: requested only, waiting for a second supervisor's confirmation.
    erased: bool = False
    keys_destroyed: int = 0
    stores: list[str] = field(default_factory=list)
    streams: list[str] = field(default_factory=list)
    messages_purged: int = 0
    views: list[str] = field(default_factory=list)
    aggregates: int = 0
    #: The client's aggregates (ids carry no personal data): subscribers erase their copies by them.
    aggregate_ids: list[UUID] = field(default_factory=list)
    #: The events this step recorded in the client's rights record.
    event_ids: list[UUID] = field(default_factory=list)


def _app_of(system_or_app: Any) -> tuple[Any, bool]:
    """The care application (made here from Settings if given those; then closed after)."""
    if isinstance(system_or_app, Settings):
        from services.care.application import CareApplication

        return CareApplication(system_or_app), True
    app = getattr(system_or_app, "care", None) or system_or_app
    return app, False


def subject_of(app: Any, client_id: str, actor: Actor, *, create: bool = True) -> DataSubject:
    """The client's DataSubject, opened on first use (``create=False``: a refusal that writes
    nothing when there is none yet, for commands that need one: a release, a confirmation)."""
    client_hash = key_store(app.settings).pseudonym(client_id)
    subject_id = data_subject_id(client_hash)
    if not create:
        try:
            return app._get(DataSubject, subject_id)
        except AggregateMissingError:
            msg = "Nothing is recorded of this client's rights yet: no legal hold and no erasure request."
            raise ErasureRequestError(msg) from None
    for _ in range(3):
        try:
            return app._get(DataSubject, subject_id)
        except AggregateMissingError:
            try:
                app.handle(ds.OpenDataSubject(client_hash=client_hash), CommandMeta(actor=actor))
            except ConcurrencyConflictError:
                continue
    return app._get(DataSubject, subject_id)


def held(app: Any, client_id: str) -> bool:
    """Whether a legal hold is set on the client's records (for the retention job)."""
    client_hash = key_store(app.settings).pseudonym(client_id)
    try:
        return bool(app._get(DataSubject, data_subject_id(client_hash)).held)
    except AggregateMissingError:
        return False


def _require_supervisor(actor: Actor, what: str) -> None:
    """Before a rights record is opened for a person's command: a refusal writes nothing."""
    if actor.role is not Role.SUPERVISOR:
        msg = f"Only a supervisor may {what}; {actor.id} acts as {actor.role.value}."
        raise NotAuthorisedError(msg)


def set_hold(system_or_app: Any, client_id: str, *, reason: str | None, actor: Actor) -> list[UUID]:
    """Sets a legal hold; returns the events recorded."""
    _require_supervisor(actor, "set a legal hold")
    require_reason(reason, "set a legal hold")  # before the client's record is opened: a refusal writes nothing
    app, own = _app_of(system_or_app)
    try:
        subject = subject_of(app, client_id, actor)
        return app.handle(ds.SetLegalHold(subject_id=subject.id, reason=reason), CommandMeta(actor=actor)).event_ids
    finally:
        if own:
            app.close()


def release_hold(system_or_app: Any, client_id: str, *, reason: str | None, actor: Actor) -> list[UUID]:
    """Releases a legal hold; returns the events recorded."""
    app, own = _app_of(system_or_app)
    try:
        subject = subject_of(app, client_id, actor, create=False)
        return app.handle(ds.ReleaseLegalHold(subject_id=subject.id, reason=reason), CommandMeta(actor=actor)).event_ids
    finally:
        if own:
            app.close()


def open_crises_of(settings: Settings, client_id: str) -> list[UUID]:
    """The client's crises the escalation service holds open (its store's open-crises view)."""
    from services.audit.integrity import store_exists

    if not store_exists(settings, "escalation"):
        return []
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment

    from services.escalation.open_view import OpenCrises
    from services.shared.persistence import eventsourcing_env

    factory = InfrastructureFactory.construct(Environment("escalation", eventsourcing_env(settings, "escalation")))
    try:
        view = OpenCrises(factory.application_recorder(), factory.mapper(transcoder=factory.transcoder()))
        return [crisis for crisis, client in view.refresh().items() if client == client_id]
    finally:
        factory.close()


def _refuse_if_crisis(settings: Settings, client_id: str) -> None:
    if crises := open_crises_of(settings, client_id):
        msg = (f"The client has {len(crises)} open crisis(es) ({', '.join(map(str, crises))}); their records may not "
               "be erased until the crisis is resolved.")
        raise OpenCrisisBlocksErasureError(msg)


def request_erasure(system_or_app: Any, client_id: str, *, reason: str | None, actor: Actor) -> ErasureOutcome:
    """A supervisor asks for the client's erasure; a different supervisor confirms it."""
    _require_supervisor(actor, "ask for an erasure")
    require_reason(reason, "erase a client's records")  # before the client's record is opened: a refusal writes nothing
    app, own = _app_of(system_or_app)
    try:
        _refuse_if_crisis(app.settings, client_id)
        subject = subject_of(app, client_id, actor)
        command = ds.RequestErasure(subject_id=subject.id, reason=reason, window_hours=app.settings.erasure_confirm_hours)
        result = app.handle(command, CommandMeta(actor=actor))
        return ErasureOutcome(request_id=command.request_id, client_hash=subject.client_hash,
                              event_ids=list(result.event_ids))
    finally:
        if own:
            app.close()


def confirm_erasure(system_or_app: Any, client_id: str, request_id: UUID, *, actor: Actor,
                    nats_url: str | None = None) -> ErasureOutcome:
    """The second supervisor's confirmation: refused (changing nothing) under a hold, with an
    open crisis, by the requester, after the window; else the client's data is shredded."""
    app, own = _app_of(system_or_app)
    try:
        subject = subject_of(app, client_id, actor, create=False)
        request = subject.pending_request(request_id, app.command_context(CommandMeta(actor=actor), subject))
        _refuse_if_crisis(app.settings, client_id)
        confirmed = app.handle(ds.ConfirmErasure(subject_id=subject.id, request_id=request_id), CommandMeta(actor=actor))
        outcome = _shred_and_record(app, client_id, subject, request_id, requested_by=request.requested_by,
                                    confirmed_by=actor.id, reason=request.reason, actor=actor, nats_url=nats_url)
        outcome.event_ids = [*confirmed.event_ids, *outcome.event_ids]
        return outcome
    finally:
        if own:
            app.close()


def erase_client(system_or_app: Any, client_id: str, *, reason: str, actor: Actor, four_eyes: bool = False,
                 nats_url: str | None = None) -> ErasureOutcome:
    """The retention job's call. ``four_eyes=True``: only asks (a supervisor confirms later,
    :func:`confirm_erasure`); ``False``: the caller's own decision, recorded as asked and
    confirmed by ``actor`` (a service or operator acting on a policy), erased at once. Refused
    under a legal hold (LegalHoldError) or with an open crisis (OpenCrisisBlocksErasureError)."""
    if four_eyes:
        return request_erasure(system_or_app, client_id, reason=reason, actor=actor)
    require_reason(reason, "erase a client's records")
    app, own = _app_of(system_or_app)
    try:
        _refuse_if_crisis(app.settings, client_id)
        subject = subject_of(app, client_id, actor)
        if subject.held:
            subject._refuse_if_held()
        command = ds.RequestErasure(subject_id=subject.id, reason=reason, window_hours=app.settings.erasure_confirm_hours)
        meta = CommandMeta(actor=actor)
        app.handle(_by_policy(command), meta)
        return _shred_and_record(app, client_id, subject, command.request_id, requested_by=actor.id,
                                 confirmed_by=actor.id, reason=reason, actor=actor, nats_url=nats_url)
    finally:
        if own:
            app.close()


class _PolicyErasure(ds.RequestErasure):
    """A request and its confirmation at once, by a policy (retention), not by a supervisor."""

    def execute(self, subject: DataSubject, ctx: Any, lookup: Any) -> None:
        from datetime import timedelta

        from domain.base import require_reason
        from domain.events.data_subjects import ErasureConfirmed, ErasureRequested

        subject._refuse_if_held()
        subject._trigger(ErasureRequested, ctx, reason=require_reason(self.reason, "erase a client's records"),
                         request_id=self.request_id, expires_at=ctx.at + timedelta(hours=self.window_hours))
        subject._trigger(ErasureConfirmed, ctx, request_id=self.request_id, requested_by=ctx.actor.id)


def _by_policy(command: ds.RequestErasure) -> _PolicyErasure:
    return _PolicyErasure(**command.model_dump())


def _shred_and_record(app: Any, client_id: str, subject: DataSubject, request_id: UUID, *, requested_by: str,
                      confirmed_by: str, reason: str, actor: Actor, nats_url: str | None) -> ErasureOutcome:
    outcome = shred(app.settings, client_id, why=f"erasure {request_id}", nats_url=nats_url, app=app)
    outcome.request_id = request_id
    recorded = app.handle(ds.RecordErasure(subject_id=subject.id, request_id=request_id, requested_by=requested_by,
                                confirmed_by=confirmed_by, reason=reason, keys_destroyed=outcome.keys_destroyed,
                                stores=outcome.stores, streams=outcome.streams, messages_purged=outcome.messages_purged,
                                views=outcome.views, aggregates=outcome.aggregate_ids), CommandMeta(actor=actor))
    outcome.event_ids = list(recorded.event_ids)
    outcome.erased = True
    log.info("client data erased: request %s, %d keys destroyed, %d messages removed, %d aggregates", request_id,
             outcome.keys_destroyed, outcome.messages_purged, outcome.aggregates)
    return outcome


# --------------------------------------------------------------------------- shredding


def shred(settings: Settings, client_id: str, *, why: str, nats_url: str | None = None, app: Any = None) -> ErasureOutcome:
    """Steps 1-3 of the module's description (no event recorded): streams, keys, views, caches."""
    from services.audit.integrity import RECORD_STORES, store_exists

    keys = key_store(settings)
    aggregates = set(keys.linked_to_client(client_id))
    outcome = ErasureOutcome(request_id=UUID(int=0), client_hash=keys.pseudonym(client_id), aggregates=len(aggregates))
    url = _admin_url(settings, nats_url)
    if url is None and (settings.data_dir / "nats").exists():
        # a stream that holds the client's messages and cannot be reached: not an erasure (nothing is destroyed)
        msg = ("The streams cannot be reached (no NATS address, and no running `careplan up` in the data dir): the "
               "client's messages would stay on them. Start the system (or name it with CAREPLAN_NATS_URL) and confirm again.")
        raise StreamsUnreachableError(msg)
    if url is not None and aggregates:
        purged = _run(_purge_streams(url, settings, aggregates, client_id))
        outcome.streams, outcome.messages_purged = sorted(purged), sum(purged.values())
    outcome.keys_destroyed = len(keys.destroy(client_id, why=why))
    outcome.stores = [name for name in RECORD_STORES if store_exists(settings, name)]
    outcome.views = _clear_views(settings, client_id, aggregates)
    _forget_in_indexes(settings, client_id, aggregates)
    outcome.aggregate_ids = sorted(aggregates, key=str)
    if app is not None:
        for aggregate_id in aggregates:
            forget = getattr(app, "_forget", None)
            if forget is not None:
                forget(aggregate_id)
        clients = getattr(getattr(app, "mapper", None), "clients", None)
        if clients is not None:
            clients.forget(aggregates)
    return outcome


def _forget_in_indexes(settings: Settings, client_id: str, aggregates: set[UUID]) -> None:
    """Drops the client's rows from every store's client index (services.shared.indexes), which
    name the client in the clear; the events' trace rows (ids only) stay."""
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment

    from services.audit.integrity import RECORD_STORES, store_exists
    from services.shared.persistence import eventsourcing_env

    for name in RECORD_STORES:
        if not store_exists(settings, name):
            continue
        factory = InfrastructureFactory.construct(Environment(name, eventsourcing_env(settings, name)))
        try:
            recorder = factory.application_recorder()
            if hasattr(recorder, "forget_client"):
                recorder.forget_aggregates(sorted(aggregates, key=str))
                recorder.forget_client(client_id)
        finally:
            factory.close()


def _admin_url(settings: Settings, nats_url: str | None) -> str | None:
    """The NATS of this system as its ``admin`` user (the only one that may delete messages)."""
    from services.nats_auth import ADMIN_USER, running_up_url, url_as

    url = nats_url or settings.nats_url or running_up_url(settings.data_dir)
    if not url:
        return None
    plain = ",".join(_without_credentials(u.strip()) for u in str(url).split(","))
    try:
        return url_as(plain, ADMIN_USER, settings.data_dir, settings.nats_passwords_file)
    except KeyError:
        return str(url)


def _without_credentials(url: str) -> str:
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def _purge_streams(url: str, settings: Settings, aggregates: set[UUID], client_id: str | None = None) -> dict[str, int]:
    """Deletes (secure erase) every message on the subjects of ``aggregates`` from the streams,
    and the subscriptions' copies of the client's events (:func:`_purge_feed_copies`)."""
    from nats.js.errors import NotFoundError

    from services.shared.bus import connect

    nc = await connect(url, name="careplan-erasure", reconnect=False, connect_timeout=5)
    purged: dict[str, int] = {}
    try:
        js = nc.jetstream()
        for stream in (settings.stream_name,):  # CARE_AUDIT holds chain heads, no client's subject
            try:
                await js.stream_info(stream)
            except NotFoundError:
                continue
            count = 0
            for aggregate_id in sorted(aggregates, key=str):
                subject, seq = f"care.*.v1.*.{aggregate_id}.*", 1
                while True:
                    try:
                        message = await js.get_msg(stream, seq=seq, subject=subject, next=True, direct=True)
                    except NotFoundError:
                        break
                    await js.delete_msg(stream, message.seq)
                    count += 1
                    seq = message.seq + 1
            count += await _purge_feed_copies(js, stream, client_id, aggregates)
            purged[stream] = count
    finally:
        await nc.close()
    return purged


#: The subscriptions service's feeds publish each matched event again, its body included, on the
#: subject of the (shared) feed, not of the client's aggregate.
FEED_SUBJECT = "care.subscriptions.v1.subscription_feed.*.subscription_event_matched"


async def _purge_feed_copies(js: Any, stream: str, client_id: str | None, aggregates: set[UUID]) -> int:
    """Deletes the feeds' messages that carry one of the client's events: a feed is shared by
    the clients a subscription covers, so its subject names no client; each message is read
    (its public JSON names the matched event's client and aggregate)."""
    import orjson
    from nats.js.errors import NotFoundError

    ids = {str(a) for a in aggregates}
    count, seq = 0, 1
    while True:
        try:
            message = await js.get_msg(stream, seq=seq, subject=FEED_SUBJECT, next=True, direct=True)
        except NotFoundError:
            return count
        seq = message.seq + 1
        try:
            body = orjson.loads(message.data or b"{}")
        except orjson.JSONDecodeError:
            continue
        if (client_id is not None and body.get("client_id") == client_id) or body.get("aggregate_id") in ids:
            await js.delete_msg(stream, message.seq)
            count += 1


def _run(coroutine: Any) -> Any:
    """Runs ``coroutine`` to its end from sync code, whether or not this thread runs a loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _clear_views(settings: Settings, client_id: str, aggregates: set[UUID]) -> list[str]:
    from services.views.store import ViewStore

    store = ViewStore(settings)
    try:
        if not store.postgres:
            store.conn.execute("PRAGMA secure_delete = ON")
        cleared = []
        with store.transaction():
            courses = [str(a) for a in aggregates]
            for table in VIEW_TABLES:
                if table == "view_sessions":
                    marks = ",".join("?" * len(courses))
                    if courses:
                        store.execute(f"DELETE FROM view_sessions WHERE course_id IN ({marks})", courses)
                else:
                    store.execute(f"DELETE FROM {table} WHERE client_id = ?", (client_id,))
                cleared.append(table)
        if not store.postgres:
            for _ in range(20):
                busy = store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if busy and not busy[0]:
                    break
                import time

                time.sleep(0.05)
        return ["views:" + t for t in cleared]
    finally:
        store.close()
