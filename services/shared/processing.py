"""What every service shares: an event store written together with the tracking record of
the consumed message (eventsourcing process recorder), and a durable JetStream consumer
that feeds it.

Processing is strictly in order per consumer: a failing message is retried in place with
capped backoff (keeping its delivery alive with in-progress acks) and, after
``max_attempts``, goes to ``care.deadletter.<service>`` with the error and its original
headers; then the consumer moves on. JetStream's nack-with-delay is not used for
retries because it lets later messages overtake the failing one, and tracking by position
(one row per source) would then skip it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.persistence import IntegrityError, Notification, ProcessRecorder, Tracking
from eventsourcing.utils import get_topic
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream import Context
from faststream.nats.message import NatsMessage
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts.subjects import CE_SOURCE_PREFIX, dead_letter_subject
from domain.base import Actor, AggregateRoot, AggregateSnapshot, CommandContext, DomainEvent, project
from services.shared import compat
from services.shared.clock import Clock, MonotonicClock
from services.shared.persistence import eventsourcing_env, paged_notifications, surviving_catalog_races
from services.shared.relay import Backoff
from services.shared.settings import Settings

log = logging.getLogger(__name__)
compat.install()


class MalformedMessageError(ValueError):
    """A message on the stream is not a careplan CloudEvent; it cannot be retried into shape."""


@dataclass(frozen=True)
class Inbound:
    """A consumed CloudEvent: where it comes from, its position there, and its body."""

    source: str
    sequence: int
    event_id: str
    type: str
    subject: str
    aggregate_id: str
    body: dict[str, Any]

    @property
    def event_name(self) -> str:
        return self.type.rsplit(".", 1)[-1]

    @property
    def correlation_id(self) -> UUID:
        return UUID(str(self.body["correlation_id"]))


def parse_inbound(subject: str, headers: dict[str, str] | None, data: bytes) -> Inbound:
    headers = headers or {}
    try:
        source = headers["ce-source"]
        if not source.startswith(CE_SOURCE_PREFIX + ":"):
            msg = f"ce-source {source!r} is not a careplan application"
            raise MalformedMessageError(msg)
        body = json.loads(data)
        if not isinstance(body, dict):
            msg = "body is not a JSON object"
            raise MalformedMessageError(msg)
        return Inbound(
            source=source.removeprefix(CE_SOURCE_PREFIX + ":"),
            sequence=int(headers["ce-sequence"]),
            event_id=headers["ce-id"],
            type=headers["ce-type"],
            subject=subject,
            aggregate_id=headers["ce-subject"],
            body=body,
        )
    except MalformedMessageError:
        raise
    except (KeyError, ValueError, TypeError) as e:
        msg = f"not a careplan CloudEvent: {type(e).__name__}: {e}"
        raise MalformedMessageError(msg) from e


class Tracked:
    """For an Application whose recorder is a process recorder: ``record`` writes new events
    and the tracking record of the consumed message in one transaction, and
    ``is_processed`` recognises a message recorded before."""

    recorder: Any
    repository: Any
    #: The actor of every event recorded in reaction to a consumed one.
    actor: ClassVar[Actor]
    clock: Clock
    #: Per thread: the aggregates a run of decisions has changed but not yet recorded.
    _unit_of_work = threading.local()
    #: Held while a run of decisions works on cached aggregates in place, and while anyone
    #: else copies one out of the cache, so no copy is taken of a half-made change.
    _in_place = threading.RLock()

    @property
    def process_recorder(self) -> ProcessRecorder:
        assert isinstance(self.recorder, ProcessRecorder)
        return self.recorder

    def context_for(self, inbound: Inbound) -> CommandContext:
        """Events caused by a consumed event carry its story and name it as their cause."""
        return CommandContext(
            actor=self.actor, at=self.clock(), correlation_id=inbound.correlation_id, causation_id=inbound.event_id
        )

    def is_processed(self, inbound: Inbound) -> bool:
        return self.process_recorder.has_tracking_id(inbound.source, inbound.sequence)

    def record(self, aggregates: Sequence[AggregateRoot], inbound: Inbound) -> int:
        processing = ProcessingEvent(tracking=Tracking(inbound.source, inbound.sequence))
        processing.collect_events(*aggregates)
        self._record(processing)  # type: ignore[attr-defined]
        return len(processing.events)

    def load(self, aggregate_id: UUID, version: int | None = None) -> Any:
        """An aggregate as the decisions of the current run left it, else as stored.

        A run of decisions works on the cached aggregate itself instead of the library's
        deep copy of it (the copy was most of the cost of a decision): a run holds the
        lock while it changes aggregates, and a failed run empties the cache."""
        pending: dict[UUID, AggregateRoot] | None = getattr(self._unit_of_work, "aggregates", None)
        if pending is None:
            with self._in_place:
                return self.repository.get(aggregate_id, version=version, projector_func=project)
        if version is None and aggregate_id in pending:
            return pending[aggregate_id]
        return self.repository.get(aggregate_id, version=version, projector_func=project, deepcopy_from_cache=False)

    def processed_up_to(self, source: str) -> int:
        return self.process_recorder.max_tracking_id(source) or 0

    def record_run(self, handle: Callable[[Inbound], Sequence[AggregateRoot]], inbounds: Sequence[Inbound]) -> int:
        """Decides a run of messages from one source in order and records all their events
        with the tracking of the last one, in one transaction: all or nothing. Later
        decisions of the run see the aggregates as earlier ones left them."""
        changed: dict[UUID, AggregateRoot] = {}
        with self._in_place:
            self._unit_of_work.aggregates = changed
            try:
                for inbound in inbounds:
                    for aggregate in handle(inbound):
                        changed[aggregate.id] = aggregate
                return self.record(list(changed.values()), inbounds[-1])
            except BaseException:
                self.forget_cached()
                raise
            finally:
                self._unit_of_work.aggregates = None

    def forget_cached(self) -> None:
        """After a failed decision: cached aggregates may hold its unrecorded changes."""
        cache = self.repository.cache  # type: ignore[attr-defined]
        if cache is not None and hasattr(cache, "clear"):
            cache.clear()

    def decide(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        raise NotImplementedError


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

    def find(self, cls: type[AggregateRoot], aggregate_id: UUID) -> Any:
        try:
            aggregate = self.load(aggregate_id)
        except AggregateNotFoundError:
            return None
        assert isinstance(aggregate, cls)
        return aggregate



Handler = Callable[[Inbound], Sequence[AggregateRoot]]

BATCH = 64
#: How long one pull request waits on the server for the next message while all is quiet.
IDLE_PULL_SECONDS = 1.0
#: How soon a crashed instance's unacknowledged messages are handed out again. Retries
#: keep their messages alive with in-progress acks, so the backoff cap stays below it.
ACK_WAIT_SECONDS = 5.0


class DurableConsumer:
    """One durable JetStream consumer feeding one service handler, through FastStream.

    FastStream pulls one message at a time (a pull request for one returns the moment a
    message arrives; one for many waits to fill up or time out, which would hold every
    message back while traffic is light). Whatever else is waiting is then taken at once
    with a no-wait pull, and the lot is decided and recorded in as few transactions as
    possible: one per run of messages from the same source."""

    def __init__(
        self,
        settings: Settings,
        *,
        service: str,
        app: Tracked,
        subjects: list[str],
        handle: Handler,
        max_attempts: int = 5,
        retry_cap: float = 2.0,
        on_recorded: Callable[[], object] = lambda: None,
    ) -> None:
        """``on_recorded`` is called (in a worker thread) after each commit, e.g. to wake
        the service's relay."""
        self.settings = settings
        self.service = service
        self.app = app
        self.subjects = subjects
        self.handle = handle
        self.max_attempts = max_attempts
        self.retry_cap = retry_cap
        self.on_recorded = on_recorded
        self.broker: NatsBroker | None = None
        self.subscriber: Any = None
        self.processed = 0
        self.skipped = 0
        self.dead_lettered = 0
        #: Transactions that each recorded a whole run of messages (the fast path).
        self.runs = 0
        #: Messages decided on their own after their run failed together.
        self.isolated = 0

    def attach(self, broker: NatsBroker) -> None:
        self.broker = broker
        self.subscriber = broker.subscriber(
            stream=JStream(self.settings.stream_name, declare=False),
            durable=self.service,
            pull_sub=PullSub(batch_size=1, timeout=IDLE_PULL_SECONDS),
            ack_policy=AckPolicy.MANUAL,
            config=ConsumerConfig(
                filter_subjects=self.subjects,
                deliver_policy=DeliverPolicy.ALL,
                # Nothing later is handed out while earlier messages await their ack: after a
                # crash, the dead instance's messages come back first and in order, instead
                # of being overtaken (and then skipped as already tracked).
                max_ack_pending=BATCH,
                ack_wait=ACK_WAIT_SECONDS,
                max_deliver=-1,
            ),
            title=f"{self.service} consumer",
        )
        self.subscriber(self.on_message)

    async def on_message(self, message: Annotated[NatsMessage, Context("message")]) -> None:
        first: Msg = message.raw_message
        # JetStream says how many more the consumer holds; at a light load, none.
        behind = first.metadata.num_pending if first.metadata.num_pending is not None else BATCH
        waiting = await take_available(self.subscriber.subscription, min(behind, BATCH - 1))
        await self.process_batch([first, *waiting])

    async def process_batch(self, batch: Sequence[Msg]) -> None:
        try:
            parsed: list[tuple[Msg, Inbound | MalformedMessageError]] = []
            for raw in batch:
                try:
                    parsed.append((raw, parse_inbound(raw.subject, raw.headers, raw.data)))
                except MalformedMessageError as e:
                    parsed.append((raw, e))
            i = 0
            while i < len(parsed):
                raw, inbound = parsed[i]
                if isinstance(inbound, MalformedMessageError):
                    await self._dead_letter(raw, inbound, attempts=0)
                    i += 1
                    continue
                run = [(raw, inbound)]
                while i + len(run) < len(parsed):
                    follower = parsed[i + len(run)][1]
                    if not isinstance(follower, Inbound) or follower.source != inbound.source:
                        break
                    run.append((parsed[i + len(run)][0], follower))
                i += len(run)
                await self._process_run(run, waiting=[m for m, _ in parsed[i:]])
        except Exception as e:  # noqa: BLE001 - see below
            # Something beyond a message's own failure (the store or the bus is down). The
            # rest of this batch stays unacknowledged; fetching again at once would hand
            # out later messages first. Waiting out ack_wait makes NATS redeliver these
            # first, in order.
            log.error("%s: batch interrupted (%s); resuming after %.0f s", self.service, e, ACK_WAIT_SECONDS)
            await asyncio.sleep(ACK_WAIT_SECONDS + 0.5)

    async def _process_run(self, run: Sequence[tuple[Msg, Inbound]], *, waiting: Sequence[Msg]) -> None:
        """The fast path: the whole run in one transaction. Any failure (a message that
        cannot be decided, a concurrent change) records nothing, and the run is then
        worked through message by message, with retries and dead-lettering."""
        inbounds = [inbound for _, inbound in run]
        try:
            skipped = await asyncio.to_thread(self._record_fresh, inbounds)
        except Exception as e:  # noqa: BLE001 - nothing was recorded; the careful path decides
            log.info("%s: a run of %d messages from %s failed together (%s); one by one now", self.service,
                     len(run), inbounds[0].source, e)
            self.isolated += len(run)
            for k, (raw, _) in enumerate(run):
                await self.process(raw, waiting=[*(m for m, _ in run[k + 1 :]), *waiting])
            return
        self.skipped += skipped
        self.processed += len(run) - skipped
        self.runs += 1
        for raw, _ in run:
            await raw.ack()

    def _record_fresh(self, inbounds: Sequence[Inbound]) -> int:
        """Records the run's messages not yet tracked; returns how many were already."""
        done = self.app.processed_up_to(inbounds[0].source)
        fresh = [inbound for inbound in inbounds if inbound.sequence > done]
        if fresh:
            self.app.record_run(self.handle, fresh)
            self.on_recorded()
        return len(inbounds) - len(fresh)

    async def wait_for_previous_instance(self, js: Any) -> float:
        """A new instance lets the messages a dead one left unacknowledged come back first."""
        try:
            info = await js.consumer_info(self.settings.stream_name, self.service)
        except Exception:  # noqa: BLE001 - no durable yet: nothing can be pending
            return 0.0
        if not info.num_ack_pending:
            return 0.0
        delay = ACK_WAIT_SECONDS + 0.5
        log.info("%s: %d messages of a previous instance await redelivery; starting in %.1f s",
                 self.service, info.num_ack_pending, delay)
        await asyncio.sleep(delay)
        return delay

    async def process(self, raw: Msg, *, waiting: Sequence[Msg] = ()) -> None:
        try:
            inbound = parse_inbound(raw.subject, raw.headers, raw.data)
        except MalformedMessageError as e:
            await self._dead_letter(raw, e, attempts=0)
            return
        if await asyncio.to_thread(self.app.is_processed, inbound):
            self.skipped += 1
            await raw.ack()
            return
        backoff = Backoff(initial=0.2, cap=self.retry_cap)
        failures = 0
        while True:
            try:
                await asyncio.to_thread(self._decide_and_record, inbound)
            except IntegrityError as e:
                if await asyncio.to_thread(self.app.is_processed, inbound):
                    # Recorded by another instance sharing this durable between our check and now.
                    self.skipped += 1
                    await raw.ack()
                    return
                # An aggregate moved on under us (e.g. a timer fired): not a failure, decide again.
                log.info("%s: %s:%d met a concurrent change (%s); deciding again", self.service, inbound.source,
                         inbound.sequence, e)
                await asyncio.sleep(0.02)
            except Exception as e:  # noqa: BLE001 - any failure is retried, then dead-lettered
                failures += 1
                log.warning("%s: %s from %s:%d failed (attempt %d): %s", self.service, inbound.event_name,
                            inbound.source, inbound.sequence, failures, e)
                if failures >= self.max_attempts:
                    await self._dead_letter(raw, e, attempts=failures)
                    return
                for held in (raw, *waiting):  # keep this one and those behind it from being redelivered meanwhile
                    await held.in_progress()
                await asyncio.sleep(backoff.next())
            else:
                self.processed += 1
                await raw.ack()
                return

    def _decide_and_record(self, inbound: Inbound) -> None:
        self.app.record_run(self.handle, [inbound])
        self.on_recorded()


    async def _dead_letter(self, raw: Msg, error: Exception, *, attempts: int) -> None:
        headers = dict(raw.headers or {})
        headers.pop("Nats-Msg-Id", None)
        headers |= {
            "careplan-error": f"{type(error).__name__}: {error}"[:1000],
            "careplan-failed-subject": raw.subject,
            "careplan-attempts": str(attempts),
            "careplan-service": self.service,
            # the stream position makes a repeat of this dead-lettering a duplicate
            "Nats-Msg-Id": f"deadletter:{self.service}:{raw.metadata.sequence.stream}",
        }
        assert self.broker is not None
        await self.broker.publish(raw.data, dead_letter_subject(self.service), headers=headers, stream=self.settings.stream_name)
        log.error("%s: message %s (stream seq %d) dead-lettered: %s", self.service, raw.subject,
                  raw.metadata.sequence.stream, error)
        self.dead_lettered += 1
        await raw.ack()


