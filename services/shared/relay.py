"""The relay: an application's notification log → NATS JetStream (transactional outbox).

Commands only write to the event store. The relay follows the notification log in
commit order from its last recorded position, publishes each event as a CloudEvent with
``Nats-Msg-Id = <application>:<notification id>`` (so the stream de-duplicates a replay),
keeps a bounded window of publishes in flight, and records its position only up to the
highest notification whose PubAck, and every one before it, has arrived.

While NATS is unreachable it retries with capped backoff and logs once per change of
state; the store is the buffer. It uses its own connection without automatic reconnect
or a reconnect buffer: after a failure it reconnects and resumes from the first
unacknowledged notification, so a retried message never overtakes one lost in transit.

It never publishes from a store that disagrees with what was published from it before (a
store restored from a backup, or reset): on connecting, and now and then while idle, it
compares its position, the store's log and the last event of its source on the stream;
on a disagreement it halts with an alarm instead of publishing events under positions
that consumers have already seen (docs/operations.md says how to recover). Events the
stream already holds beyond the recorded position (a crash between PubAck and recording)
are found and counted as published, so nothing is published twice whatever the
de-duplication window.

When caught up it publishes a watermark (``care.watermark.<application>``): "everything this
application committed before ``at`` is on the stream ahead of this message". Services take
time-based decisions only behind a watermark.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, Notification, PersistenceError, Tracking, TrackingRecorder
from nats.js.api import PubAck
from nats.js.errors import NotFoundError

from contracts.subjects import chain_subject, context_of_application, watermark_subject
from services.shared import metrics, tracing
from services.shared.alarms import RELAY_NOT_PUBLISHING, STREAM_DRIFT, Alarm
from services.shared.bus import StreamDriftError, check_streams, connect, wait_for_streams
from services.shared.chained import LogRow
from services.shared.clock import Clock, system_clock
from services.shared.cloudevents import OutboundMessage, cloudevent_of
from services.shared.diagnostics import describe
from services.shared.persistence import PydanticMapper
from services.shared.settings import Settings

log = logging.getLogger(__name__)

#: The longest walk over the stream when reconciling the recorded position with it.
MAX_RECONCILE = 100_000
#: How often a relay measures its lag (store's end minus acknowledged position), NATS up or down.
MEASURE_SECONDS = 1.0


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    position: int = 0
    state: str = "starting"
    reconnects: int = 0
    failed_connects: int = 0
    #: Why the relay halted (a restored or reset store), or None while it may publish.
    halted: str | None = None
    #: Events found on the stream beyond the recorded position and counted as published.
    reconciled: int = 0
    watermark_at: datetime | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class Backoff:
    """Capped exponential backoff: 0.1 s, 0.2 s, ... up to ``cap``."""

    def __init__(self, initial: float = 0.1, cap: float = 5.0) -> None:
        self.initial, self.cap, self.current = initial, cap, initial

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class PublishFailedError(Exception):
    """A publish was not acknowledged; the relay resumes from the first unacked one."""


class StoreInconsistentError(Exception):
    """The store disagrees with what was published from it: the relay halts. The message
    names positions only."""


class UnreadableEventError(Exception):
    """A stored event could not be read (a wrong cipher key, a class that no longer loads):
    an error in the events themselves, not in NATS."""


class _Sent(NamedTuple):
    notification_id: int
    future: asyncio.Future[PubAck]
    sent: float
    event_id: str
    body: bytes


@dataclass(frozen=True)
class OnStream:
    """A message of one source as the stream holds it."""

    position: int
    stream_sequence: int
    event_id: str
    body: bytes
    subject: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class SourceOnStream:
    """The messages one application published, read back from the stream by direct gets:
    its last, and those after a position (found by bisecting the stream sequences, since a
    source's positions grow with them)."""

    def __init__(self, js: Any, stream: str, application: str) -> None:
        self.js, self.stream = js, stream
        self.filter = f"care.{context_of_application(application)}.>"

    async def last(self) -> OnStream | None:
        try:
            return self.read(await self.js.get_last_msg(self.stream, self.filter, direct=True))
        except NotFoundError:
            return None

    async def next_from(self, sequence: int) -> OnStream | None:
        """The source's first message at or after stream sequence ``sequence``."""
        try:
            return self.read(await self.js.get_msg(self.stream, seq=sequence, subject=self.filter, next=True, direct=True))
        except NotFoundError:
            return None

    async def after(self, position: int, until: OnStream | None = None) -> AsyncIterator[OnStream]:
        """The source's messages at positions after ``position``, in stream order."""
        until = until or await self.last()
        if until is None or until.position <= position:
            return
        info = await self.js.stream_info(self.stream)
        low, high = max(1, info.state.first_seq), until.stream_sequence
        while low < high:
            middle = (low + high) // 2
            probe = await self.next_from(middle)
            if probe is not None and probe.position > position:
                high = middle
            else:
                low = middle + 1
        message = await self.next_from(low)
        while message is not None and message.stream_sequence <= until.stream_sequence:
            if message.position > position:
                yield message
            message = await self.next_from(message.stream_sequence + 1)

    @staticmethod
    def read(raw: Any) -> OnStream:
        headers = dict(raw.headers or {})
        try:
            return OnStream(int(headers["ce-sequence"]), int(raw.seq), headers["ce-id"], bytes(raw.data or b""),
                            raw.subject or "", headers)
        except (KeyError, ValueError) as e:
            msg = f"stream message {raw.seq} on this store's subjects is not one of its events"
            raise StoreInconsistentError(msg) from e


def _digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


class Relay:
    def __init__(
        self,
        settings: Settings,
        *,
        application: str,
        nats_url: str,
        recorder: ApplicationRecorder,
        mapper: PydanticMapper,
        tracking: TrackingRecorder,
        woken_by_writer: bool = False,
        clock: Clock | None = None,
    ) -> None:
        """``woken_by_writer``: the application's writer runs in this process and calls
        :meth:`wake` after each commit, so the log need only be checked now and then for
        other writers (an operator's command); otherwise it is checked every millisecond.
        ``clock`` dates the watermarks (the services' clock, in virtual-time tests)."""
        self.settings = settings
        self.application = application
        self.nats_url = nats_url
        self.recorder = recorder
        self.mapper = mapper
        self.tracking = tracking
        self.clock = clock or system_clock
        self.stats = RelayStats()
        self._source: SourceOnStream | None = None
        self._wakeup = asyncio.Event()
        self._listener: threading.Thread | None = None
        self._changes = SQLiteChangeWatch.of(recorder, every=0.05 if woken_by_writer else 0.001)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_head = 0.0
        self._published_head = 0
        #: Positions beyond the recorded one that the stream already holds (found on connecting).
        self._on_stream: set[int] = set()
        #: The last position acknowledged, its event id and body digest (checked against the store while idle).
        self._last_acked: _Sent | None = None
        self._selected_at = self.clock()
        self._next_check = 0.0
        self._watermark_sent = float("-inf")
        self._watermark_position = -1
        self.figures = metrics.RelayFigures(application)
        #: The highest position the stream acknowledged (in memory; recorded in batches).
        self._acked_position = 0
        #: Acknowledged since the figures were last told (they are told once per batch read).
        self._uncounted = 0
        #: When (monotonic) the chain head was last published, or found already published.
        self._head_at: float | None = None
        component = f"relay:{application}"
        #: Unpublished events and no progress for ``alarm_relay_seconds``; the live streams
        #: no longer as configured (checked every ``alarm_stream_check_seconds``).
        self.not_publishing = Alarm(RELAY_NOT_PUBLISHING, component)
        self.drift = Alarm(STREAM_DRIFT, component)

    def wake(self) -> None:
        """Called (from any thread) by a writer in this process right after it committed:
        the relay reads the log at once instead of at its next check."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # ----------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event) -> None:
        """Relays until ``stop`` is set; survives NATS being down for any length of time.
        Waits (stoppably) for the streams to exist, and raises :class:`StreamDriftError`
        when their configuration is not this process's: it never changes them."""
        self._loop = asyncio.get_running_loop()
        self._start_listening(stop)
        measuring = asyncio.ensure_future(self._measure(stop))
        backoff = Backoff(cap=5.0)
        # Ended (and awaited, so no read of the store is under way) before the stores close.
        ended = asyncio.Event()
        alarms = asyncio.ensure_future(self._watch(ended))
        try:
            while not stop.is_set():
                try:
                    nc = await connect(self.nats_url, name=f"relay-{self.application}", reconnect=False)
                except Exception as e:  # noqa: BLE001 - any failure to connect means: wait and retry
                    self.stats.failed_connects += 1
                    self.figures.error("nats")
                    self._set_state("waiting for NATS", e)
                    await _sleep_or_stop(stop, backoff.next())
                    continue
                try:
                    js = nc.jetstream(publish_async_max_pending=self.settings.relay_window + 1)
                    if not await wait_for_streams(js, self.settings, f"relay {self.application}", stop):
                        continue
                    if await self._until_consistent(nc, js, stop):
                        self._set_state("publishing")
                        backoff.reset()
                        await self._pump(nc, js, stop)
                except StreamDriftError as e:
                    self.figures.error("streams")
                    self._set_state("refused: the streams differ from their configuration", e)
                    raise
                except StoreInconsistentError as e:
                    self._halt(str(e))  # found while running: checked again on the next connection
                except UnreadableEventError as e:
                    self.figures.error("event")
                    self._set_state("failing: a stored event cannot be read", e.__cause__ or e)
                    await _sleep_or_stop(stop, backoff.next())
                except PersistenceError as e:  # the store, not the bus: said as such (alarm and readiness)
                    self._set_state("waiting for the store", e)
                    self.stats.reconnects += 1
                    await _sleep_or_stop(stop, backoff.next())
                except Exception as e:  # noqa: BLE001 - the bus failed mid-way: record progress, back off, resume
                    self.figures.error("nats")
                    self._set_state("waiting for NATS", e)
                    self.stats.reconnects += 1
                    await _sleep_or_stop(stop, backoff.next())
                finally:
                    try:
                        await asyncio.wait_for(nc.close(), timeout=2)
                    except Exception:  # noqa: BLE001 - closing a dead connection may fail; nothing to keep
                        pass
        finally:
            measuring.cancel()
            ended.set()
            try:
                await asyncio.wait_for(alarms, timeout=10)
            except Exception as e:  # noqa: BLE001 - the alarms' task never stops the relay
                log.debug("relay %s: alarm checks ended with %s", self.application, describe(e))
            self.not_publishing.retire()
            self.drift.retire()
            if self._changes is not None:
                self._changes.close()
        self._set_state("stopped")

    async def _measure(self, stop: asyncio.Event) -> None:
        """The lag (the store's end minus the position the stream acknowledged) and the chain
        head's age, every second whatever NATS does: a lag that grows while NATS is down is
        the point of measuring it."""
        while not stop.is_set():
            try:
                end = await asyncio.to_thread(self.recorder.max_notification_id) or 0
                recorded = await asyncio.to_thread(self.tracking.max_tracking_id, self.application) or 0
                head_age = time.monotonic() - self._head_at if self._head_at is not None else 0.0
                self.figures.measured(end - max(recorded, self._acked_position), head_age)
            except Exception as e:  # noqa: BLE001 - the store unreadable now: measured again next time
                log.debug("relay %s: lag not measured (%s)", self.application, describe(e))
            await _sleep_or_stop(stop, MEASURE_SECONDS)
    # ----------------------------------------------------------------- alarms

    def not_publishing_reason(self) -> str:
        """What keeps the relay from publishing, as its state says (a stored event that
        cannot be read is never "NATS unreachable")."""
        state = self.stats.state
        if state == "waiting for NATS":
            return "NATS unreachable"
        if state.startswith("failing"):
            return "an event in the store cannot be read (cipher key or event class)"
        if state == "halted":
            return "halted: the store disagrees with the stream"
        if state == "waiting for the store":
            return "the store cannot be reached"
        if state == "starting":
            return "waiting for the streams"
        if state == "publishing":
            return "publishing, but no acknowledgement recorded"
        return state.split(":")[0]

    async def _watch(self, stop: asyncio.Event) -> None:
        """The relay's alarms, beside its work: nothing here may stop the relay."""
        advanced_at, last, known_end = time.monotonic(), -1, 0
        next_drift_check = time.monotonic() + self.settings.alarm_stream_check_seconds
        while not stop.is_set():
            await _sleep_or_stop(stop, self.settings.alarm_check_seconds)
            try:
                store_end = await asyncio.to_thread(self.recorder.max_notification_id) or 0
                recorded = await asyncio.to_thread(self.tracking.max_tracking_id, self.application) or 0
            except Exception as e:  # noqa: BLE001 - the store unreadable: the relay cannot publish either
                log.debug("relay %s: progress not read (%s)", self.application, describe(e))
                recorded = max(last, 0)
                store_end = max(known_end, recorded + 1)  # judged as not advancing, with the relay's own reason
            known_end, now = store_end, time.monotonic()
            if store_end <= recorded or recorded != last:  # nothing to publish, or it moved on
                advanced_at, last = now, recorded
                self.not_publishing.clear()
            elif now - advanced_at >= self.settings.alarm_relay_seconds:
                self.not_publishing.raise_(self.not_publishing_reason())
            if time.monotonic() >= next_drift_check:
                next_drift_check = time.monotonic() + self.settings.alarm_stream_check_seconds
                await self._check_drift()

    async def _check_drift(self) -> None:
        """The live streams against this process's configuration (as at start): drift or a
        missing stream raises ``stream_drift``; NATS away leaves it as it was."""
        try:
            nc = await connect(self.nats_url, name=f"relay-{self.application}-streams", reconnect=False)
        except Exception:  # noqa: BLE001 - NATS away: the other alarm's business
            return
        try:
            missing, drift = await asyncio.wait_for(check_streams(nc.jetstream(), self.settings), timeout=5)
        except Exception as e:  # noqa: BLE001 - not answered: checked again next time
            log.debug("relay %s: streams not checked (%s)", self.application, describe(e))
            return
        finally:
            with contextlib.suppress(Exception):  # nothing to keep from a dead connection
                await asyncio.wait_for(nc.close(), timeout=2)
        if missing:
            self.drift.raise_(f"stream(s) {', '.join(missing)} missing")
        elif drift:
            fields = sorted({f"{d.stream} {d.field}" for d in drift})
            self.drift.raise_(f"the streams differ from their configuration: {', '.join(fields)}")
        else:
            self.drift.clear()

    # ----------------------------------------------------------------- consistency

    async def _until_consistent(self, nc: Any, js: Any, stop: asyncio.Event) -> bool:
        """Checks the store against the relay's position and the stream; while they
        disagree, stays halted (checking again now and then, as an operator's recovery may
        mend it). Returns False when stopped while halted."""
        while not stop.is_set():
            problem = await self._inconsistency(js)
            if problem is None:
                if self.stats.halted is not None:
                    log.info("relay %s: the store agrees with the stream again; resuming", self.application)
                    self.stats.halted = None
                return True
            self._halt(problem)
            await _sleep_or_stop(stop, self.settings.relay_check_interval)
            if not nc.is_connected:
                msg = "connection to NATS lost"
                raise PublishFailedError(msg)
        return False

    def _halt(self, problem: str) -> None:
        self.figures.error("halt")
        if self.stats.halted != problem:
            log.error("relay %s HALTED: %s. Nothing more is published from this store until it agrees with "
                      "what was published; see docs/operations.md (restored store)", self.application, problem)
        self.stats.halted = problem
        self._set_state("halted")

    async def _inconsistency(self, js: Any) -> str | None:
        """What is wrong between the store, the relay's recorded position and the stream
        (None: nothing). Also finds the events the stream holds beyond the position."""
        self._source = SourceOnStream(js, self.settings.stream_name, self.application)
        position = await asyncio.to_thread(self.tracking.max_tracking_id, self.application) or 0
        store_end = await asyncio.to_thread(self.recorder.max_notification_id) or 0
        if position > store_end:
            return (f"the store's log ends at position {store_end}, before the relay's recorded position {position}: "
                    "the store was restored or reset")
        last = await self._source.last()
        if last is None:
            return None
        if last.position > store_end:
            return (f"the stream holds events of this store up to position {last.position}, but the store's log ends "
                    f"at {store_end}: the store was restored or reset")
        if await asyncio.to_thread(self._differs, last):
            return f"position {last.position} holds another event in the store than on the stream"
        if last.position > position:
            found = set()
            async for message in self._source.after(position, last):
                if await asyncio.to_thread(self._differs, message):
                    return f"position {message.position} holds another event in the store than on the stream"
                found.add(message.position)
                if len(found) > MAX_RECONCILE:
                    break
            self._on_stream = found
            self.stats.reconciled += len(found)
            log.info("relay %s: %d events after position %d are on the stream already; not publishing them again",
                     self.application, len(found), position)
        return None

    def _differs(self, on_stream: OnStream) -> bool:
        found = self.recorder.select_notifications(start=on_stream.position, limit=1)
        if not found or found[0].id != on_stream.position:
            return True
        event = self._public(found[0])
        if event.event_class.erased:  # erased since it was published (issue 16): its id is what is left to compare
            return event.event_id != on_stream.event_id
        return event.event_id != on_stream.event_id or event.body != on_stream.body

    def _public(self, notification: Notification) -> Any:
        try:
            return self.mapper.to_public_json(notification)
        except Exception as e:
            raise UnreadableEventError(f"position {notification.id}") from e

    async def _check_while_running(self, recorded: int) -> None:
        """Now and then while idle: the store still holds what was last published."""
        if time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + self.settings.relay_check_interval
        store_end = await asyncio.to_thread(self.recorder.max_notification_id) or 0
        if recorded > store_end:
            msg = f"the store's log ends at position {store_end}, before the relay's recorded position {recorded}"
            raise StoreInconsistentError(msg)
        if self._last_acked is not None:
            last = self._last_acked
            position, event_id, digest = last.notification_id, last.event_id, _digest(last.body)
            if not await asyncio.to_thread(self._holds, position, event_id, digest):
                msg = f"position {position}, published before, now holds another event in the store"
                raise StoreInconsistentError(msg)

    def _holds(self, position: int, event_id: str, digest: bytes) -> bool:
        found = self.recorder.select_notifications(start=position, limit=1)
        if not found or found[0].id != position:
            return False
        event = self._public(found[0])
        # an event erased since (issue 16) keeps its id, not its body
        return event.event_id == event_id and (event.event_class.erased or _digest(event.body) == digest)

    # ----------------------------------------------------------------- publishing

    async def _pump(self, nc: Any, js: Any, stop: asyncio.Event) -> None:
        acked = await asyncio.to_thread(self.tracking.max_tracking_id, self.application) or 0
        recorded = acked
        self.stats.position = acked
        inflight: deque[_Sent] = deque()
        watchdog = asyncio.ensure_future(self._fail_overdue_acks(inflight))
        previous = acked
        prefetch: asyncio.Future[list[LogRow]] | None = None
        #: The position being recorded while the next events are published (one at a time, in order).
        recording: asyncio.Future[None] | None = None
        try:
            while not stop.is_set():
                if not nc.is_connected:
                    # Noticed even when idle, so the state (and a later resume) is accurate.
                    msg = "connection to NATS lost"
                    raise PublishFailedError(msg)
                rows = await (prefetch or self._select(previous + 1))
                read_at = self._selected_at
                prefetch = None
                if rows:
                    # Read the next batch while this one is published.
                    prefetch = self._select(rows[-1][0] + 1)
                    for row in rows:
                        message = self._message(row, previous)
                        while len(inflight) >= self.settings.relay_window:
                            acked = await self._await_oldest(js, inflight)
                        inflight.append(await self._send(js, message))
                        previous = row[0]
                    while inflight and inflight[0].future.done():
                        acked = await self._await_oldest(js, inflight)
                else:
                    while inflight:
                        acked = await self._await_oldest(js, inflight)
                self._count_published()
                if acked > recorded and (not inflight or acked - recorded >= self.settings.relay_batch):
                    # Recorded beside the publishing of what follows, not before it: the same
                    # positions, as often; the previous record is done (or failed, raised here) first.
                    if recording is not None:
                        await recording
                    recording = asyncio.ensure_future(self._record(acked))
                    recorded = acked
                if not rows:
                    if recording is not None:  # the watermark and the checks below speak of a recorded position
                        await recording
                        recording = None
                    await self._publish_watermark(js, recorded, read_at)
                    await self._publish_chain_head(js)
                    await self._check_while_running(recorded)
                    await self._idle(stop)
            while inflight:
                acked = await self._await_oldest(js, inflight)
        finally:
            watchdog.cancel()
            self._count_published()
            if prefetch is not None:
                prefetch.cancel()
            for sent in inflight:
                sent.future.cancel()
            if recording is not None:
                try:
                    await recording
                except Exception:  # noqa: BLE001 - not recorded: the record below tries again
                    recorded = self.stats.position
            if acked > recorded:
                await self._record(acked)

    def _message(self, row: LogRow, previous: int) -> OutboundMessage:
        position, aggregate_id, version, topic, state = row
        try:
            event = self.mapper.public_json(aggregate_id, version, topic, state)
        except Exception as e:
            raise UnreadableEventError(f"position {position}") from e
        if event is None:  # an event of an older class version, or erased: the mapper's full path
            event = self._public(Notification(id=position, originator_id=UUID(aggregate_id), originator_version=version,
                                              topic=topic, state=state))
        try:
            return cloudevent_of(self.application, position, aggregate_id, event, previous)
        except Exception as e:
            # An event of a class or shape the wire form does not know: the event, not NATS.
            raise UnreadableEventError(f"position {position}") from e

    async def _send(self, js: Any, message: OutboundMessage) -> _Sent:
        event_id = message.headers["ce-id"]
        span = tracing.publish_span(self.application, message)  # None while tracing is off
        if message.notification_id in self._on_stream:
            # On the stream already (found when connecting): counted as published, not sent again.
            self._on_stream.discard(message.notification_id)
            future: asyncio.Future[PubAck] = asyncio.get_running_loop().create_future()
            future.set_result(PubAck(stream=self.settings.stream_name, seq=0, duplicate=True))
        else:
            future = await js.publish_async(message.subject, message.body, headers=message.headers)
        if span is not None:
            tracing.end_on_ack(span, future)
        return _Sent(message.notification_id, future, time.monotonic(), event_id, message.body)

    async def _publish_watermark(self, js: Any, recorded: int, read_at: datetime) -> None:
        """Caught up (nothing unread at ``read_at``, everything acknowledged and recorded):
        say so on the stream, at most every ``relay_watermark_interval`` seconds after
        publishing something, else every ``relay_watermark_heartbeat`` seconds (so the
        watermark keeps moving on a quiet system, and the stream does not fill with them)."""
        now = time.monotonic()
        interval = (self.settings.relay_watermark_interval if recorded != self._watermark_position
                    else self.settings.relay_watermark_heartbeat)
        if now < self._watermark_sent + interval:
            return
        body = json.dumps({"source": self.application, "position": recorded, "at": read_at.isoformat()}).encode()
        await js.publish(watermark_subject(self.application), body)
        self._watermark_sent, self._watermark_position = now, recorded
        self.stats.watermark_at = read_at

    async def _publish_chain_head(self, js: Any) -> None:
        """Now and then, while idle, the store's hash-chain head goes on the stream
        (``audit.careplan.v1.chain.<application>``, stream CARE_AUDIT), so that a copy outside the database can
        anchor it: a chain rewritten afterwards no longer matches what was published."""
        head_of = getattr(self.recorder, "chain_head", None)
        if head_of is None or time.monotonic() < self._next_head:
            return
        self._next_head = time.monotonic() + self.settings.chain_head_interval
        head = await asyncio.to_thread(head_of)
        if head is not None and head[0] == self._published_head:
            self._head_at = time.monotonic()  # the stream holds the current head
        if head is None or head[0] == self._published_head:
            return
        position, link = head
        body = json.dumps({"store": self.application, "position": position, "link": link.hex(),
                           "at": datetime.now(UTC).isoformat()}).encode()
        await js.publish(chain_subject(self.application), body,
                         headers={"Nats-Msg-Id": f"chain:{self.application}:{position}"})
        self._published_head = position
        self._head_at = time.monotonic()

    def _select(self, start: int) -> asyncio.Future[list[LogRow]]:
        # Cleared just before reading, so a NOTIFY that arrives while this batch is being
        # published is kept, and the next idle wait returns at once. The time of the read
        # dates a watermark when it finds nothing new.
        self._wakeup.clear()
        self._selected_at = self.clock()
        return asyncio.ensure_future(asyncio.to_thread(self._read_log, start, self.settings.relay_batch))

    def _read_log(self, start: int, limit: int) -> list[LogRow]:
        """The log from ``start``: our recorders' lean read, or the library's (another recorder)."""
        select_log = getattr(self.recorder, "select_log", None)
        if select_log is not None:
            return select_log(start, limit)  # type: ignore[no-any-return]
        return [(n.id, str(n.originator_id), n.originator_version, n.topic, n.state)
                for n in self.recorder.select_notifications(start=start, limit=limit)]

    async def _fail_overdue_acks(self, inflight: deque[_Sent]) -> None:
        """One timer for the whole window, instead of one per publish: an ack overdue by
        more than ``relay_ack_timeout`` fails its future, and the pump resumes from it."""
        timeout = self.settings.relay_ack_timeout
        while True:
            await asyncio.sleep(min(0.5, timeout / 4))
            if inflight:
                oldest = inflight[0]
                if not oldest.future.done() and time.monotonic() - oldest.sent > timeout:
                    oldest.future.set_exception(TimeoutError(f"no PubAck within {timeout} s"))

    async def _await_oldest(self, js: Any, inflight: deque[_Sent]) -> int:
        oldest = inflight[0]
        try:
            ack = oldest.future.result() if oldest.future.done() else await oldest.future
        except Exception as e:
            msg = f"{self.application}:{oldest.notification_id} not acknowledged: {describe(e)}"
            raise PublishFailedError(msg) from e
        if ack.stream != self.settings.stream_name:
            msg = f"{self.application}:{oldest.notification_id} stored in stream {ack.stream}, not {self.settings.stream_name}"
            raise PublishFailedError(msg)
        if ack.duplicate and ack.seq:
            await self._check_duplicate(js, oldest, ack.seq)
        inflight.popleft()
        self._uncounted += 1
        self._acked_position = oldest.notification_id
        self.stats.duplicates += bool(ack.duplicate)
        self._last_acked = oldest
        return oldest.notification_id

    def _count_published(self) -> None:
        if self._uncounted:
            self.stats.published += self._uncounted
            self.figures.published(self._uncounted)
            self._uncounted = 0

    async def _check_duplicate(self, js: Any, sent: _Sent, stream_sequence: int) -> None:
        """The stream said it holds this message already: it must be this very event, not
        another one published under the same position from an earlier life of the store."""
        held = SourceOnStream.read(await js.get_msg(self.settings.stream_name, seq=stream_sequence, direct=True))
        if held.event_id != sent.event_id or held.body != sent.body:
            msg = (f"position {sent.notification_id} was published before as another event "
                   f"(stream sequence {stream_sequence}): the store was restored or reset")
            raise StoreInconsistentError(msg)

    async def _record(self, notification_id: int) -> None:
        await asyncio.to_thread(self.tracking.insert_tracking, Tracking(self.application, notification_id))
        self.stats.position = notification_id
        self.stats.changed.set()

    async def _idle(self, stop: asyncio.Event) -> None:
        if self._changes is not None:
            await self._changes.wait(stop, self._wakeup, self.settings.relay_poll_interval)
            return
        waiters: list[Awaitable[Any]] = [self._wakeup.wait(), stop.wait()]
        tasks = [asyncio.ensure_future(w) for w in waiters]
        try:
            await asyncio.wait(tasks, timeout=self.settings.relay_poll_interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()

    def _set_state(self, state: str, error: BaseException | None = None) -> None:
        if state != self.stats.state:
            detail = f": {describe(error)}" if error else ""
            level = logging.WARNING if error else logging.INFO
            log.log(level, "relay %s %s (position %d)%s", self.application, state, self.stats.position, detail)
            self.stats.state = state
            self.stats.changed.set()

    # ----------------------------------------------------------------- PostgreSQL NOTIFY

    def _start_listening(self, stop: asyncio.Event) -> None:
        """On PostgreSQL, wake the relay on NOTIFY from the recorder; polling stays as a fallback."""
        channel = getattr(self.recorder, "channel_name", None)
        datastore = getattr(self.recorder, "datastore", None)
        if channel is None or datastore is None or not hasattr(datastore, "get_connection"):
            return
        loop = asyncio.get_running_loop()

        def listen() -> None:
            from psycopg.sql import SQL, Identifier

            while not stop.is_set():
                try:
                    with datastore.get_connection() as conn:
                        conn.execute(SQL("LISTEN {0}").format(Identifier(channel)))
                        conn.commit()
                        while not stop.is_set():
                            for _ in conn.notifies(timeout=0.5, stop_after=1):
                                loop.call_soon_threadsafe(self._wakeup.set)
                except Exception as e:  # noqa: BLE001 - polling continues; try to listen again
                    log.debug("relay %s: LISTEN failed (%s); polling only for now", self.application, describe(e))
                    time.sleep(1.0)

        self._listener = threading.Thread(target=listen, name=f"relay-{self.application}-listen", daemon=True)
        self._listener.start()


class SQLiteChangeWatch:
    """On SQLite, notices another connection's commit within a millisecond, cheaply.

    ``PRAGMA data_version`` changes whenever another connection (this process's writer or
    another process's) commits to the file; reading it touches no table. It stands in
    for PostgreSQL's NOTIFY, so an idle relay does not wait out a poll interval."""

    def __init__(self, db_name: str, every: float) -> None:
        import sqlite3

        self.every = every
        self._conn = sqlite3.connect(db_name, check_same_thread=False, isolation_level=None)
        self._seen = self._version()

    @classmethod
    def of(cls, recorder: Any, *, every: float) -> SQLiteChangeWatch | None:
        pool = getattr(getattr(recorder, "datastore", None), "pool", None)
        db_name = getattr(pool, "db_name", None)
        if not db_name or getattr(pool, "is_sqlite_memory_mode", True):
            return None
        return cls(db_name, every)

    def _version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def close(self) -> None:
        self._conn.close()

    async def wait(self, stop: asyncio.Event, wake: asyncio.Event, longest: float) -> None:
        """Returns when something was committed since the last return, when ``wake`` or
        ``stop`` is set, or after ``longest`` seconds (the fallback poll)."""
        deadline = time.monotonic() + longest
        woken = asyncio.ensure_future(wake.wait())
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                version = self._version()
                if version != self._seen:
                    self._seen = version
                    return
                done, _ = await asyncio.wait((woken,), timeout=self.every)
                if done:
                    return
        finally:
            woken.cancel()


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
