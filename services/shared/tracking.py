"""What every service's store shares: events written together with the tracking records
of the consumed messages (eventsourcing process recorder), the positions read from them,
dead letters, and the decision of a run of messages in one transaction.

Positions. A consumed message is placed twice: by its stream sequence, which JetStream
assigns and no publisher can choose, and by its source's position (``ce-sequence``), the
source being the one application that publishes on the message's subject. Both are
recorded in the transaction that records the message's decision. A message at or before
the recorded stream position was decided before (a redelivery) and is skipped; a message
after it whose source position is not after the source's recorded one means a source
went backwards (a restored or reset store, or a forged message): the consumer halts on
it with an alarm instead of skipping it or deciding it.

Dead letters. A message that fails on its content is recorded as a dead letter in the
service's own store (with the message's tracking, so exactly once), naming only ids,
types, the error's class and field paths. A dead letter of a message that may carry a
risk signal is flagged, and the escalation service raises a fail-safe crisis for it.
``careplan deadletter redrive`` decides a dead letter again.

What a service decides is declared in its reaction table (:mod:`services.shared.reactions`);
the NATS side is :mod:`services.shared.consumer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from uuid import UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application, LRUCache, ProcessingEvent
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    InternalError,
    Notification,
    OperationalError,
    ProcessRecorder,
    Tracking,
)
from eventsourcing.utils import get_topic
from nats.js.errors import NotFoundError

from contracts.subjects import APPLICATION_CONTEXTS, aggregate_token, event_token, parse_subject, subject_for
from domain.base import (
    SHORT_TEXT_MAX,
    Actor,
    AggregateRoot,
    AggregateSnapshot,
    CommandContext,
    DomainEvent,
    project,
    quote,
)
from domain.errors import ClientDataErasedError
from domain.events.dead_letters import DeadLetterRedriveRequested
from domain.operations.dead_letter import DeadLetter, dead_letter_id
from services.shared import compat
from services.shared.clock import Clock, MonotonicClock
from services.shared.cloudevents import Inbound, Watermark, parse_inbound
from services.shared.diagnostics import ErrorSummary, describe
from services.shared.persistence import eventsourcing_env, paged_notifications, surviving_catalog_races
from services.shared.reactions import Reactions
from services.shared.settings import Settings

log = logging.getLogger(__name__)
compat.install()

DEAD_LETTER_CORRELATION = UUID("0b9c7e52-4d1a-4f6e-8a3c-5e7d9f1b2c64")
_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}\Z")


def stream_tracking_name(stream: str, consumer: str) -> str:
    """The tracking record of a consumer's stream position."""
    return f"stream:{stream}:{consumer}"


class DecisionFailedError(Exception):
    """Deciding the message at ``index`` of a run failed (its cause is the error)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"message {index} of the run")
        self.index = index


def is_transient(error: BaseException) -> bool:
    """A failure of the infrastructure (store, bus), not of the message: retried until it passes."""
    import nats.errors

    return isinstance(error, (OperationalError, InterfaceError, InternalError, sqlite3.OperationalError, OSError,
                              TimeoutError, asyncio.TimeoutError, nats.errors.Error))


def unwrap(error: BaseException) -> BaseException:
    """The error a decision raised, out of its :class:`DecisionFailedError`."""
    if isinstance(error, DecisionFailedError) and error.__cause__ is not None:
        return error.__cause__
    return error


def partition_of(subject: str, partitions: int) -> int | None:
    """The partition (of ``partitions``) of the aggregate a message on ``subject`` is about,
    from the aggregate id in the subject; None for a subject of no aggregate (watermarks).
    One aggregate is always in one partition, so its events stay in order."""
    parts = parse_subject(subject)
    if parts is None or not parts.aggregate_id:
        return None
    return zlib.crc32(parts.aggregate_id.encode()) % partitions


@dataclass(frozen=True)
class Foreign:
    """A message of another partition's aggregate: passed over, only its stream position
    is recorded (services/shared/partitions.py)."""

    stream_sequence: int


@dataclass
class Positions:
    """A consumer's recorded positions: the stream's, and each source's."""

    stream: int = 0
    sources: dict[str, int] = field(default_factory=dict)

    def verdict(self, message: Inbound | Watermark | Foreign, *,
                first_delivery: bool = False) -> Literal["decided", "new", "backwards"]:
        """``first_delivery``: JetStream hands the message out for the first time, so it was
        never decided, whatever the stream position says (it came out of order)."""
        behind = bool(message.stream_sequence) and message.stream_sequence <= self.stream
        if behind and not first_delivery:
            return "decided"
        if isinstance(message, (Watermark, Foreign)):
            return "decided" if behind else "new"
        known = self.sources.get(message.source, 0)
        if message.sequence > known:
            return "new"
        if behind:
            return "decided"  # handed out again by a durable consumer made anew: decided before
        # Before any stream position was recorded (a store written by an earlier version),
        # the source position alone says what was decided.
        return "decided" if self.stream == 0 else "backwards"

    def advance(self, message: Inbound | Watermark | Foreign) -> None:
        self.stream = max(self.stream, message.stream_sequence)
        if isinstance(message, Inbound):
            self.sources[message.source] = max(self.sources.get(message.source, 0), message.sequence)

    def copy(self) -> Positions:
        return Positions(self.stream, dict(self.sources))


