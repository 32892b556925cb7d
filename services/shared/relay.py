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
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

from eventsourcing.persistence import ApplicationRecorder, Notification, Tracking, TrackingRecorder
from nats.js.api import PubAck

from contracts.generate import SCHEMA_BASE_URI, schema_path
from contracts.subjects import CE_SOURCE_PREFIX, ce_type, chain_subject, subject_for
from services.shared.bus import connect, ensure_audit_stream, ensure_stream
from services.shared.persistence import PublicEvent, PydanticMapper
from services.shared.settings import Settings

log = logging.getLogger(__name__)


class OutboundMessage(NamedTuple):
    notification_id: int
    subject: str
    headers: dict[str, str]
    body: bytes


@dataclass
class RelayStats:
    published: int = 0
    duplicates: int = 0
    position: int = 0
    state: str = "starting"
    reconnects: int = 0
    failed_connects: int = 0
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


@dataclass(frozen=True)
class WireForm:
    """What every event of one class shares on the wire (computed once per class)."""

    subject_prefix: str
    subject_suffix: str
    ce_type: str
    dataschema: str


@lru_cache(maxsize=1024)
def wire_form(event_class: type[Any]) -> WireForm:
    prefix, suffix = subject_for(event_class, "\0").split("\0")
    return WireForm(prefix, suffix, ce_type(event_class), f"{SCHEMA_BASE_URI}/{schema_path(event_class)}")


def cloudevent(application: str, notification: Notification, event: PublicEvent, previous: int) -> OutboundMessage:
    """The wire form of one stored event: CloudEvents binary mode in NATS headers, the
    event's contract JSON as body."""
    form = wire_form(event.event_class)
    aggregate_id = str(notification.originator_id)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": event.event_id,
        "ce-source": f"{CE_SOURCE_PREFIX}:{application}",
        "ce-type": form.ce_type,
        "ce-time": event.timestamp,
        "ce-subject": aggregate_id,
        "ce-sequence": str(notification.id),
        # The log may skip ids (a rolled-back insert); naming the previous one makes a real gap detectable.
        "ce-previoussequence": str(previous),
        "ce-dataschema": form.dataschema,
        "traceparent": traceparent(event.correlation_id, event.event_id),
        "content-type": "application/json",
        "Nats-Msg-Id": f"{application}:{notification.id}",
    }
    return OutboundMessage(notification.id, f"{form.subject_prefix}{aggregate_id}{form.subject_suffix}", headers, event.body)


