"""Two (or more) instances of one service sharing its work: the consumer in partitions.

With ``CAREPLAN_CONSUMER_PARTITIONS=P`` (P > 1) a service's messages are split by the
aggregate id in their subject into P partitions (``partition_of``: CRC-32 of the id,
modulo P), and each partition has a durable consumer of its own, ``<service>-p<k>``,
with positions of its own in the service's store. One aggregate is always in one
partition, so its events are decided in order; each partition is decided by one instance
at a time, under its own lease in ``careplan_leases`` (key ``<service>.p<k>``), so
exactly-once stays the store's tracking records (and a second writer of a partition is
refused by them: a partition's recorded positions only move forward).

Each running instance holds an instance slot (``<service>.i<j>``) and claims partitions
up to its share, ``ceil(P / instances)``; an instance holding more than its share gives
the rest back (stops consuming them, then releases their leases), so a second instance
started later gets half. When an instance dies its leases run out (or, on the same
machine, are taken over at once: its pid is gone) and the others claim its partitions.

What must run once per service — its relay (one publisher per store), its timers and its
background work — runs in the instance that holds the lease ``<service>.duties``.

Every partition consumer receives all of the service's subjects and passes over the
messages of other partitions (recording its stream position for them, in the same
transaction as its own decisions where they come together): JetStream's subject
partitioning would change the subjects of the stream every subscriber reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from typing import Any

from faststream.nats import NatsBroker

from services.shared.bus import connect, wait_for_streams
from services.shared.consumer import ConsumerStats, DurableConsumer
from services.shared.diagnostics import describe
from services.shared.health import DEGRADED, OK, Status, StatusReporter, relay_status, service_status
from services.shared.lease import INSTANCE_SLOTS, MAX_PARTITIONS, Lease, LeaseLostError, MixedInstancesError
from services.shared.runner import REDRIVE_CHECK_SECONDS, RunningService
from services.shared.tracking import stream_tracking_name

log = logging.getLogger(__name__)

#: Instance slots per service: at most this many instances share a service's partitions.
MAX_INSTANCES = INSTANCE_SLOTS


class PartitionedService(RunningService):
    """One instance of a service whose consumer is partitioned (see the module)."""

    def __init__(self, settings: Any, app: Any, subjects: list[str], *, partitions: int, **options: Any) -> None:
        consumer_options = {k: options.pop(k) for k in ("max_attempts", "retry_cap") if k in options}
        super().__init__(settings, app, subjects, **options, **consumer_options)
        self.partitions = partitions
        self.subjects = subjects
        self.consumer_options = consumer_options
        #: The partitions this instance consumes now: k → (broker, consumer).
        self.running: dict[int, tuple[NatsBroker, DurableConsumer]] = {}
        self._leases: dict[int, Lease] = {}
        self._starting: dict[int, asyncio.Task[None]] = {}
        self.slot: Lease | None = None
        self.slot_index: int | None = None
        #: Every partition this instance has consumed, and how many messages it decided in
        #: each (the test's proof that the work was shared).
        self.decided: dict[int, int] = {}
        self._js: Any = None
        #: The notification of the service's log the timers were armed from, up to.
        self._followed = 0
        #: Partitions no live instance holds (looked up by the duties' holder, for its record).
        self.unclaimed: list[int] = []
        if hasattr(app, "stream_floor"):
            # Timers that wait for a watermark (scheduling) trust one only once every
            # partition, whichever instance decides it, has recorded a position past it.
            app.stream_floor = self.stream_floor

    def stream_floor(self) -> int:
        """The lowest stream position any partition of the service has recorded (in the
        service's store, so whichever instance decided it): every partition has decided
        everything of its own up to there. A partition that never recorded one starts where
        the unpartitioned durable left off (``DurableConsumer._load_positions``)."""
        recorder = self.app.process_recorder
        stream = self.settings.stream_name
        unpartitioned = recorder.max_tracking_id(stream_tracking_name(stream, self.name)) or 0
        return min((recorder.max_tracking_id(stream_tracking_name(stream, f"{self.name}-p{k}")) or unpartitioned)
                   for k in range(self.partitions))

    # ----------------------------------------------------------------- status

    def combined_stats(self) -> ConsumerStats:
        total = ConsumerStats()
        for _, consumer in self.running.values():
            for f in fields(ConsumerStats):
                value = getattr(consumer.stats, f.name)
                if isinstance(value, int) and not isinstance(value, bool):
                    setattr(total, f.name, getattr(total, f.name) + value)
                elif value is not None and getattr(total, f.name) is None:
                    setattr(total, f.name, value)
        return total

    def instance_status(self) -> Status | None:
        """This instance's own record, ``service:<name>.i<j>`` (its slot): its phase and
        the partitions it consumes."""
        if self.slot_index is None:
            return None
        found = service_status(f"service:{self.name}.i{self.slot_index}", self.phase, self.combined_stats())
        if found.status != OK:
            return found
        held = ", ".join(str(k) for k in sorted(self.running)) or "none"
        return Status(found.component, found.state, OK, f"partitions {held} of {self.partitions}")

    def service_record(self) -> Status | None:
        """The service's record, ``service:<name>``, put by the duties' holder only: its own
        consumers' state, and degraded while a partition has no live instance."""
        if not self._duties_held():
            return None
        found = service_status(f"service:{self.name}", self.phase, self.combined_stats())
        if found.status == OK and self.unclaimed:
            return Status(found.component, "consuming", DEGRADED, f"{len(self.unclaimed)} of {self.partitions} "
                          "partitions consumed by no instance (being taken over)")
        return found

    def statuses(self) -> list[Any]:
        sources = [self.service_record, self.instance_status]
        if self.relay is not None:
            relay = self.relay
            # The relay's record is put by the instance that runs it (the duties' holder) only.
            sources.append(lambda: relay_status(f"relay:{relay.application}", relay.stats) if self._duties_held() else None)
        return sources

    def _duties_held(self) -> bool:
        return self.lease is not None and self.lease.revision is not None and not self.lost.is_set()

    # ----------------------------------------------------------------- start, stop

    async def start(self, stop: asyncio.Event | None = None) -> bool:
        if self._reporter is None:
            reporter = StatusReporter(self.nats_url, self.statuses(), replicas=self.settings.stream_replicas)
            self._reporter = asyncio.create_task(reporter.run(self._stop))
        self._nc = await connect(self.nats_url, name=f"{self.name}-control")
        js = self._js = self._nc.jetstream()
        self.phase = "waiting for streams"
        if not await wait_for_streams(js, self.settings, f"service {self.name}", stop, audit=self.relay is not None):
            return False
        if (plain := await Lease(js, self.name, ttl=self.lease_ttl).live_holder()) is not None:
            msg = (f"an unpartitioned instance of {self.name} ({plain}) consumes: start this one without "
                   "CAREPLAN_CONSUMER_PARTITIONS, or stop that one (docs/operations.md, Positions)")
            raise MixedInstancesError(msg)
        self.phase = "waiting for an instance slot"
        if not await self._take_slot(stop):
            return False
        self.phase = "consuming"
        await self._balance_once()
        self._tasks.append(asyncio.create_task(self._balance()))
        self._tasks.append(asyncio.create_task(self._duties()))
        self._tasks.append(asyncio.create_task(self._every(REDRIVE_CHECK_SECONDS, self._redrive)))
        return True

    def _lease(self, key: str) -> Lease:
        return Lease(self._js, f"{self.name}.{key}", ttl=self.lease_ttl, replicas=self.settings.stream_replicas)

    async def _take_slot(self, stop: asyncio.Event | None) -> bool:
        said = False
        while stop is None or not stop.is_set():
            for j in range(MAX_INSTANCES):
                slot = self._lease(f"i{j}")
                if await slot.try_acquire():
                    self.slot, self.slot_index = slot, j
                    log.info("%s: instance %d of up to %d; %d partitions", self.name, j, MAX_INSTANCES, self.partitions)
                    return True
            if not said:
                log.warning("%s: %d instances run already; waiting for one to go", self.name, MAX_INSTANCES)
                said = True
            await asyncio.sleep(1.0)
        return False

    async def stop(self) -> None:
        self._stop.set()
        for task in self._starting.values():
            task.cancel()
        for task in list(self._starting.values()):
            with contextlib.suppress(BaseException):  # cancelled on the way
                await task
        for k in list(self._leases):  # consuming, or still starting
            await self._give_back(k)
        if self.slot is not None:
            await self.slot.release()
        log.info("%s: decided per partition: %s", self.name, self.progress())
        await super().stop()

    # ----------------------------------------------------------------- partitions

    async def _instances(self) -> int:
        alive = 0
        for j in range(MAX_INSTANCES):
            if j == self.slot_index or await self._lease(f"i{j}").live_holder() is not None:
                alive += 1
        return max(alive, 1)

    def _preferred(self, instances: int) -> list[int]:
        """Partitions in this instance's order of preference: each instance starts at its
        own place, so that two starting together rarely reach for the same."""
        first = ((self.slot_index or 0) * self.partitions) // max(instances, 1)
        return [(first + i) % self.partitions for i in range(self.partitions)]

    def progress(self) -> dict[int, int]:
        """Messages decided per partition by this instance so far."""
        found = dict(self.decided)
        for k, (_, consumer) in self.running.items():
            found[k] = found.get(k, 0) + consumer.stats.processed
        return dict(sorted(found.items()))

    async def _balance(self) -> None:
        interval = min(1.0, self.lease_ttl / 3)
        said: dict[int, int] = {}
        rounds = 0
        while not self._stop.is_set():
            rounds += 1
            if rounds % 2 == 0 and (now := self.progress()) != said and any(now.values()):
                log.info("%s: decided so far per partition: %s", self.name, now)
                said = now
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=interval)
                return
            except TimeoutError:
                pass
            try:
                await self._balance_once()
            except Exception as e:  # noqa: BLE001 - NATS away: tried again; leases run out on their own
                log.warning("%s: balancing partitions failed (%s)", self.name, describe(e))

    async def _balance_once(self) -> None:
        assert self.slot is not None
        try:
            await self.slot.renew()
        except LeaseLostError:
            log.warning("%s: instance slot lost; taking one again", self.name)
            await self._take_slot(self._stop)
        for k, lease in list(self._leases.items()):
            try:
                await lease.renew()
            except LeaseLostError:
                log.error("%s: partition %d was taken by another instance; this one stops consuming it", self.name, k)
                await self._stop_partition(k)
                self._leases.pop(k, None)
        if self._duties_held():
            self.unclaimed = [k for k in range(self.partitions)
                              if k not in self._leases and await self._lease(f"p{k}").live_holder() is None]
        share = math.ceil(self.partitions / await self._instances())
        held = sorted(self._leases)
        if len(held) > share:
            for k in held[share:]:
                log.info("%s: giving partition %d back (share %d of %d)", self.name, k, share, self.partitions)
                await self._give_back(k)
            return
        for k in self._preferred(await self._instances()):
            if len(self._leases) >= share or self._stop.is_set():
                break
            if k in self._leases:
                continue
            lease = self._lease(f"p{k}")
            if await lease.try_acquire():
                self._leases[k] = lease
                self._starting[k] = asyncio.create_task(self._start_partition(k))

    async def _start_partition(self, k: int) -> None:
        consumer = DurableConsumer(
            self.settings, service=self.name, app=self.app, subjects=self.subjects, handle=self.app.decide,
            on_recorded=self._recorded, partition=(k, self.partitions), **self.consumer_options,
        )
        broker = NatsBroker(self.nats_url.split(","), logger=logging.getLogger(f"faststream.{self.name}"),
                            log_level=logging.DEBUG)
        consumer.attach(broker)
        try:
            await consumer.wait_for_previous_instance(self._js)
            halted = False
            while not await consumer.in_line(self._js):
                halted = True
                await asyncio.sleep(2.0)  # halted (a restored store): the alarm says so
            if halted:  # mended (`careplan store recover`): what was read from the store at start is stale
                await asyncio.to_thread(self.app.reread_after_recovery)
                consumer.stats.halted = None
            await broker.start()
            self.running[k] = (broker, consumer)
            log.info("%s: consuming partition %d of %d", self.name, k, self.partitions)
        except asyncio.CancelledError:
            await broker.stop()
            raise
        finally:
            self._starting.pop(k, None)

    async def _stop_partition(self, k: int) -> None:
        task = self._starting.pop(k, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):  # cancelled on the way
                await task
        found = self.running.pop(k, None)
        if found is None:
            return
        broker, consumer = found
        try:
            await broker.stop()
        except Exception as e:  # noqa: BLE001 - the bus may be gone; consuming has stopped either way
            log.warning("%s: stopping partition %d: %s", self.name, k, describe(e))
        consumer.not_advancing.retire()
        self.decided[k] = self.decided.get(k, 0) + consumer.stats.processed

    async def _give_back(self, k: int) -> None:
        await self._stop_partition(k)
        lease = self._leases.pop(k, None)
        if lease is not None:
            await lease.release()

    async def _redrive(self) -> int:
        """Each partition's redrives, and its ``consumer_not_advancing`` alarm (component
        ``service:<service>-p<k>``)."""
        done = 0
        for _, consumer in list(self.running.values()):
            done += await consumer.redrive_pending()
            try:
                await consumer.check_progress(self._js)
            except Exception as e:  # noqa: BLE001 - NATS away: the relay's and readiness's business
                log.debug("%s: progress not checked (%s)", consumer.durable, describe(e))
        return done

    # ----------------------------------------------------------------- once per service

    async def _duties(self) -> None:
        """The relay, the timers and the background work, in one instance at a time."""
        self.lease = self._lease("duties")
        if not await self.lease.acquire(self._stop):
            return
        log.info("%s: this instance runs the service's relay and timers", self.name)
        self._tasks.append(asyncio.create_task(self.lease.keep(self._stop, self._lose_lease)))
        self._start_duties()

    async def _timers(self) -> int:
        """The timers of everything recorded, by whichever instance decided it: the log is
        followed first (from its start when this instance took the duties over)."""
        self._followed = await asyncio.to_thread(self.app.follow_timers, self._followed)
        return await super()._timers()

    def _lose_lease(self) -> None:
        """The duties lease was taken (this instance stalled): the process ends, as an
        unpartitioned one does when it loses its lease; the others go on."""
        self.lost.set()
        self.phase = "lease lost"

    def status(self) -> Status:
        return service_status(f"service:{self.name}", self.phase, self.combined_stats())