@dataclass(frozen=True)
class FailedMessage:
    """What a dead letter says of a message: where it came from, nothing of what it says."""

    subject: str
    stream_sequence: int
    source: str | None
    position: int | None
    event_id: str | None
    event_type: str
    plan_id: UUID | None
    client_id: str | None
    correlation_id: UUID

    @classmethod
    def of(cls, subject: str, stream_sequence: int, headers: dict[str, str] | None, inbound: Inbound | None) -> FailedMessage:
        parts = parse_subject(subject)
        headers = headers or {}
        body = inbound.body if inbound is not None else {}
        plan_id = _uuid(body.get("plan_id"))
        if plan_id is None and parts is not None and parts.aggregate == "care_plan":
            plan_id = _uuid(parts.aggregate_id)  # a plan's own events name it in the subject
        client_id = body.get("client_id")
        event_id = headers.get("ce-id")
        return cls(
            subject=quote(subject, SHORT_TEXT_MAX),
            stream_sequence=stream_sequence,
            source=inbound.source if inbound is not None else (parts.application if parts else None),
            position=inbound.sequence if inbound is not None else None,
            event_id=str(_uuid(event_id)) if _uuid(event_id) is not None else None,
            event_type=f"{parts.aggregate}.{parts.event}" if parts else "(not an event subject)",
            plan_id=plan_id,
            client_id=client_id if isinstance(client_id, str) and _ID.match(client_id) else None,
            correlation_id=_uuid(body.get("correlation_id")) or uuid5(DEAD_LETTER_CORRELATION, f"{subject}:{stream_sequence}"),
        )


def _uuid(value: object) -> UUID | None:
    try:
        return UUID(str(value)) if value is not None else None
    except ValueError:
        return None


class HistoryLookup:
    """The latest event of a kind for one aggregate, read from the stream (JetStream's
    direct get by subject): how a service catches up on history it never saw (a message
    dead-lettered, or aged out of its consumer) instead of failing on what follows."""

    def __init__(self, js: Any, loop: asyncio.AbstractEventLoop, stream: str, timeout: float = 5.0) -> None:
        self.js, self.loop, self.stream, self.timeout = js, loop, stream, timeout

    def last(self, event_class: type[DomainEvent], aggregate_id: UUID | str) -> Inbound | None:
        """Called from a decision's worker thread."""
        async def get() -> Any:
            try:
                return await self.js.get_last_msg(self.stream, subject_for(event_class, aggregate_id), direct=True)
            except NotFoundError:
                return None

        raw = asyncio.run_coroutine_threadsafe(get(), self.loop).result(self.timeout)
        if raw is None:
            return None
        found = parse_inbound(raw.subject, raw.headers, raw.data or b"", int(raw.seq))
        return found if isinstance(found, Inbound) else None


