"""``GET /metrics``: the whole system's Prometheus metrics, and the API's own HTTP figures.

What the processes record (``services/shared/metrics.py``) comes from their multiprocess
files; what must stay true while the process it concerns is down is computed here, when
scraped (:data:`services.shared.metrics.SCRAPED`):

- each registered service's durable consumer (its slowest partition's, partitioned): pending and ack-pending messages, from
  JetStream's consumer info (a service killed and kept down shows its backlog growing);
  NATS unreachable or slow: no sample, within :data:`NATS_TIMEOUT` seconds;
- open dead letters per service, open escalations by severity and the age of the oldest
  unacknowledged one, read from the stores;
- the supervisor's restarts per process, from its file (``CAREPLAN_SUPERVISOR_FILE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.registry import SERVICE_NAMES
from services.shared import metrics
from services.shared.bus import connect
from services.shared.diagnostics import describe
from services.shared.settings import Settings

log = logging.getLogger(__name__)

#: The longest a scrape waits for NATS (connecting and every consumer's info together).
NATS_TIMEOUT = 2.0
#: The longest a scrape waits for the stores.
STORE_TIMEOUT = 5.0
#: A route no template matched (a 404): one label value, never the raw path.
UNMATCHED = "unmatched"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


# --------------------------------------------------------------------- HTTP figures


class HttpMetrics:
    """ASGI middleware: requests and latency by method, route template and status. The
    labelled children are kept, so a request costs two dictionary lookups and two updates."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        root = str(scope.get("root_path", ""))

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.observe(scope, status, time.perf_counter() - started, root)

    def observe(self, scope: Scope, status: int, elapsed: float, root: str = "") -> None:
        """One request's figures (``root``: the root path before the application ran); never raises."""
        metrics.guarded("http", lambda: self._observe(scope, status, elapsed, root))

    def _observe(self, scope: Scope, status: int, elapsed: float, root: str = "") -> None:
        route = scope.get("route")
        # a route of a mounted application (the web pages at /ui) is named with its mount's
        # prefix, so /ui/plans/{plan_id} is not counted as the API's /plans/{plan_id}
        path = getattr(route, "path", None)
        template = str(scope.get("root_path", ""))[len(root):] + path if path else UNMATCHED
        method = str(scope.get("method", ""))
        counted = self._counted.get((method, template, status))
        if counted is None:
            counted = self._counted[(method, template, status)] = metrics.HTTP_REQUESTS.labels(method, template, str(status))
        counted.inc()
        timed = self._timed.get((method, template))
        if timed is None:
            timed = self._timed[(method, template)] = metrics.HTTP_DURATION.labels(method, template)
        timed.observe(elapsed)


# --------------------------------------------------------------------- figures computed when scraped


def _family(name: str) -> Metric:
    kind, text, labels = metrics.SCRAPED[name]
    if kind == "counter":
        return CounterMetricFamily(name, text, labels=list(labels))
    return GaugeMetricFamily(name, text, labels=list(labels))


class Figures(Collector):
    """The figures of one scrape, computed beforehand (asynchronously), handed out as families."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def consumer_families(settings: Settings, services: tuple[str, ...] = SERVICE_NAMES) -> list[Metric]:
    """Pending and ack-pending per service from JetStream; none when NATS does not answer in time."""
    pending = _family("careplan_consumer_pending_messages")
    ack_pending = _family("careplan_consumer_ack_pending_messages")
    if settings.nats_url:
        try:
            found = await asyncio.wait_for(_consumer_infos(settings, services), timeout=NATS_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - NATS down or slow: no sample, not a hanging scrape
            log.debug("metrics: consumer info not read (%s)", describe(e))
            found = {}
        for service, (num_pending, num_ack_pending) in found.items():
            pending.add_metric([service], num_pending)
            ack_pending.add_metric([service], num_ack_pending)
    return [pending, ack_pending]


async def _consumer_infos(settings: Settings, services: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    from services.shared.partitions import partition_durables

    nc = await connect(settings.nats_url, name="careplan-metrics", reconnect=False, connect_timeout=1)
    try:
        js = nc.jetstream(timeout=NATS_TIMEOUT)
        found = {}
        for service in services:
            # Partitioned (services/shared/partitions.py): every partition's durable is given
            # every message of the service, so the service's backlog is its slowest partition's
            # (the unpartitioned durable, no longer consumed, would only grow).
            partitions = await partition_durables(js, settings.stream_name, service, settings.consumer_partitions)
            if partitions:
                infos = list(partitions.values())
            else:
                try:
                    infos = [await js.consumer_info(settings.stream_name, service)]
                except Exception as e:  # noqa: BLE001 - no durable yet (or no right to read it): no sample
                    log.debug("metrics: consumer %s not read (%s)", service, describe(e))
                    continue
            found[service] = (max(int(i.num_pending or 0) for i in infos), max(int(i.num_ack_pending or 0) for i in infos))
        return found
    finally:
        with contextlib.suppress(Exception):  # nothing to keep from a closing connection
            await asyncio.wait_for(nc.close(), timeout=1)


def dead_letter_family(desk: Any, services: tuple[str, ...] = SERVICE_NAMES) -> Metric:
    """Dead letters not yet redriven, per service (every registered service, 0 when none)."""
    from domain.operations.dead_letter import DeadLetterStatus

    family = _family("careplan_dead_letters_open")
    counts = dict.fromkeys(services, 0)
    for letter in desk.list():
        if letter.status is not DeadLetterStatus.REDRIVEN:
            counts[letter.service] = counts.get(letter.service, 0) + 1
    for service, count in counts.items():
        family.add_metric([service], count)
    return family


def views_lag_family(views: Any) -> Metric:
    """Per followed store, the events its log holds beyond the read models' position."""
    family = _family("careplan_views_lag_events")
    for store, lag in views.lag().items():
        family.add_metric([store], lag)
    return family


