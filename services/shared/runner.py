"""Runs one service as a process: its durable consumer (FastStream) and its own relay."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from faststream.nats import NatsBroker

from services.shared import tracing
from services.shared.bus import StreamDriftError, connect, wait_for_streams
from services.shared.clock import Clock
from services.shared.consumer import DurableConsumer
from services.shared.diagnostics import describe
from services.shared.health import Status, StatusReporter, relay_status, service_status
from services.shared.lease import Lease, MixedInstancesError, partitioned_instances
from services.shared.persistence import OutboxStores
from services.shared.relay import Relay
from services.shared.settings import Settings

log = logging.getLogger(__name__)

#: How often a service looks for dead letters an operator asked to redrive.
REDRIVE_CHECK_SECONDS = 1.0


class RunningService:
    """A service's consumer and relay on one event loop; used by the process and by tests."""

    def __init__(
        self,
        settings: Settings,
        app: Any,
        subjects: list[str],
        *,
        name: str | None = None,
        with_relay: bool = True,
        tick: Callable[[], object] | None = None,
        tick_interval: float = 0.5,
        lease_ttl: float = 15.0,
        relay_clock: Clock | None = None,
        background: Callable[[asyncio.Event, asyncio.Event], Awaitable[None]] | None = None,
        **consumer_options: object,
    ) -> None:
        """``app`` is a ServiceApplication, or another Tracked application (the care
        application's policies); ``with_relay`` is off where another process relays the
        application's log (the care application's relay runs on its own). ``background``:
        work of the application's own that runs while this instance holds the lease (the
        subscriptions' deliveries), told of each commit by the app's ``wake_background``."""
        if not settings.nats_url:
            msg = "A service needs a NATS server: set CAREPLAN_NATS_URL (careplan up sets it for its children)."
            raise SystemExit(msg)
        self.settings = settings
        self.app = app
        self.nats_url = settings.nats_url
        # Per-message "Received/Processed" lines at DEBUG: thousands a second would drown the log.
        self.broker = NatsBroker(
            self.nats_url.split(","), logger=logging.getLogger(f"faststream.{app.name}"), log_level=logging.DEBUG
        )
        self.name = name or app.name
        self.stores = OutboxStores(settings, app.name) if with_relay else None
        self.relay = (
            Relay(
                settings, application=app.name, nats_url=self.nats_url,
                recorder=self.stores.recorder, mapper=self.stores.mapper, tracking=self.stores.tracking,
                woken_by_writer=True, clock=relay_clock,
            )
            if self.stores is not None
            else None
        )
        self.background = background
        self.consumer = DurableConsumer(
            settings, service=self.name, app=app, subjects=subjects, handle=app.decide,
            on_recorded=self._recorded,
            **consumer_options,  # type: ignore[arg-type]
        )
        self.consumer.attach(self.broker)
        self.tick = tick
        self.tick_interval = tick_interval
        self.lease_ttl = lease_ttl
        self.lease: Lease | None = None
        #: Set when this instance lost its lease to another: it has stopped consuming.
        self.lost = asyncio.Event()
        self._nc: Any = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        #: What the consumer is doing, for its status record: waiting for streams, waiting for
        #: the lease, halted at start, consuming, lease lost.
        self.phase = "starting"
        self._reporter: asyncio.Task[None] | None = None

    def _recorded(self) -> None:
        """After each commit of the consumer (in its worker thread)."""
        if self.relay is not None:
            self.relay.wake()
        wake = getattr(self.app, "wake_background", None)
        if wake is not None:
            wake()

    def statuses(self) -> list[Callable[[], Status]]:
        """The status records this process puts: its consumer's, and its relay's."""
        sources: list[Callable[[], Status]] = [lambda: service_status(f"service:{self.name}", self.phase, self.consumer.stats)]
        if self.relay is not None:
            relay = self.relay
            sources.append(lambda: relay_status(f"relay:{relay.application}", relay.stats))
        return sources

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        """Starts consuming once the streams exist and this instance holds the durable's
        lease; returns False when ``stop`` was set while waiting for either. Raises
        :class:`StreamDriftError` when a stream's configuration is not this process's: the
        service checks the streams, `careplan up` or `careplan nats streams apply` owns them."""
        if self._reporter is None:
            reporter = StatusReporter(self.nats_url, self.statuses(), replicas=self.settings.stream_replicas)
            self._reporter = asyncio.create_task(reporter.run(self._stop))
        self._nc = await connect(self.nats_url, name=f"{self.name}-control")
        js = self._nc.jetstream()
        self.phase = "waiting for streams"
        if not await wait_for_streams(js, self.settings, f"service {self.name}", stop, audit=self.relay is not None):
            return False
        self.lease = Lease(js, self.name, ttl=self.lease_ttl, replicas=self.settings.stream_replicas)
        self.phase = "waiting for the lease"
        if not await self.lease.acquire(stop):
            return False
        if others := await partitioned_instances(js, self.name, ttl=self.lease_ttl, replicas=self.settings.stream_replicas):
            await self.lease.release()
            msg = (f"instances of {self.name} run partitioned ({', '.join(others)}): start this one with the same "
                   "CAREPLAN_CONSUMER_PARTITIONS (docs/operations.md, Positions)")
            raise MixedInstancesError(msg)
        await self.consumer.wait_for_previous_instance(js)
        self._tasks.append(asyncio.create_task(self.lease.keep(self._stop, self._lose_lease)))
        # Consuming starts once the store's positions are in line with what was acknowledged
        # (at once, unless the store was restored): the rest of the service runs meanwhile,
        # and the halt is visible in the consumer's stats and the log.
        if await self.consumer.in_line(js):
            await self._consume()
        else:
            self.phase = "halted"
            self._tasks.append(asyncio.create_task(self._consume_when_mended(js)))
        self._start_duties()
        self._tasks.append(asyncio.create_task(self._every(REDRIVE_CHECK_SECONDS, self.consumer.redrive_pending)))
        self._tasks.append(asyncio.create_task(self._watch_progress(js)))
        return True

    async def _watch_progress(self, js: Any) -> None:
        """The consumer's alarm (``consumer_not_advancing``); a failed look is tried again."""
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.settings.alarm_check_seconds)
            except TimeoutError:
                pass
            if self._stop.is_set() or self.lost.is_set():
                continue
            try:
                await self.consumer.check_progress(js, self.phase)
            except Exception as e:  # noqa: BLE001 - NATS away: the relay's and readiness's business
                log.debug("%s: progress not checked (%s)", self.name, describe(e))

    async def _consume(self) -> None:
        await self.broker.start()
        self._started = True
        self.phase = "consuming"

    async def _consume_when_mended(self, js: Any) -> None:
        await self.consumer.wait_until_in_line(js, self._stop)
        if not self._stop.is_set() and not self.lost.is_set():
            await self._consume()

    def _lose_lease(self) -> None:
        self.lost.set()
        self.phase = "lease lost"
        self._tasks.append(asyncio.get_running_loop().create_task(self._stop_consuming()))

    async def _stop_consuming(self) -> None:
        try:
            await self.broker.stop()
        except Exception as e:  # noqa: BLE001 - the bus may be gone; consuming has stopped either way
            log.warning("%s: stopping the consumer: %s", self.name, describe(e))
        self._started = False

    def _start_duties(self) -> None:
        """What runs in one instance of the service only: its relay, its timers, its background work."""
        if self.relay is not None:
            self._tasks.append(asyncio.create_task(self.relay.run(self._stop)))
        if self.tick is not None:
            self._tasks.append(asyncio.create_task(self._every(self.tick_interval, self._timers)))
        if self.background is not None:
            self._tasks.append(asyncio.create_task(self.background(self._stop, self.lost)))

    async def _timers(self) -> int:
        """Durable timers: the service's own check of what is due."""
        assert self.tick is not None
        fired = await asyncio.to_thread(self.tick)
        if fired and self.relay is not None:
            self.relay.wake()
        return int(fired or 0)

    async def _every(self, interval: float, work: Callable[[], Any]) -> None:
        while not self._stop.is_set():
            if not self.lost.is_set():
                try:
                    await work()
                except Exception as e:  # noqa: BLE001 - tried again at the next interval
                    log.warning("%s: %s failed: %s", self.name, getattr(work, "__name__", "a periodic task"), describe(e))
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        if self._started:
            await self.broker.stop()
        self._stop.set()
        for task in self._tasks:
            await task
        self.consumer.not_advancing.retire()
        if self._reporter is not None:
            await self._reporter
        if self.lease is not None and not self.lost.is_set():
            await self.lease.release()
        if self._nc is not None:
            await self._nc.close()
        if self.stores is not None:
            self.stores.close()
        self.app.close()

    async def __aenter__(self) -> RunningService:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


class PartitionsRefusedError(Exception):
    """A service whose consumer cannot be partitioned was asked to run partitioned."""


def run_service_process(settings: Settings, make: Callable[[Settings], RunningService], *, ready_file: Path | None) -> None:
    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            service = make(settings)
        except PartitionsRefusedError as e:
            log.error("service refuses to start: %s", e)
            return 2
        tracing.configure(f"careplan-{service.name}")
        try:
            try:
                if not await service.start(stop):
                    return 0
            except (StreamDriftError, MixedInstancesError) as e:
                log.error("service %s refuses to start: %s", service.name, e)
                return 2
            log.info("service %s consuming from %s", service.name, service.nats_url)
            if ready_file is not None:
                ready_file.write_text(json.dumps({"service": service.name, "nats": service.nats_url}))
            lost = asyncio.ensure_future(service.lost.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait([lost, stopped], return_when=asyncio.FIRST_COMPLETED)
            lost.cancel()
            stopped.cancel()
            return 3 if service.lost.is_set() else 0
        finally:
            await service.stop()

    sys.exit(asyncio.run(main()))