class Tracked:
    """For an Application whose recorder is a process recorder: ``record`` writes new events
    and the tracking records of consumed messages in one transaction."""

    recorder: Any
    repository: Any
    #: The actor of every event recorded in reaction to a consumed one.
    actor: ClassVar[Actor]
    #: Events whose messages may carry a risk signal: when one cannot be decided, a
    #: fail-safe escalation follows its dead letter.
    risk_signals: ClassVar[frozenset[type[DomainEvent]]] = frozenset()
    #: What this application consumes, and how it reacts to each kind of event.
    reactions: ClassVar[Reactions[Any]]
    clock: Clock
    #: Set by the consumer: the stream, for history this application never saw.
    history: HistoryLookup | None = None
    #: Aggregates written only by this service's decisions (one consumer at a time decides
    #: each: the holder of its durable or partition). A run of decisions uses a cached one
    #: as it is, without reading its newer events from the store first (a query per
    #: aggregate and run). Were it stale (a partition decided by another instance meanwhile),
    #: any event decided on it takes a version already stored: the run's commit fails, the
    #: cache is emptied and the run is decided again from the store. Only for aggregates
    #: whose decisions that record nothing hold on a stale copy too (what they check only
    #: grows: "opened", "decided before").
    decided_here: ClassVar[tuple[type[AggregateRoot], ...]] = ()
    #: Per thread: the aggregates a run of decisions has changed but not yet recorded.
    _unit_of_work = threading.local()
    #: Held while a run of decisions works on cached aggregates in place, and while anyone
    #: else copies one out of the cache, so no copy is taken of a half-made change.
    _in_place = threading.RLock()

    @property
    def process_recorder(self) -> ProcessRecorder:
        assert isinstance(self.recorder, ProcessRecorder)
        return self.recorder

    def construct_snapshot_store(self) -> Any:
        """Snapshots put with a digest over them and the hash chain; one that disagrees is
        not used (services.shared.snapshots)."""
        from services.shared.snapshots import CheckedSnapshots, snapshot_key

        key = snapshot_key(self.env.get("CIPHER_KEY") or None)  # type: ignore[attr-defined]
        return CheckedSnapshots(super().construct_snapshot_store(), self.recorder, key)  # type: ignore[misc]

    def context_for(self, inbound: Inbound) -> CommandContext:
        """Events caused by a consumed event carry its story and name it as their cause."""
        return CommandContext(
            actor=self.actor, at=self.clock(), correlation_id=inbound.correlation_id, causation_id=inbound.event_id
        )

    # ----------------------------------------------------------------- positions

    def positions(self, stream: str, consumer: str, *, source_suffix: str = "") -> Positions:
        """``source_suffix``: a partition's source positions are recorded as ``<source><suffix>``."""
        recorder = self.process_recorder
        sources = {s: p for s in APPLICATION_CONTEXTS if (p := recorder.max_tracking_id(f"{s}{source_suffix}"))}
        return Positions(recorder.max_tracking_id(stream_tracking_name(stream, consumer)) or 0, sources)

    def record(self, aggregates: Sequence[AggregateRoot], trackings: Sequence[Tracking]) -> int:
        """New events of ``aggregates`` and every tracking record, in one transaction."""
        processing = ProcessingEvent(tracking=trackings[0] if trackings else None)
        # as ProcessingEvent.collect_events, without its runtime protocol checks per aggregate
        for aggregate in aggregates:
            processing.events.extend(aggregate.collect_events())
            processing.aggregates[aggregate.id] = aggregate
        processing.saved_kwargs["more_tracking"] = list(trackings[1:])
        self._record(processing)  # type: ignore[attr-defined]
        return len(processing.events)

    def load(self, aggregate_id: UUID, version: int | None = None) -> Any:
        """An aggregate as the decisions of the current run left it, else as stored.

        A run of decisions works on the cached aggregate itself instead of the library's
        deep copy of it (the copy was most of the cost of a decision): a run holds the
        lock while it changes aggregates, and a failed run empties the cache. A cached aggregate of a
        client erased since (by any process, issue 16) is dropped, so it is read again: as erased."""
        clients = getattr(self.mapper, "clients", None)  # type: ignore[attr-defined]
        if clients is not None and clients.erased(aggregate_id) and self.repository.cache is not None:
            with contextlib.suppress(KeyError):
                self.repository.cache.get(aggregate_id, evict=True)
        pending: dict[UUID, AggregateRoot] | None = getattr(self._unit_of_work, "aggregates", None)
        if pending is None:
            with self._in_place:
                return self.repository.get(aggregate_id, version=version, projector_func=project)
        if version is None and aggregate_id in pending:
            return pending[aggregate_id]
        if version is None and self.decided_here and self.repository.cache is not None:
            try:
                cached = self.repository.cache.get(aggregate_id)
            except KeyError:
                pass
            else:
                if isinstance(cached, self.decided_here):
                    return cached
        return self.repository.get(aggregate_id, version=version, projector_func=project, deepcopy_from_cache=False)

    def find(self, cls: type[AggregateRoot], aggregate_id: UUID) -> Any:
        try:
            aggregate = self.load(aggregate_id)
        except (AggregateNotFoundError, ClientDataErasedError):  # an erased client's (issue 16): gone for decisions
            return None
        if not isinstance(aggregate, cls):
            return None
        return aggregate

    def record_run(
        self,
        handle: Callable[[Inbound], Sequence[AggregateRoot]],
        messages: Sequence[Inbound | Watermark],
        trackings: Sequence[Tracking],
        *,
        also: Callable[[Sequence[AggregateRoot]], Sequence[AggregateRoot]] | None = None,
    ) -> int:
        """Decides a run of messages in order and records all their events with
        ``trackings``, in one transaction: all or nothing. Later decisions of the run see
        the aggregates as earlier ones left them. ``also`` is given the changed aggregates
        and adds others to record with them (a redriven dead letter's outcome)."""
        changed: dict[UUID, AggregateRoot] = {}
        with self._in_place:
            self._unit_of_work.aggregates = changed
            try:
                for index, message in enumerate(messages):
                    if isinstance(message, Inbound):
                        try:
                            decided = handle(message)
                        except Exception as e:
                            raise DecisionFailedError(index) from e
                        for aggregate in decided:
                            changed[aggregate.id] = aggregate
                for aggregate in also(list(changed.values())) if also is not None else ():
                    changed[aggregate.id] = aggregate
                return self.record(list(changed.values()), trackings)
            except BaseException:
                self.forget_cached()
                raise
            finally:
                self._unit_of_work.aggregates = None

    def forget_cached(self) -> None:
        """After a failed decision: cached aggregates may hold its unrecorded changes.
        (The library's ``LRUCache.clear`` only resets its recency list and keeps every entry:
        a changed aggregate would stay, and be fast-forwarded past events another writer
        recorded at the versions it had taken, so its entries are dropped here.)"""
        cache = self.repository.cache  # type: ignore[attr-defined]
        if cache is None:
            return
        self.repository.cache = LRUCache(maxsize=cache.maxsize) if isinstance(cache, LRUCache) else type(cache)()

    def decide(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        """What a consumed message changes: its handler in the reaction table."""
        return self.reactions.react(self, inbound)

    def reread_after_recovery(self) -> None:
        """The store was mended under this application (a restored store recovered): forget
        what was cached, and rebuild what was read from the store at start (timers)."""
        self.forget_cached()

    def follow_timers(self, after: int) -> int:
        """Arms the durable timers for what was recorded after notification ``after`` (by
        other instances of a partitioned service: services/shared/partitions.py); returns
        the position read up to. Services without timers have nothing to arm."""
        return after

    def notifications_after(self, after: int, page: int = 500) -> Iterator[Notification]:
        """The log after notification ``after``, in order, read a page at a time."""
        start = after + 1
        while batch := self.process_recorder.select_notifications(start=start, limit=page):
            yield from batch
            start = batch[-1].id + 1

    def note_watermark(self, watermark: Watermark) -> None:
        """Everything ``watermark.source`` committed before ``watermark.at`` has been decided
        (called after the messages before it were recorded). Services with timers use it."""

    # ----------------------------------------------------------------- dead letters

    def is_risk_signal(self, subject: str, body: dict[str, Any] | None) -> bool:
        """Whether a message on ``subject`` may carry a risk signal (decided without
        trusting its content: by its kind)."""
        parts = parse_subject(subject)
        if parts is None:
            return False
        return any(aggregate_token(cls) == parts.aggregate and event_token(cls) == parts.event for cls in self.risk_signals)

    def record_dead_letter(
        self, consumer: str, failed: FailedMessage, error: ErrorSummary, attempts: int, risk_signal: bool,
        trackings: Sequence[Tracking], *, reason: str | None = None,
    ) -> DeadLetter:
        """The dead letter (and whatever a fail-safe adds) with the message's tracking."""
        with self._in_place:
            existing = self.find(DeadLetter, dead_letter_id(consumer, failed.stream_sequence))
            if existing is not None:  # handed out again (a durable made anew): recorded before
                if trackings:
                    self.record([], trackings)
                return existing
            ctx = CommandContext(actor=self.actor, at=self.clock(), correlation_id=failed.correlation_id,
                                 causation_id=failed.event_id)
            dead = DeadLetter.record(
                ctx=ctx, service=consumer, subject=failed.subject, stream_sequence=failed.stream_sequence,
                source=failed.source, position=failed.position, failed_event_id=failed.event_id,
                failed_event_type=failed.event_type, error_class=quote(error.error_class, SHORT_TEXT_MAX),
                error_code=quote(error.code, SHORT_TEXT_MAX) if error.code else None,
                field_paths=[quote(p, SHORT_TEXT_MAX) for p in error.field_paths[:10]], attempts=attempts,
                risk_signal=risk_signal, plan_id=failed.plan_id, client_id=failed.client_id, reason=reason,
            )
            try:
                self.record([dead, *self.fail_safe(dead)], trackings)
            except BaseException:
                self.forget_cached()
                raise
            return dead

    def fail_safe(self, dead: DeadLetter) -> Sequence[AggregateRoot]:
        """What recording ``dead`` also records at once (the escalation service raises its
        fail-safe crisis here; other services' dead letters reach it over the stream)."""
        return []

    def redrive_requests(self, after: int) -> list[tuple[int, UUID]]:
        """Redrive requests recorded after notification ``after``: (position, dead letter id)."""
        topic = get_topic(DeadLetterRedriveRequested)
        # positions found to hold no request are not searched again (each look scanned the
        # whole log since the last request: a cost growing with the log, every few seconds)
        end = self.process_recorder.max_notification_id() or 0
        start = max(after, getattr(self, "_no_redrive_up_to", 0)) + 1
        found = self.process_recorder.select_notifications(start=start, limit=100, stop=end, topics=[topic])
        if not found:
            self._no_redrive_up_to = end
        return [(n.id, n.originator_id) for n in found]

    def redrive(self, dead: DeadLetter, inbound: Inbound | None, handle: Callable[[Inbound], Sequence[AggregateRoot]],
                error: BaseException | None) -> int:
        """Decides a dead letter's message again and records the outcome on the dead letter,
        in the same transaction as the decision's events (no tracking: the positions moved
        on long ago); the dead letter's version makes it happen once. ``error``: the message
        could not even be read again. Returns how many events the decision recorded."""
        ctx = CommandContext(actor=self.actor, at=self.clock(), correlation_id=dead.correlation_id,
                             causation_id=str(dead.id))
        if inbound is not None and error is None:
            decided = 0

            def outcome(changed: Sequence[AggregateRoot]) -> Sequence[AggregateRoot]:
                nonlocal decided
                decided = sum(len(a.pending_events) for a in changed)
                current = self.load(dead.id)
                current.redriven(events_recorded=decided, ctx=ctx)
                return [current]

            try:
                self.record_run(handle, [inbound], [], also=outcome)
                return decided
            except Exception as e:
                cause = unwrap(e)
                if is_transient(cause) or isinstance(cause, IntegrityError):
                    raise cause from None
                error = cause
        summary = describe(error) if error is not None else ErrorSummary("MessageUnavailable")
        with self._in_place:
            current = self.load(dead.id)
            current.redrive_failed(error_class=quote(summary.error_class, SHORT_TEXT_MAX),
                                   error_code=quote(summary.code, SHORT_TEXT_MAX) if summary.code else None,
                                   field_paths=[quote(p, SHORT_TEXT_MAX) for p in summary.field_paths[:10]], ctx=ctx)
            try:
                self.record([current], [])
            except BaseException:
                self.forget_cached()
                raise
        return 0


class ServiceApplication(Tracked, Application[UUID]):
    """A service's own event store, written only with the tracking of what caused it."""

    snapshot_class = AggregateSnapshot

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = MonotonicClock(clock) if clock is not None else MonotonicClock()
        env = eventsourcing_env(settings, self.name)
        surviving_catalog_races(lambda: super(ServiceApplication, self).__init__(env=env))

    def construct_recorder(self) -> ProcessRecorder:
        return surviving_catalog_races(self.factory.process_recorder)

    def stored_notifications(self) -> Iterator[Notification]:
        """The service's whole log in order, read in pages (start-up scans rebuild from it)."""
        return paged_notifications(self.recorder, page=500)

    def aggregate_ids_created_by(self, event_class: type[DomainEvent]) -> list[UUID]:
        """Ids of the aggregates whose creation event is ``event_class``, oldest first."""
        topic = get_topic(event_class)
        return list(dict.fromkeys(n.originator_id for n in self.stored_notifications() if n.topic == topic))