async def take_available(subscription: Any, limit: int) -> list[Msg]:
    """Up to ``limit`` messages the consumer can hand out right now, without waiting for
    more: a no-wait pull request (nats-py's fetch adds an expiry when its queue is empty,
    and the server then waits for the whole batch). Status replies end the take."""
    if limit <= 0:
        return []
    sub = subscription._sub  # noqa: SLF001 - nats-py keeps the pull inbox here
    taken: list[Msg] = []
    while not sub._pending_queue.empty() and len(taken) < limit:  # noqa: SLF001 - left by an expired pull
        msg = sub._pending_queue.get_nowait()  # noqa: SLF001
        sub._pending_size -= len(msg.data)  # noqa: SLF001
        if not _status(msg):
            taken.append(msg)
    if len(taken) == limit:
        return taken
    request = json.dumps({"batch": limit - len(taken), "no_wait": True}).encode()
    await subscription._nc.publish(subscription._nms, request, subscription._deliver)  # noqa: SLF001
    while len(taken) < limit:
        try:
            msg = await sub.next_msg(timeout=PULL_REPLY_SECONDS)
        except (TimeoutError, asyncio.TimeoutError):
            break
        if not _status(msg):
            taken.append(msg)
        elif _status(msg) != "100":  # 404 no messages, 408 request over; 100 is a heartbeat
            break
    return taken


#: A no-wait pull is answered at once; this only bounds a lost reply.
PULL_REPLY_SECONDS = 1.0


def _status(msg: Msg) -> str | None:
    return (msg.headers or {}).get("Status") if not msg.data else None