def traceparent(correlation_id: str, event_id: str) -> str:
    """W3C Trace Context for an event: the story (correlation id, 128 bits) is the trace,
    the event is a span (the first 64 bits of its id). Derived, so every copy of an event
    (a re-publish, a replay) carries the same one, and a tracing system groups a whole care
    story — command, services' decisions, policies — into one trace."""
    return f"00-{correlation_id.replace('-', '')}-{event_id.replace('-', '')[:16]}-01"


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
    ) -> None:
        """``woken_by_writer``: the application's writer runs in this process and calls
        :meth:`wake` after each commit, so the log need only be checked now and then for
        other writers (an operator's command); otherwise it is checked every millisecond."""
        self.settings = settings
        self.application = application
        self.nats_url = nats_url
        self.recorder = recorder
        self.mapper = mapper
        self.tracking = tracking
        self.stats = RelayStats()
        self._wakeup = asyncio.Event()
        self._listener: threading.Thread | None = None
        self._changes = SQLiteChangeWatch.of(recorder, every=0.05 if woken_by_writer else 0.001)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._next_head = 0.0
        self._published_head = 0
        self._audit_stream_ready = False

    def wake(self) -> None:
        """Called (from any thread) by a writer in this process right after it committed:
        the relay reads the log at once instead of at its next check."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wakeup.set)

    # ----------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event) -> None:
        """Relays until ``stop`` is set; survives NATS being down for any length of time."""
        self._loop = asyncio.get_running_loop()
        self._start_listening(stop)
        backoff = Backoff(cap=5.0)
        while not stop.is_set():
            try:
                nc = await connect(self.nats_url, name=f"relay-{self.application}", reconnect=False)
            except Exception as e:  # noqa: BLE001 - any failure to connect means: wait and retry
                self.stats.failed_connects += 1
                self._set_state("waiting for NATS", e)
                await _sleep_or_stop(stop, backoff.next())
                continue
            try:
                js = nc.jetstream(publish_async_max_pending=self.settings.relay_window + 1)
                await ensure_stream(js, self.settings)
                self._set_state("publishing")
                backoff.reset()
                await self._pump(nc, js, stop)
            except Exception as e:  # noqa: BLE001 - the bus failed mid-way: record progress, back off, resume
                self._set_state("waiting for NATS", e)
                self.stats.reconnects += 1
                await _sleep_or_stop(stop, backoff.next())
            finally:
                try:
                    await asyncio.wait_for(nc.close(), timeout=2)
                except Exception:  # noqa: BLE001 - closing a dead connection may fail; nothing to keep
                    pass
        self._set_state("stopped")

    async def _pump(self, nc: Any, js: Any, stop: asyncio.Event) -> None:
        acked = await asyncio.to_thread(self.tracking.max_tracking_id, self.application) or 0
        recorded = acked
        self.stats.position = acked
        inflight: deque[tuple[int, asyncio.Future[PubAck], float]] = deque()
        watchdog = asyncio.ensure_future(self._fail_overdue_acks(inflight))
        previous = acked
        prefetch: asyncio.Future[Sequence[Notification]] | None = None
        try:
            while not stop.is_set():
                if not nc.is_connected:
                    # Noticed even when idle, so the state (and a later resume) is accurate.
                    msg = "connection to NATS lost"
                    raise PublishFailedError(msg)
                notifications = await (prefetch or self._select(previous + 1))
                prefetch = None
                if notifications:
                    # Read the next batch while this one is published.
                    prefetch = self._select(notifications[-1].id + 1)
                    for notification in notifications:
                        message = cloudevent(self.application, notification, self.mapper.to_public_json(notification), previous)
                        while len(inflight) >= self.settings.relay_window:
                            acked = await self._await_oldest(inflight)
                        future = await js.publish_async(message.subject, message.body, headers=message.headers)
                        inflight.append((notification.id, future, time.monotonic()))
                        previous = notification.id
                    while inflight and inflight[0][1].done():
                        acked = await self._await_oldest(inflight)
                else:
                    while inflight:
                        acked = await self._await_oldest(inflight)
                if acked > recorded and (not inflight or acked - recorded >= self.settings.relay_batch):
                    await self._record(acked)
                    recorded = acked
                if not notifications:
                    await self._publish_chain_head(js)
                    await self._idle(stop)
            while inflight:
                acked = await self._await_oldest(inflight)
        finally:
            watchdog.cancel()
            if prefetch is not None:
                prefetch.cancel()
            for _, future, _ in inflight:
                future.cancel()
            if acked > recorded:
                await self._record(acked)

    async def _publish_chain_head(self, js: Any) -> None:
        """Now and then, while idle, the store's hash-chain head goes on the stream
        (``audit.careplan.v1.chain.<application>``, stream CARE_AUDIT), so that a copy outside the database can
        anchor it: a chain rewritten afterwards no longer matches what was published."""
        head_of = getattr(self.recorder, "chain_head", None)
        if head_of is None or time.monotonic() < self._next_head:
            return
        self._next_head = time.monotonic() + self.settings.chain_head_interval
        head = await asyncio.to_thread(head_of)
        if head is None or head[0] == self._published_head:
            return
        if not self._audit_stream_ready:
            await ensure_audit_stream(js, self.settings)
            self._audit_stream_ready = True
        position, link = head
        body = json.dumps({"store": self.application, "position": position, "link": link.hex(),
                           "at": datetime.now(UTC).isoformat()}).encode()
        await js.publish(chain_subject(self.application), body,
                         headers={"Nats-Msg-Id": f"chain:{self.application}:{position}"})
        self._published_head = position

    def _select(self, start: int) -> asyncio.Future[Sequence[Notification]]:
        # Cleared just before reading, so a NOTIFY that arrives while this batch is being
        # published is kept, and the next idle wait returns at once.
        self._wakeup.clear()
        return asyncio.ensure_future(
            asyncio.to_thread(self.recorder.select_notifications, start=start, limit=self.settings.relay_batch)
        )

    async def _fail_overdue_acks(self, inflight: deque[tuple[int, asyncio.Future[PubAck], float]]) -> None:
        """One timer for the whole window, instead of one per publish: an ack overdue by
        more than ``relay_ack_timeout`` fails its future, and the pump resumes from it."""
        timeout = self.settings.relay_ack_timeout
        while True:
            await asyncio.sleep(min(0.5, timeout / 4))
            if inflight:
                notification_id, future, sent = inflight[0]
                if not future.done() and time.monotonic() - sent > timeout:
                    future.set_exception(TimeoutError(f"no PubAck within {timeout} s"))

    async def _await_oldest(self, inflight: deque[tuple[int, asyncio.Future[PubAck], float]]) -> int:
        notification_id, future, _ = inflight[0]
        try:
            ack = future.result() if future.done() else await future
        except Exception as e:
            msg = f"{self.application}:{notification_id} not acknowledged: {type(e).__name__} {e}"
            raise PublishFailedError(msg) from e
        if ack.stream != self.settings.stream_name:
            msg = f"{self.application}:{notification_id} stored in stream {ack.stream}, not {self.settings.stream_name}"
            raise PublishFailedError(msg)
        inflight.popleft()
        self.stats.published += 1
        self.stats.duplicates += bool(ack.duplicate)
        return notification_id

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
            detail = f": {type(error).__name__}: {error}" if error else ""
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
                    log.debug("relay %s: LISTEN failed (%s); polling only for now", self.application, e)
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
