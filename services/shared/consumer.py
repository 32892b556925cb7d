"""The durable JetStream consumer that feeds a service's store (through FastStream).

Failures. A failure of the infrastructure (the store locked or unreachable, NATS slow)
is not the message's fault: the message is retried for as long as it takes, held in
place, with an alarm while it lasts. Any other failure is retried a few times and then
recorded as a dead letter (see :mod:`services.shared.tracking`).

Processing is strictly in order per consumer: a failing message is retried in place
(keeping its delivery, and those behind it, alive with in-progress acks). JetStream's
nack-with-delay is not used for retries because it lets later messages overtake it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from eventsourcing.persistence import (
    IntegrityError,
    Tracking,
)
from faststream import Context
from faststream.middlewares import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsMessage
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from domain.base import (
    AggregateRoot,
)
from domain.operations.dead_letter import DeadLetter, DeadLetterStatus
from services.shared import metrics, tracing
from services.shared.alarms import CONSUMER_NOT_ADVANCING, Alarm
from services.shared.cloudevents import Inbound, MalformedMessageError, Watermark, parse_inbound
from services.shared.diagnostics import describe
from services.shared.relay import Backoff
from services.shared.settings import Settings
from services.shared.tracking import (
    DecisionFailedError,
    FailedMessage,
    Foreign,
    HistoryLookup,
    Positions,
    Tracked,
    is_transient,
    partition_of,
    stream_tracking_name,
    unwrap,
)

log = logging.getLogger(__name__)

Handler = Callable[[Inbound], Sequence[AggregateRoot]]

BATCH = 64
#: How long one pull request waits on the server for the next message while all is quiet.
IDLE_PULL_SECONDS = 1.0
#: How soon a crashed instance's unacknowledged messages are handed out again. Retries
#: keep their messages alive with in-progress acks, so the backoff cap stays below it.
ACK_WAIT_SECONDS = 5.0
#: How long the infrastructure may fail on one message before it is an alarm (ERROR).
STUCK_ALARM_SECONDS = 30.0
#: How often a halted consumer checks whether an operator has mended its positions.
HALT_RECHECK_SECONDS = 2.0
#: How often a consumer unsure of its deliveries looks again whether one is outstanding elsewhere.
OUTSTANDING_RECHECK_SECONDS = 0.2


@dataclass
class ConsumerStats:
    processed: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    #: Transactions that each recorded a whole run of messages (the fast path).
    runs: int = 0
    #: Messages decided on their own after their run failed together.
    isolated: int = 0
    redriven: int = 0
    #: Why the consumer halted (a source went backwards), or None.
    halted: str | None = None
    #: Since when (monotonic) the infrastructure has kept failing on one message, or None.
    stuck_since: float | None = None


class DurableConsumer:
    """One durable JetStream consumer feeding one service handler, through FastStream.

    FastStream pulls one message at a time (a pull request for one returns the moment a
    message arrives; one for many waits to fill up or time out, which would hold every
    message back while traffic is light). Whatever else is waiting is then taken at once
    with a no-wait pull, and the lot is decided and recorded in as few transactions as
    possible: one per run of new messages."""

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
        partition: tuple[int, int] | None = None,
    ) -> None:
        """``on_recorded`` is called (in a worker thread) after each commit, e.g. to wake
        the service's relay. ``partition``: (k, P), this consumer decides only the messages
        of aggregates in partition k of P (durable ``<service>-p<k>``, positions of its own;
        services/shared/partitions.py); the others it passes over, recording its position."""
        self.settings = settings
        self.service = service
        self.partition = partition
        #: The durable consumer's name, and the name its positions are recorded under.
        self.durable = service if partition is None else f"{service}-p{partition[0]}"
        #: Source positions of a partition are recorded apart from the other partitions'.
        self._source_suffix = "" if partition is None else f"#p{partition[0]}"
        self.app = app
        self.subjects = subjects
        self.handle = handle
        self.max_attempts = max_attempts
        self.retry_cap = retry_cap
        self.on_recorded = on_recorded
        self.broker: NatsBroker | None = None
        self.subscriber: Any = None
        self.stats = ConsumerStats()
        self.positions = Positions()
        self._tracking_name = stream_tracking_name(settings.stream_name, self.durable)
        self._redrive_seen = 0
        self._stuck_alarmed = False
        self._js: Any = None
        self.figures = metrics.ConsumerFigures(service)
        #: Messages wait and none was finished for ``alarm_consumer_seconds`` (:meth:`check_progress`).
        self.not_advancing = Alarm(CONSUMER_NOT_ADVANCING, f"service:{self.durable}")
        self._progress: tuple[int, ...] = ()
        self._advanced_at = time.monotonic()
        #: The consumer sequence JetStream gives this durable's next delivery, while every
        #: delivery so far came to this instance and was finished (acknowledged) or is in
        #: hand; None when that is not known (at start, after a delivery was left unfinished).
        #: See :meth:`_in_order`.
        self._next_delivery: int | None = None

    # Counters, as they were named before the stats object.
    processed = property(lambda self: self.stats.processed)
    skipped = property(lambda self: self.stats.skipped)
    dead_lettered = property(lambda self: self.stats.dead_lettered)
    runs = property(lambda self: self.stats.runs)
    isolated = property(lambda self: self.stats.isolated)

    async def check_progress(self, js: Any, phase: str = "consuming") -> None:
        """Raises or clears ``consumer_not_advancing``: messages wait for this durable
        (pending or unacknowledged) and none was finished since the threshold."""
        info = await js.consumer_info(self.settings.stream_name, self.durable)
        waiting = (info.num_pending or 0) + (info.num_ack_pending or 0)
        progress = (self.positions.stream, self.stats.processed, self.stats.skipped, self.stats.dead_lettered)
        now = time.monotonic()
        if waiting == 0 or progress != self._progress:
            self._progress, self._advanced_at = progress, now
            self.not_advancing.clear()
        elif now - self._advanced_at >= self.settings.alarm_consumer_seconds:
            if self.stats.halted is not None:
                reason = "halted: a source went backwards"
            elif self.stats.stuck_since is not None:
                reason = "stuck on one message: the store or NATS fails"
            elif phase != "consuming":
                reason = f"messages wait; the consumer is {phase}"
            else:
                reason = f"messages wait and none was processed within {self.settings.alarm_consumer_seconds:g} s"
            self.not_advancing.raise_(reason)

    def attach(self, broker: NatsBroker) -> None:
        self.broker = broker
        self.subscriber = broker.subscriber(
            stream=JStream(self.settings.stream_name, declare=False),
            durable=self.durable,
            pull_sub=PullSub(batch_size=1, timeout=IDLE_PULL_SECONDS),
            ack_policy=AckPolicy.MANUAL,
            config=ConsumerConfig(
                filter_subjects=self.subjects,
                deliver_policy=DeliverPolicy.ALL,
                # Nothing later is handed out while earlier messages await their ack: after a
                # crash, the dead instance's messages come back first and in order, instead
                # of being overtaken.
                max_ack_pending=BATCH,
                ack_wait=ACK_WAIT_SECONDS,
                max_deliver=-1,
            ),
            title=f"{self.durable} consumer",
        )
        self.subscriber(self.on_message)

    def _load_positions(self) -> Positions:
        if self.partition is None:
            return self.app.positions(self.settings.stream_name, self.service)
        found = self.app.positions(self.settings.stream_name, self.durable, source_suffix=self._source_suffix)
        if found.stream == 0 and not found.sources:
            # A partition that never recorded anything starts where the single durable
            # consumer of the service left off (a service that ran unpartitioned before).
            return self.app.positions(self.settings.stream_name, self.service)
        return found

    def mine(self, subject: str) -> bool:
        """Whether this consumer decides messages on ``subject`` (those of no aggregate,
        watermarks, every partition decides)."""
        if self.partition is None:
            return True
        k = partition_of(subject, self.partition[1])
        return k is None or k == self.partition[0]

    async def in_line(self, js: Any) -> bool:
        """Before consuming: reads the recorded positions, gives the application the stream
        for missing history, and checks that the store has not gone back behind what this
        consumer acknowledged (a restored store). False: halted, with an alarm."""
        self._js = js
        self.app.history = HistoryLookup(js, asyncio.get_running_loop(), self.settings.stream_name)
        self.positions = await asyncio.to_thread(self._load_positions)
        problem = await self._behind_acknowledged(js)
        if problem is not None:
            self._alarm_halt(problem)
            return False
        return True

    async def wait_until_in_line(self, js: Any, stop: asyncio.Event) -> None:
        """While halted at start: checks again now and then (``careplan store recover`` mends
        the store); then what was read from the store at start, now stale, is read again."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=HALT_RECHECK_SECONDS)
                return
            except TimeoutError:
                pass
            if await self.in_line(js):
                await asyncio.to_thread(self.app.reread_after_recovery)
                self._resume_if_halted()
                return

    async def _behind_acknowledged(self, js: Any) -> str | None:
        try:
            info = await js.consumer_info(self.settings.stream_name, self.durable)
        except Exception:  # noqa: BLE001 - no durable yet: nothing was acknowledged
            return None
        acknowledged = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        legacy = self.positions.stream == 0 and bool(self.positions.sources)
        if acknowledged <= self.positions.stream or legacy:
            return None
        # The floor also passes messages of other subjects: behind only if one of this
        # consumer's own messages lies between the recorded position and the floor.
        for subject in self.subjects:
            try:
                found = await js.get_msg(self.settings.stream_name, seq=self.positions.stream + 1, subject=subject,
                                         next=True, direct=True)
            except NotFoundError:
                continue
            if found.seq <= acknowledged:
                return (f"the store's recorded stream position {self.positions.stream} is behind what this consumer "
                        f"acknowledged (stream message {found.seq}, up to {acknowledged}): the store was restored or reset")
        return None

    async def on_message(self, message: Annotated[NatsMessage, Context("message")]) -> None:
        first: Msg = message.raw_message
        try:
            # JetStream says how many more the consumer holds; at a light load, none.
            behind = first.metadata.num_pending if first.metadata.num_pending is not None else BATCH
            waiting = await take_available(self.subscriber.subscription, min(behind, BATCH - 1))
        except BaseException:
            self._next_delivery = None  # ``first`` is left unacknowledged: it comes back later
            raise
        await self.process_batch([first, *waiting])

    async def process_batch(self, batch: Sequence[Msg]) -> None:
        # In stream order (a redelivery may arrive behind later messages), and kept alive while
        # decided: a message whose ack_wait ran out would be handed out again meanwhile.
        ordered = sorted(batch, key=_stream_sequence)
        keep_alive = asyncio.ensure_future(self._keep_alive(ordered))
        try:
            await self._in_order(ordered)
            await self._process_batch(ordered)
        except Exception as e:  # noqa: BLE001 - see below
            # Something beyond a message's own failure (the bus is down). The rest of this
            # batch stays unacknowledged; fetching again at once would hand out later
            # messages first. Waiting out ack_wait makes NATS redeliver these first, in order.
            self._next_delivery = None
            log.error("%s: batch interrupted (%s); resuming after %.0f s", self.service, describe(e), ACK_WAIT_SECONDS)
            keep_alive.cancel()
            await asyncio.sleep(ACK_WAIT_SECONDS + 0.5)
            self.positions = await asyncio.to_thread(self._load_positions)
        finally:
            keep_alive.cancel()

    async def _in_order(self, held: list[Msg]) -> None:
        """Makes sure no delivery of this durable is outstanding elsewhere before anything
        of ``held`` (sorted, extended in place) is decided.

        The recorded stream position is a high-water mark: a redelivery behind it is taken
        for decided. That holds only while no message is decided past one that JetStream
        handed out and nobody finished — which happens when a delivery went to an instance
        that died with it (its pull request outlives it by up to a second, so a message can
        be handed to it after its successor started) or to this instance, which dropped it
        (an error before its batch). JetStream then hands out later messages (up to
        ``max_ack_pending`` outstanding) and the lost one only after its ack_wait, behind
        them. Every delivery of a durable carries the next consumer sequence, redeliveries
        included: while this instance's deliveries follow one another, none went elsewhere,
        and nothing is asked (the hot path). Otherwise (at start, after a gap or an
        unfinished delivery) the consumer asks JetStream until every outstanding delivery
        is one in hand, taking the redeliveries as they come back."""
        if self._js is None or not held:
            return  # no JetStream (the in-memory pipeline of the tests hands each message out once)
        deliveries = sorted(_delivery(m) for m in held)
        if self._next_delivery is not None and deliveries == list(range(self._next_delivery,
                                                                          self._next_delivery + len(deliveries))):
            self._next_delivery = deliveries[-1] + 1
            return
        since = time.monotonic()
        told = False
        while True:
            info = await self._js.consumer_info(self.settings.stream_name, self.durable)
            in_hand = {_stream_sequence(m) for m in held}
            last = max(_delivery(m) for m in held)
            if (info.num_ack_pending or 0) <= len(in_hand) and (info.delivered.consumer_seq or 0) <= last:
                self._next_delivery = last + 1
                if told:
                    log.info("%s: the outstanding deliveries came back after %.1f s; deciding in order", self.service,
                             time.monotonic() - since)
                return
            if not told and time.monotonic() - since > 1.0:
                told = True
                log.info("%s: %d message(s) handed out elsewhere and not acknowledged (a previous instance's); waiting "
                         "for their redelivery before deciding the %d in hand", self.service,
                         (info.num_ack_pending or 0) - len(in_hand), len(in_hand))
            await asyncio.sleep(OUTSTANDING_RECHECK_SECONDS)
            if self.subscriber is not None and self.subscriber.subscription is not None:
                more = await take_available(self.subscriber.subscription, BATCH - len(in_hand))
                held.extend(more)
                held.sort(key=_stream_sequence)

    async def _keep_alive(self, batch: Sequence[Msg]) -> None:
        while True:
            await asyncio.sleep(ACK_WAIT_SECONDS / 2.5)
            for raw in list(batch):
                try:
                    await raw.in_progress()
                except Exception:  # noqa: BLE001 - acknowledged meanwhile, or the bus is down
                    pass

    async def _process_batch(self, batch: list[Msg]) -> None:
        parsed = [(raw, self._parse(raw)) for raw in batch]
        i = 0
        while i < len(parsed):
            raw, message = parsed[i]
            first = _first_delivery(raw)
            if raw.metadata.sequence.stream <= self.positions.stream and not first:
                await self._skip(raw)
                i += 1
                continue
            if isinstance(message, MalformedMessageError):
                await self._dead_letter(raw, None, message, attempts=0)
                i += 1
                continue
            verdict = self.positions.verdict(message, first_delivery=first)
            if verdict == "new" and raw.metadata.sequence.stream <= self.positions.stream:
                log.warning("%s: stream message %d is handed out for the first time behind recorded position %d; "
                            "deciding it", self.service, raw.metadata.sequence.stream, self.positions.stream)
            if verdict == "decided":
                await self._skip(raw)
                i += 1
                continue
            if verdict == "backwards":
                if await self._is_copy(raw, message):
                    await self._skip(raw)
                    i += 1
                    continue
                await self._halt_on(raw, message, [m for m, _ in parsed[i + 1 :]])
                continue  # decided again now that the positions were mended
            run = [(raw, message)]
            ahead = self.positions.copy()
            ahead.advance(message)
            while i + len(run) < len(parsed):
                follower_raw, follower = parsed[i + len(run)]
                if (isinstance(follower, MalformedMessageError)
                        or ahead.verdict(follower, first_delivery=_first_delivery(follower_raw)) != "new"):
                    break
                ahead.advance(follower)
                run.append((follower_raw, follower))
            i += len(run)
            await self._process_run(run, waiting=[m for m, _ in parsed[i:]])

    def _parse(self, raw: Msg) -> Inbound | Watermark | Foreign | MalformedMessageError:
        if not self.mine(raw.subject):
            return Foreign(raw.metadata.sequence.stream)
        try:
            return parse_inbound(raw.subject, raw.headers, raw.data, raw.metadata.sequence.stream)
        except MalformedMessageError as e:
            return e

    async def _skip(self, raw: Msg) -> None:
        """Acknowledges a message decided before. Every acknowledged message is within the
        recorded stream position (the start-up check of a restored store relies on it), so a
        copy beyond it moves the position first."""
        sequence = raw.metadata.sequence.stream
        if sequence > self.positions.stream:
            await asyncio.to_thread(self.app.record, [], [Tracking(self._tracking_name, sequence)])
            self.positions.stream = sequence
        self.stats.skipped += 1
        self.figures.outcome("duplicate")
        await raw.ack()

    def _trackings(self, messages: Sequence[Inbound | Watermark | Foreign]) -> list[Tracking]:
        """The tracking records after ``messages``: the stream position, and each source's,
        where they move forward (a message decided out of order moves neither back)."""
        sources: dict[str, int] = {}
        for message in messages:
            if isinstance(message, Inbound):
                sources[message.source] = max(sources.get(message.source, 0), message.sequence)
        stream = max(m.stream_sequence for m in messages)
        trackings = [Tracking(self._tracking_name, stream)] if stream > self.positions.stream else []
        return trackings + [Tracking(f"{s}{self._source_suffix}", p) for s, p in sources.items()
                            if p > self.positions.sources.get(s, 0)]

    async def _process_run(self, run: Sequence[tuple[Msg, Inbound | Watermark | Foreign]], *, waiting: Sequence[Msg]) -> None:
        """The fast path: the whole run in one transaction. A message whose decision fails
        is set apart: the messages before it are recorded as a run, it is decided on its own
        (retries, dead letter), and those after it go on as a run. Any other failure records
        nothing, and the run is worked through message by message."""
        messages = [message for _, message in run]
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._record, messages)
        except DecisionFailedError as e:
            later = [m for m, _ in run[e.index + 1 :]]
            if e.index:
                await self._process_run(run[: e.index], waiting=[run[e.index][0], *later, *waiting])
            self.stats.isolated += 1
            await self._process_one(*run[e.index], waiting=[*later, *waiting])
            if later:
                await self._process_run(run[e.index + 1 :], waiting=waiting)
            return
        except Exception as e:  # noqa: BLE001 - nothing was recorded; the careful path decides
            log.info("%s: a run of %d messages failed together (%s); one by one now", self.service, len(run), describe(e))
            self.stats.isolated += len(run)
            for k, (raw, message) in enumerate(run):
                await self._process_one(raw, message, waiting=[*(m for m, _ in run[k + 1 :]), *waiting])
            return
        self._recorded(messages, time.perf_counter() - started)
        self.stats.runs += 1
        for raw, _ in run:
            await raw.ack()

    def _record(self, messages: Sequence[Inbound | Watermark | Foreign]) -> None:
        spans = tracing.decisions(self.service, self.app.name)  # None while tracing is off
        self.app.record_run(spans.wrap(self.handle) if spans else self.handle, messages, self._trackings(messages))
        if spans:
            spans.recorded()
        self.on_recorded()

    def _recorded(self, messages: Sequence[Inbound | Watermark | Foreign], seconds: float) -> None:
        decided = 0
        for message in messages:
            self.positions.advance(message)
            if isinstance(message, Watermark):
                self.app.note_watermark(message)
            elif isinstance(message, Foreign):
                self.stats.skipped += 1
            else:
                self.stats.processed += 1
                decided += 1
        self.figures.processed(decided, seconds)

    async def _process_one(self, raw: Msg, message: Inbound | Watermark | Foreign, *, waiting: Sequence[Msg] = ()) -> None:
        """The careful path: one message, retried in place; dead-lettered after
        ``max_attempts`` failures of its own, never for a failure of the infrastructure."""
        verdict = self.positions.verdict(message, first_delivery=_first_delivery(raw))
        if verdict == "decided":
            await self._skip(raw)
            return
        if verdict == "backwards":
            if await self._is_copy(raw, message):
                await self._skip(raw)
                return
            await self._halt_on(raw, message, waiting)
            await self._process_one(raw, message, waiting=waiting)
            return
        backoff = Backoff(initial=0.2, cap=self.retry_cap)
        waiting_for_store = Backoff(initial=0.2, cap=5.0)
        failures = 0
        started = time.perf_counter()
        while True:
            try:
                try:
                    await asyncio.to_thread(self._record, [message])
                except DecisionFailedError as failed:
                    raise unwrap(failed) from None
            except IntegrityError as e:
                self.positions = await asyncio.to_thread(self._load_positions)
                if self.positions.verdict(message) == "decided":
                    await self._skip(raw)  # recorded meanwhile (a redrive, an operator's skip)
                    return
                # An aggregate moved on under us (e.g. a timer fired): not a failure, decide again.
                log.info("%s: stream message %d met a concurrent change (%s); deciding again", self.service,
                         message.stream_sequence, describe(e))
                await asyncio.sleep(0.02)
            except Exception as e:  # noqa: BLE001 - retried; the message's own failures are dead-lettered
                if is_transient(e):
                    self.figures.outcome("retried")
                    self._stuck(message.stream_sequence, e)
                    await self._hold(raw, waiting)
                    await asyncio.sleep(waiting_for_store.next())
                    continue
                failures += 1
                log.warning("%s: %s (stream seq %d) failed (attempt %d): %s", self.service, _kind(message),
                            message.stream_sequence, failures, describe(e))
                if failures >= self.max_attempts:
                    await self._dead_letter(raw, message if isinstance(message, Inbound) else None, e, attempts=failures)
                    return
                self.figures.outcome("retried")
                await self._hold(raw, waiting)
                await asyncio.sleep(backoff.next())
            else:
                self._unstuck()
                self._recorded([message], time.perf_counter() - started)
                await raw.ack()
                return

    async def _hold(self, raw: Msg, waiting: Sequence[Msg]) -> None:
        """Keeps this message and those behind it from being redelivered meanwhile."""
        for held in (raw, *waiting):
            await held.in_progress()

    def _stuck(self, stream_sequence: int, error: BaseException) -> None:
        now = time.monotonic()
        if self.stats.stuck_since is None:
            self.stats.stuck_since = now
            log.warning("%s: the store or bus failed on stream message %d (%s); holding it and trying again",
                        self.service, stream_sequence, describe(error))
        elif now - self.stats.stuck_since > STUCK_ALARM_SECONDS and not self._stuck_alarmed:
            self._stuck_alarmed = True
            log.error("%s: STUCK for %.0f s on stream message %d: %s; nothing after it is decided until this passes",
                      self.service, now - self.stats.stuck_since, stream_sequence, describe(error))

    def _unstuck(self) -> None:
        if self.stats.stuck_since is not None:
            log.info("%s: the store and bus work again after %.1f s", self.service, time.monotonic() - self.stats.stuck_since)
            self.stats.stuck_since = None
            self._stuck_alarmed = False

    # ----------------------------------------------------------------- halting

    async def _is_copy(self, raw: Msg, message: Inbound | Watermark) -> bool:
        """Whether a message at a source position already decided is a copy of the message
        decided there (the same event published twice): then it is skipped, and not a
        source going backwards. Found on the stream, among the earlier messages of the same
        subject (an aggregate's events of one kind: few)."""
        if not isinstance(message, Inbound) or self._js is None:
            return False
        info = await self._js.stream_info(self.settings.stream_name)
        sequence = max(1, info.state.first_seq)
        while sequence < message.stream_sequence:
            try:
                earlier = await self._js.get_msg(self.settings.stream_name, seq=sequence, subject=raw.subject, next=True,
                                                 direct=True)
            except NotFoundError:
                return False
            if earlier.seq >= message.stream_sequence:
                return False
            headers = earlier.headers or {}
            if (headers.get("ce-sequence") == str(message.sequence) and headers.get("ce-id") == message.event_id
                    and (earlier.data or b"") == raw.data):
                log.warning("%s: stream message %d is a copy of %d (the same event published again); skipped",
                            self.service, message.stream_sequence, earlier.seq)
                return True
            sequence = earlier.seq + 1
        return False

    async def _halt_on(self, raw: Msg, message: Inbound | Watermark | Foreign, waiting: Sequence[Msg]) -> None:
        """A source went backwards: hold everything, alarm, and wait until the positions
        are mended (``careplan store recover``, ``careplan consumer skip``)."""
        assert isinstance(message, Inbound)
        known = self.positions.sources.get(message.source, 0)
        self._alarm_halt(
            f"{message.source} position {message.sequence} (stream sequence {message.stream_sequence}) is not after "
            f"its recorded position {known}: the {message.source} store was restored or reset, or the message is forged"
        )
        while True:
            await self._hold(raw, waiting)
            await asyncio.sleep(HALT_RECHECK_SECONDS)
            self.positions = await asyncio.to_thread(self._load_positions)
            if self.positions.verdict(message) != "backwards" or await self._is_copy(raw, message):
                self._resume_if_halted()
                return

    def _alarm_halt(self, problem: str) -> None:
        if self.stats.halted != problem:
            log.error("%s HALTED: %s. Nothing is decided until an operator mends it; see docs/operations.md "
                      "(positions)", self.service, problem)
        self.stats.halted = problem

    def _resume_if_halted(self) -> None:
        if self.stats.halted is not None:
            log.info("%s: positions mended; consuming again", self.service)
            self.stats.halted = None

    # ----------------------------------------------------------------- dead letters

    async def _dead_letter(self, raw: Msg, inbound: Inbound | None, error: BaseException, *, attempts: int) -> None:
        failed = FailedMessage.of(raw.subject, raw.metadata.sequence.stream, raw.headers, inbound)
        risk = self.app.is_risk_signal(raw.subject, inbound.body if inbound is not None else None)
        trackings = [Tracking(self._tracking_name, failed.stream_sequence)] if failed.stream_sequence > self.positions.stream else []
        if inbound is not None and inbound.sequence > self.positions.sources.get(inbound.source, 0):
            trackings.append(Tracking(f"{inbound.source}{self._source_suffix}", inbound.sequence))
        summary = describe(error)
        backoff = Backoff(initial=0.2, cap=5.0)
        while True:
            try:
                await asyncio.to_thread(self.app.record_dead_letter, self.service, failed, summary, attempts, risk, trackings)
                break
            except Exception as e:  # noqa: BLE001 - a dead letter names only ids: only the store can fail it
                self._stuck(failed.stream_sequence, e)
                await raw.in_progress()
                await asyncio.sleep(backoff.next())
        self._unstuck()
        self.on_recorded()
        self.positions.stream = max(self.positions.stream, failed.stream_sequence)
        if inbound is not None:
            self.positions.advance(inbound)
        self.stats.dead_lettered += 1
        self.figures.dead_lettered()
        log.error("%s: %s (stream seq %d, event %s) dead-lettered after %d attempt(s): %s%s", self.service,
                  failed.event_type, failed.stream_sequence, failed.event_id, attempts, summary,
                  "; it may carry a risk signal: a fail-safe escalation follows" if risk else "")
        await raw.ack()

    async def redrive_pending(self) -> int:
        """Decides again every dead letter an operator asked to redrive; returns how many."""
        requests = await asyncio.to_thread(self.app.redrive_requests, self._redrive_seen)
        done = 0
        for position, dead_id in requests:
            dead = await asyncio.to_thread(self.app.find, DeadLetter, dead_id)
            if (dead is not None and dead.status is DeadLetterStatus.REDRIVE_REQUESTED and dead.service == self.service
                    and self.mine(dead.subject)):
                inbound, error = await self._fetch(dead)
                await asyncio.to_thread(self.app.redrive, dead, inbound, self.handle, error)
                self.on_recorded()
                done += 1
                self.stats.redriven += 1
                log.info("%s: dead letter %s redriven", self.service, dead.id)
            self._redrive_seen = position
        return done

    async def _fetch(self, dead: DeadLetter) -> tuple[Inbound | None, BaseException | None]:
        try:
            raw = await self._js.get_msg(self.settings.stream_name, seq=dead.stream_sequence, direct=True)
        except NotFoundError as e:
            return None, e
        try:
            found = parse_inbound(raw.subject, raw.headers, raw.data or b"", int(raw.seq))
        except MalformedMessageError as e:
            return None, e
        if not isinstance(found, Inbound):
            return None, MalformedMessageError("not an event")
        return found, None

    async def wait_for_previous_instance(self, js: Any) -> float:
        """A new instance lets the messages a dead one left unacknowledged come back first."""
        try:
            info = await js.consumer_info(self.settings.stream_name, self.durable)
        except Exception:  # noqa: BLE001 - no durable yet: nothing can be pending
            return 0.0
        if not info.num_ack_pending:
            return 0.0
        # JetStream hands out redeliveries before new messages once their ack_wait has run out:
        # waiting until then keeps the stream's order. Counted from now, not from the last
        # delivery: the previous instance kept its last batch alive with in-progress acks until
        # it stopped (before now), and a redelivery overtaken by later messages would lie behind
        # the recorded stream position and be taken for decided.
        delay = ACK_WAIT_SECONDS + 1.0
        log.info("%s: %d messages of a previous instance await redelivery; starting in %.1f s",
                 self.service, info.num_ack_pending, delay)
        await asyncio.sleep(delay)
        return delay


def _stream_sequence(raw: Msg) -> int:
    return int(raw.metadata.sequence.stream)


def _delivery(raw: Msg) -> int:
    """The consumer sequence of a delivery (each delivery, a redelivery too, has the next)."""
    return int(raw.metadata.sequence.consumer)


def _first_delivery(raw: Msg) -> bool:
    delivered = getattr(raw.metadata, "num_delivered", None)
    return delivered == 1


def _kind(message: Inbound | Watermark | Foreign) -> str:
    return message.event_name if isinstance(message, Inbound) else type(message).__name__.lower()


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
