"""One active instance per durable consumer.

Two instances of one service on one durable would each be handed part of the messages,
and each would count the other's later positions as its own: instance A records 11, and
instance B's 10 is then "already decided". So an instance consumes only while it holds
the durable's lease: a key in the JetStream key-value bucket ``careplan_leases`` that
expires ``ttl`` seconds after its holder last renewed it. A second instance waits, saying
so once, and takes over when the first stops or dies. A holder that cannot renew (its
key was taken after it stalled, or NATS lost it) gives up consuming at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyWrongLastSequenceError

from services.shared.diagnostics import describe

log = logging.getLogger(__name__)

BUCKET = "careplan_leases"


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _gone(holder: str) -> bool:
    """Whether ``holder`` was a process of this machine that no longer runs."""
    host, _, pid = holder.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LeaseLostError(Exception):
    """Another instance holds the durable now; this one must stop consuming."""


class Lease:
    def __init__(self, js: Any, durable: str, *, ttl: float = 15.0, holder: str | None = None, replicas: int = 1) -> None:
        self.js = js
        self.durable = durable
        self.ttl = ttl
        self.holder = holder or holder_name()
        self.replicas = replicas
        self.revision: int | None = None
        self._kv: Any = None

    async def _bucket(self) -> Any:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(BUCKET)
            except BucketNotFoundError:
                self._kv = await self.js.create_key_value(
                    KeyValueConfig(bucket=BUCKET, description="careplan: which instance consumes for each durable",
                                   history=1, ttl=self.ttl, replicas=self.replicas)
                )
        return self._kv

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder, "since": time.time()}).encode()

    async def acquire(self, stop: asyncio.Event | None = None, poll: float = 1.0) -> bool:
        """Waits until this instance holds the lease (True), or ``stop`` is set (False)."""
        kv = await self._bucket()
        said = False
        while stop is None or not stop.is_set():
            try:
                self.revision = await kv.create(self.durable, self._value())
            except KeyWrongLastSequenceError:
                holder, revision = await self._current(kv)
                if revision is not None and _gone(holder):
                    # The holder was a process of this machine that has died (a restart after a crash):
                    # no need to wait out its lease.
                    log.info("%s: the previous instance (%s) is gone; taking over its lease", self.durable, holder)
                    try:
                        await kv.delete(self.durable, last=revision)
                    except KeyWrongLastSequenceError:
                        pass
                    continue
                if not said:
                    log.warning("%s: another instance (%s) is consuming for this durable; waiting to take over",
                                self.durable, holder)
                    said = True
                await asyncio.sleep(poll)
                continue
            if said:
                log.info("%s: the other instance is gone; this one (%s) consumes now", self.durable, self.holder)
            return True
        return False

    async def try_acquire(self) -> bool:
        """Takes the lease if it is free (or its holder, a process of this machine, is gone);
        does not wait (the partitions of services/shared/partitions.py)."""
        kv = await self._bucket()
        for _ in range(2):
            try:
                self.revision = await kv.create(self.durable, self._value())
                return True
            except KeyWrongLastSequenceError:
                holder, revision = await self._current(kv)
                if revision is None or not _gone(holder):
                    return False
                log.info("%s: the previous holder (%s) is gone; taking over its lease", self.durable, holder)
                try:
                    await kv.delete(self.durable, last=revision)
                except KeyWrongLastSequenceError:
                    return False
        return False

    async def live_holder(self) -> str | None:
        """Who holds the lease now, unless nobody does or its holder is a process gone."""
        kv = await self._bucket()
        holder, revision = await self._current(kv)
        if revision is None or _gone(holder):
            return None
        return holder

    async def _current(self, kv: Any) -> tuple[str, int | None]:
        try:
            entry = await kv.get(self.durable)
            return str(json.loads(entry.value or b"{}").get("holder", "unknown")), entry.revision
        except Exception:  # noqa: BLE001 - gone meanwhile, or unreadable: wait as for any holder
            return "unknown", None

    async def renew(self) -> None:
        if self.revision is None:
            raise LeaseLostError(self.durable)
        kv = await self._bucket()
        try:
            self.revision = await kv.update(self.durable, self._value(), last=self.revision)
        except KeyWrongLastSequenceError as e:
            self.revision = None
            raise LeaseLostError(self.durable) from e

    async def keep(self, stop: asyncio.Event, on_lost: Callable[[], object]) -> None:
        """Renews every third of the ttl until ``stop``; calls ``on_lost`` when it cannot."""
        last_renewed = time.monotonic()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.ttl / 3)
                return
            except TimeoutError:
                pass
            try:
                await self.renew()
                last_renewed = time.monotonic()
            except LeaseLostError:
                log.error("%s: the lease was taken by another instance; this one stops consuming", self.durable)
                on_lost()
                return
            except Exception as e:  # noqa: BLE001 - NATS unreachable: the lease runs out on its own
                if time.monotonic() - last_renewed > self.ttl:
                    log.error("%s: could not renew the lease for %.0f s (%s); this one stops consuming", self.durable,
                              time.monotonic() - last_renewed, describe(e))
                    on_lost()
                    return

    async def release(self) -> None:
        if self.revision is None or self._kv is None:
            return
        try:
            await self._kv.delete(self.durable, last=self.revision)
        except Exception as e:  # noqa: BLE001 - it expires on its own
            log.debug("%s: lease not released (%s); it expires in %.0f s", self.durable, describe(e), self.ttl)
        self.revision = None


#: Instance slots of a partitioned service (services/shared/partitions.py): ``<service>.i<j>``.
INSTANCE_SLOTS = 8
#: The most partitions a service's consumer may have (CAREPLAN_CONSUMER_PARTITIONS); NATS's
#: permissions (services/nats_auth.py) grant each of them.
MAX_PARTITIONS = 16


class MixedInstancesError(Exception):
    """A service would run partitioned and unpartitioned at once: both would decide the same messages."""


async def partitioned_instances(js: Any, service: str, *, ttl: float = 15.0, replicas: int = 1) -> list[str]:
    """The live instances of ``service`` running partitioned (their instance slots)."""
    found = []
    for j in range(INSTANCE_SLOTS):
        holder = await Lease(js, f"{service}.i{j}", ttl=ttl, replicas=replicas).live_holder()
        if holder is not None:
            found.append(holder)
    return found
