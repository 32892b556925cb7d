"""Status records: what each relay and service process says about itself, for readiness.

Each process puts a small record per component it runs (``relay:<store>``,
``service:<name>``) every few seconds into the JetStream key-value bucket
``careplan_status``, whose entries expire ``TTL`` seconds after they were written. The API
reads the bucket: it works wherever the processes run (another machine needs no file or
port of ours), and a process that died leaves no stale "ok" behind: its entry runs out and
the component reads as down, "no heartbeat". Records hold states and reason classes only,
never an event's content or a client's id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError

from services.shared.bus import connect
from services.shared.diagnostics import describe

log = logging.getLogger(__name__)

BUCKET = "careplan_status"
#: An entry older than this is gone: its process stopped saying anything.
TTL = 15.0
#: How often a process puts its records (well within the TTL, so one lost put is harmless).
INTERVAL = 3.0

OK, DEGRADED, DOWN = "ok", "degraded", "down"


@dataclass(frozen=True)
class Status:
    """One component's state as its process sees it; ``reason`` is a short class, no data."""

    component: str
    state: str
    status: str
    reason: str = ""
    at: float = 0.0

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Status:
        data = json.loads(raw)
        return cls(str(data["component"]), str(data["state"]), str(data["status"]), str(data.get("reason", "")),
                   float(data.get("at", 0)))


def key_of(component: str) -> str:
    """KV keys allow no colon: ``service:assessment`` is kept as ``service.assessment``."""
    return component.replace(":", ".")


def relay_status(component: str, stats: Any) -> Status:
    """A relay's :class:`~services.shared.relay.RelayStats` as a status record. The halt's
    own message names positions only, but the record keeps just its class."""
    state = str(stats.state)
    if state == "publishing":
        return Status(component, state, OK)
    if state == "starting":
        return Status(component, state, DEGRADED, "starting or waiting for streams")
    if state == "halted":
        return Status(component, state, DOWN, "halted: the store disagrees with the stream")
    if state.startswith("failing"):
        return Status(component, "failing", DOWN, "an event in the store cannot be read")
    if state.startswith("refused"):
        return Status(component, "refused", DOWN, "the streams differ from their configuration")
    if state == "waiting for NATS":
        return Status(component, state, DOWN, "NATS unreachable")
    if state == "waiting for the store":
        return Status(component, state, DOWN, "the store cannot be reached")
    return Status(component, state, DOWN, state)


def service_status(component: str, phase: str, stats: Any) -> Status:
    """A service's consumer (its phase in :class:`~services.shared.runner.RunningService`
    and its :class:`~services.shared.consumer.ConsumerStats`) as a status record."""
    if stats.halted is not None:
        return Status(component, "halted", DOWN, "halted: a source went backwards (restored store)")
    if phase != "consuming":
        return Status(component, phase, DOWN if phase == "lease lost" else DEGRADED, phase)
    if stats.stuck_since is not None:
        return Status(component, "stuck", DEGRADED, "stuck on one message: the store or NATS fails")
    return Status(component, "consuming", OK)


async def status_bucket(js: Any, *, replicas: int = 1, create: bool = True) -> Any:
    """The bucket, created on first use like the lease bucket (by whichever process comes
    first; all create it alike)."""
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        if not create:
            raise
        return await js.create_key_value(
            KeyValueConfig(bucket=BUCKET, description="careplan: each process's status, for readiness",
                           history=1, ttl=TTL, replicas=replicas, direct=True)
        )


class StatusReporter:
    """Puts the records of ``sources`` every ``interval`` seconds, on a connection of its
    own (so it says "waiting for NATS" no later than NATS comes back), until stopped."""

    def __init__(self, nats_url: str, sources: list[Callable[[], Status | None]], *, replicas: int = 1,
                 interval: float = INTERVAL) -> None:
        self.nats_url, self.sources, self.replicas, self.interval = nats_url, sources, replicas, interval

    async def run(self, stop: asyncio.Event) -> None:
        from services.shared.alarms import overlay  # alarms build on this module's records

        nc: Any = None
        kv: Any = None
        said = False
        try:
            while not stop.is_set():
                try:
                    if nc is None:
                        nc = await connect(self.nats_url, name="careplan-status", reconnect=False)
                    if kv is None:
                        kv = await status_bucket(nc.jetstream(), replicas=self.replicas)
                    for source in self.sources:
                        found = source()
                        if found is None:  # not this process's to say now (services/shared/partitions.py)
                            continue
                        record = overlay(found)  # a raised alarm outranks the record
                        await kv.put(key_of(record.component), Status(record.component, record.state, record.status,
                                                                      record.reason, time.time()).encode())
                    said = False
                except Exception as e:  # noqa: BLE001 - NATS away: try again at the next interval
                    if not said:
                        log.info("status records not put (%s); trying again", describe(e))
                        said = True
                    await _closed(nc)
                    nc, kv = None, None
                try:
                    await asyncio.wait_for(stop.wait(), timeout=self.interval)
                except TimeoutError:
                    pass
        finally:
            await _closed(nc)


async def _closed(nc: Any) -> None:
    if nc is not None:
        try:
            await asyncio.wait_for(nc.close(), timeout=2)
        except Exception:  # noqa: BLE001 - a dead connection may fail to close; nothing to keep
            pass


async def read_statuses(js: Any, components: list[str]) -> dict[str, Status]:
    """The records the bucket holds for ``components`` (those missing have no heartbeat).
    Raises when the bucket cannot be read (NATS unreachable)."""
    try:
        kv = await status_bucket(js, create=False)
    except BucketNotFoundError:
        return {}
    found = {}
    for component in components:
        try:
            entry = await kv.get(key_of(component))
        except Exception:  # noqa: BLE001 - no key (expired, never put): no heartbeat
            continue
        if entry is not None and entry.value:
            try:
                found[component] = Status.decode(entry.value)
            except (ValueError, KeyError):
                continue
    return found
