"""Readiness: every part the system needs, each ``ok``, ``degraded`` or ``down`` with a
short reason (states and classes only: nothing of a client or an event).

Three sources, so that each part is judged by what can see it: the status records the
relay and service processes put into NATS (:mod:`services.shared.health`; a missing one is
"no heartbeat"), the state of `careplan up`'s children (a file its supervisor rewrites,
read without NATS), and the stores, which the API reads itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

from services.registry import PROCESSES, RELAYED_STORES, SERVICES, STORES
from services.shared.bus import connect
from services.shared.diagnostics import describe
from services.shared.health import DEGRADED, DOWN, OK, read_statuses
from services.shared.lease import INSTANCE_SLOTS
from services.shared.settings import Settings

log = logging.getLogger(__name__)

#: How long one answer is reused: probes every second cost one NATS round at most.
CACHE_SECONDS = 1.0
RANK = {OK: 0, DEGRADED: 1, DOWN: 2}

Component = dict[str, str]


def process_components() -> dict[str, list[str]]:
    """`careplan up`'s processes → the components each runs (a service's process its relay too)."""
    found: dict[str, list[str]] = {p.name: [p.name] for p in PROCESSES}
    for service in SERVICES:
        if service.relays:
            found[service.process].append(f"relay:{service.store}")
    return found


def reporting_components() -> list[str]:
    """The components that put status records: every relay, every service's consumer."""
    relays = [*(f"relay:{store}" for store in RELAYED_STORES),
              *(f"relay:{s.store}" for s in SERVICES if s.relays)]
    return [*relays, *(s.process for s in SERVICES)]


def components() -> list[str]:
    """Every component /readyz names, in a stable order."""
    return ["nats", *reporting_components(), "risk-signals", *(f"store:{store}" for store in STORES), "api"]


def overall(found: dict[str, Component]) -> str:
    return max((c["status"] for c in found.values()), key=RANK.__getitem__, default=OK)


class Readiness:
    """The API's view of the system; one instance per API process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stores: dict[str, Any] = {}
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        from services.api.watchdog import RiskWatchdog

        #: Every risk signal escalated in time (``risk-signals``); run by the app's lifespan.
        self.watchdog = RiskWatchdog(settings)

    async def report(self) -> dict[str, Any]:
        """``{"status": ..., "components": {...}}``, at most ``CACHE_SECONDS`` old."""
        async with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < CACHE_SECONDS:
                return self._cached[1]
            found = {**await self._from_nats(), **await self._stores_read()}
            found["api"] = {"status": OK, "reason": "serving"}
            found["risk-signals"] = self.watchdog.component()
            self._apply_supervision(found)
            names = [n for name in components() for n in (name, *sorted(c for c in found if c.startswith(f"{name}.i")))]
            body = {"status": overall(found), "components": {name: found[name] for name in names}}
            self._cached = (time.monotonic(), body)
            return body

    async def _from_nats(self) -> dict[str, Component]:
        reporting = reporting_components()
        if not self.settings.nats_url:
            return self._all_down(reporting, "nats not configured")
        try:
            nc = await connect(self.settings.nats_url, name="careplan-readiness", reconnect=False, connect_timeout=1)
        except Exception as e:  # noqa: BLE001 - any failure to connect: NATS is down for us
            log.debug("readiness: NATS unreachable (%s)", describe(e))
            return self._all_down(reporting, "nats unreachable")
        # a partitioned service's instances each put a record of their own (services/shared/partitions.py)
        instances = [f"{s.process}.i{j}" for s in SERVICES for j in range(INSTANCE_SLOTS)]
        try:
            statuses = await asyncio.wait_for(read_statuses(nc.jetstream(), [*reporting, *instances]), timeout=3)
        except Exception as e:  # noqa: BLE001 - connected, but JetStream does not answer
            log.debug("readiness: status bucket unreadable (%s)", describe(e))
            return {"nats": {"status": DOWN, "reason": "jetstream not answering"},
                    **{c: {"status": DOWN, "reason": "nats unreachable"} for c in reporting}}
        finally:
            await _close(nc)
        found: dict[str, Component] = {"nats": {"status": OK, "reason": "connected"}}
        for component in reporting:
            record = statuses.get(component)
            found[component] = ({"status": DOWN, "reason": "no heartbeat"} if record is None
                                else {"status": record.status, "reason": record.reason or record.state})
        for component in instances:  # shown while they run (an instance stopped is no longer one)
            if (record := statuses.get(component)) is not None:
                found[component] = {"status": record.status, "reason": record.reason or record.state}
        return found

    @staticmethod
    def _all_down(reporting: list[str], reason: str) -> dict[str, Component]:
        return {"nats": {"status": DOWN, "reason": reason}, **{c: {"status": DOWN, "reason": reason} for c in reporting}}

    async def _stores_read(self) -> dict[str, Component]:
        found = {}
        for store in STORES:
            try:
                await asyncio.wait_for(asyncio.to_thread(self._read_store, store), timeout=3)
                found[f"store:{store}"] = {"status": OK, "reason": "readable"}
            except Exception as e:  # noqa: BLE001 - unreachable, locked, missing: not readable
                log.debug("readiness: store %s not readable (%s)", store, describe(e))
                self._forget_store(store)
                found[f"store:{store}"] = {"status": DOWN, "reason": "cannot be read"}
        return found

    def _read_store(self, store: str) -> None:
        """Reads the end of the store's log: the cheapest read that touches its tables."""
        from services.shared.persistence import OutboxStores

        if store not in self._stores:
            self._stores[store] = OutboxStores(self.settings, store)
        self._stores[store].recorder.max_notification_id()

    def _forget_store(self, store: str) -> None:
        stores = self._stores.pop(store, None)
        if stores is not None:
            try:
                stores.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass

    def _apply_supervision(self, found: dict[str, Component]) -> None:
        """A child of `careplan up` that is restarting makes its components degraded, one
        that is crash-looping makes them down, whatever its last status record said."""
        children = read_supervisor_file(self.settings.supervisor_file)
        owned = process_components()
        for name, child in children.items():
            state, restarts = str(child.get("state", "")), int(child.get("restarts", 0))
            if state == "running":
                continue
            status = DOWN if state == "crash-looping" else DEGRADED
            for component in owned.get(name, []):
                if component in found and RANK[found[component]["status"]] <= RANK[status]:
                    found[component] = {"status": status, "reason": f"{state} ({restarts} restarts)"}

    def close(self) -> None:
        for store in list(self._stores):
            self._forget_store(store)
        self.watchdog.close()


def read_supervisor_file(path: Path | None) -> dict[str, dict[str, Any]]:
    """The children's states `careplan up` keeps (empty when not run by `up`, or unreadable)."""
    if path is None:
        return {}
    try:
        children = json.loads(path.read_text()).get("children", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return children if isinstance(children, dict) else {}


async def _close(nc: Any) -> None:
    try:
        await asyncio.wait_for(nc.close(), timeout=2)
    except Exception:  # noqa: BLE001 - nothing to keep from a dead connection
        pass