def escalation_families(escalation: Any, now: datetime | None = None) -> list[Metric]:
    """Open escalations by severity (each severity, 0 when none) and the oldest unacknowledged one's age."""
    from domain.catalogues.escalation import EscalationSeverity
    from domain.escalation.crisis import CrisisStatus

    now = now or datetime.now(UTC)
    crises = escalation.open_crises()
    counts = {severity.value: 0 for severity in EscalationSeverity}
    for crisis in crises:
        counts[crisis.severity.value] = counts.get(crisis.severity.value, 0) + 1
    open_ = _family("careplan_escalations_open")
    for severity, count in counts.items():
        open_.add_metric([severity], count)
    unacknowledged = [c.created_on for c in crises if c.status is CrisisStatus.ESCALATING]
    oldest = _family("careplan_escalation_oldest_unacknowledged_age_seconds")
    oldest.add_metric([], max(0.0, (now - min(unacknowledged)).total_seconds()) if unacknowledged else 0.0)
    return [open_, oldest]


def restart_family(supervisor_file: Any) -> Metric | None:
    """The supervisor's restart counts per process; None when not run by `careplan up`."""
    from services.api.health import read_supervisor_file

    children = read_supervisor_file(supervisor_file)
    if not children:
        return None
    family = _family("careplan_process_restarts_total")
    for process, child in sorted(children.items()):
        family.add_metric([str(process)], float(child.get("restarts", 0)))
    return family


class ScrapedFigures:
    """What one API process computes per scrape (store reads run in a worker thread; one at a time)."""

    def __init__(self, settings: Settings, api: Any) -> None:
        self.settings = settings
        self.api = api
        self._lock = asyncio.Lock()
        #: The stores' read in progress: a scrape that timed out leaves it running, and the next
        #: scrape waits for it instead of starting another (slow stores never pile up threads).
        self._reading: asyncio.Future[list[Metric]] | None = None

    async def families(self) -> list[Metric]:
        async with self._lock:
            found = await consumer_families(self.settings)
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(asyncio.to_thread(self._from_stores))
            try:
                found += await asyncio.wait_for(asyncio.shield(self._reading), timeout=STORE_TIMEOUT)
            except Exception as e:  # noqa: BLE001 - a store unreadable or slow: no sample (readiness says why)
                log.debug("metrics: stores not read (%s)", describe(e))
            restarts = restart_family(self.settings.supervisor_file)
            if restarts is not None:
                found.append(restarts)
            return found

    def _from_stores(self) -> list[Metric]:
        found: list[Metric] = []
        if self.api.dead_letters is not None:
            found.append(dead_letter_family(self.api.dead_letters))
        if self.api.escalation is not None:
            found += escalation_families(self.api.escalation)
        if self.api.views is not None:
            found.append(views_lag_family(self.api.views))
        return found


# --------------------------------------------------------------------- installing


def install(app: FastAPI) -> None:
    """HTTP figures for every request of ``app``."""
    app.add_middleware(HttpMetrics)  # type: ignore[arg-type]


def render(figures: list[Metric]) -> bytes:
    """Every process's metrics and this scrape's ``figures``, as Prometheus text."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Figures(figures))
    return metrics.render(registry)