async def partition_durables(js: Any, stream: str, service: str, partitions: int = 0) -> dict[int, Any]:
    """The partition durables of ``service`` on ``stream`` (k → consumer info), none when it
    runs unpartitioned: ``partitions`` (the setting, when known) are looked up, else the
    first and, if it exists, every one a service may have (``MAX_PARTITIONS`` of NATS's
    permissions). For the operators' commands and the backlog, which know no instance."""
    async def info(k: int) -> Any:
        try:
            return await js.consumer_info(stream, f"{service}-p{k}")
        except Exception:  # noqa: BLE001 - no such durable (or no right to read it)
            return None

    if partitions > 1:
        wanted = range(partitions)
    elif await info(0) is not None:
        wanted = range(MAX_PARTITIONS)
    else:
        return {}
    found = {k: await info(k) for k in wanted}
    return {k: v for k, v in found.items() if v is not None}


def durable_of(consumer: str) -> tuple[str, int | None]:
    """``assessment-p3`` → (``assessment``, 3); ``assessment`` → (``assessment``, None)."""
    name, sep, k = consumer.rpartition("-p")
    if sep and name and k.isdigit():
        return name, int(k)
    return consumer, None


#: Partitions when ``careplan service NAME --instances N`` runs and none are set.
DEFAULT_PARTITIONS = 8


