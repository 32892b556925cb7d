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
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import ApplicationRecorder, Mapper, Notification, Tracking, TrackingRecorder
from nats.js.api import PubAck
from pydantic import BaseModel

from contracts.generate import SCHEMA_BASE_URI, schema_path
from contracts.subjects import ce_source, ce_type, subject_for
from services.shared.bus import connect, ensure_stream
from services.shared.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutboundMessage:
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


def cloudevent(application: str, context: str, notification: Notification, event: BaseModel, previous: int) -> OutboundMessage:
    """The wire form of one stored event: CloudEvents binary mode in NATS headers."""
    cls: Any = type(event)
    headers = {
        "ce-specversion": "1.0",
        "ce-id": str(event.event_id),  # type: ignore[attr-defined]
        "ce-source": ce_source(application),
        "ce-type": ce_type(cls, context),
        "ce-time": event.timestamp.isoformat(),  # type: ignore[attr-defined]
        "ce-subject": str(event.originator_id),  # type: ignore[attr-defined]
        "ce-sequence": str(notification.id),
        # The log may skip ids (a rolled-back insert); naming the previous one makes a real gap detectable.
        "ce-previoussequence": str(previous),
        "ce-dataschema": f"{SCHEMA_BASE_URI}/{schema_path(cls)}",
        "content-type": "application/json",
        "Nats-Msg-Id": f"{application}:{notification.id}",
    }
    traceparent = getattr(event, "traceparent", None)
    if traceparent:
        headers["traceparent"] = traceparent
    return OutboundMessage(
        notification_id=notification.id,
        subject=subject_for(cls, event.originator_id, context),  # type: ignore[attr-defined]
        headers=headers,
        body=event.model_dump_json().encode(),
    )


class Relay:
    def __init__(
        self,
        settings: Settings,
        *,
        application: str,
        context: str,
        nats_url: str,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        tracking: TrackingRecorder,
    ) -> None:
        self.settings = settings
        self.application = application
        self.context = context
        self.nats_url = nats_url
        self.recorder = recorder
        self.mapper = mapper
        self.tracking = tracking
        self.stats = RelayStats()
        self._wakeup = asyncio.Event()
        self._listener: threading.Thread | None = None

    # ----------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event) -> None:
        """Relays until ``stop`` is set; survives NATS being down for any length of time."""
        self._start_listening(stop)
        backoff = Backoff(cap=5.0)
        while not stop.is_set():
            try:
                nc = await connect(self.nats_url, name=f"relay-{self.application}", reconnect=False)
            except Exception as e:  # noqa: BLE001 - any failure to connect means: wait and retry
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
        inflight: deque[tuple[int, asyncio.Future[PubAck]]] = deque()
        next_start, previous = acked + 1, acked
        try:
            while not stop.is_set():
                if not nc.is_connected:
                    # Noticed even when idle, so the state (and a later resume) is accurate.
                    msg = "connection to NATS lost"
                    raise PublishFailedError(msg)
                notifications = await asyncio.to_thread(
                    self.recorder.select_notifications, start=next_start, limit=self.settings.relay_batch
                )
                if notifications:
                    for notification in notifications:
                        message = cloudevent(
                            self.application, self.context, notification, self.mapper.to_domain_event(notification), previous
                        )
                        while len(inflight) >= self.settings.relay_window:
                            acked = await self._await_oldest(inflight)
                        future = await js.publish_async(message.subject, message.body, headers=message.headers)
                        inflight.append((notification.id, future))
                        previous = notification.id
                    next_start = previous + 1
                    while inflight and inflight[0][1].done():
                        acked = await self._await_oldest(inflight)
                else:
                    while inflight:
                        acked = await self._await_oldest(inflight)
                if acked > recorded and (not inflight or acked - recorded >= self.settings.relay_batch):
                    await self._record(acked)
                    recorded = acked
                if not notifications:
                    await self._idle(stop)
            while inflight:
                acked = await self._await_oldest(inflight)
        finally:
            for _, future in inflight:
                future.cancel()
            if acked > recorded:
                await self._record(acked)

    async def _await_oldest(self, inflight: deque[tuple[int, asyncio.Future[PubAck]]]) -> int:
        notification_id, future = inflight[0]
        try:
            ack = await asyncio.wait_for(asyncio.shield(future), timeout=self.settings.relay_ack_timeout)
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
        self._wakeup.clear()
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


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