def run_instances(name: str, instances: int, settings: Any, unpartitioned: str | None = None) -> int:
    """``careplan service NAME --instances N``: N processes of the service sharing its
    partitions; one that ends unexpectedly (killed, crashed) is started again after a second,
    its partitions taken over by the others meanwhile. SIGTERM/SIGINT stop them all.
    ``unpartitioned`` is the registry's reason why the service cannot be partitioned, if so."""
    partitions = settings.consumer_partitions if settings.consumer_partitions > 1 else DEFAULT_PARTITIONS
    env = {**os.environ, "CAREPLAN_CONSUMER_PARTITIONS": str(partitions)}
    if (reason := unpartitioned) is not None:
        # Its consumer cannot be partitioned: one instance consumes, the others stand by
        # (the durable's lease) and take over when it stops or dies.
        log.info("%s: not partitioned (%s): one instance consumes, %d stand by", name, reason, instances - 1)
        env["CAREPLAN_CONSUMER_PARTITIONS"] = "0"
        partitions = 0
    command = [sys.executable, "-m", "services.cli", "service", name]
    children: list[subprocess.Popen[bytes]] = [subprocess.Popen(command, env=env) for _ in range(instances)]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("%s: %d instances over %d partitions (pids %s)", name, instances, partitions,
             ", ".join(str(c.pid) for c in children))
    while not stopping:
        time.sleep(0.5)
        for i, child in enumerate(children):
            code = child.poll()
            if code is not None and not stopping:
                log.warning("%s: instance pid %d ended (%s); starting another", name, child.pid, code)
                time.sleep(1.0)
                children[i] = subprocess.Popen(command, env=env)
    for child in children:
        if child.poll() is None:
            child.terminate()
    worst = 0
    for child in children:
        try:
            worst = max(worst, abs(child.wait(timeout=60)))
        except subprocess.TimeoutExpired:
            child.kill()
            worst = max(worst, 1)
    return worst
