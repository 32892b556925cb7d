"""The system's Prometheus metrics, declared in one place (``prometheus-client``).

Every process of `careplan up` records into its own files under
``PROMETHEUS_MULTIPROC_DIR`` (the supervisor sets it for its children, in the run's own
folder, fresh on each start); the API's ``GET /metrics`` collects them all with
``prometheus_client.multiprocess.MultiProcessCollector``, so one scrape shows the whole
system. A process run alone (a test, a service started by hand with no such folder) keeps
its metrics in memory, in the default registry, and ``/metrics`` shows its own.

Conventions: the ``careplan_`` prefix, the unit in the name, ``_total`` for counters. Label
values are names from the code (routes as templates, command and event class names,
services, stores, severities, outcome and error classes), never an id or free text.

A gauge that a process sets from what it sees takes ``livemax`` in multiprocess mode: the
value of the processes alive now (two instances of one service report the same figures)
and a dead process's value goes with it (``mark_process_dead`` by the supervisor).

Figures that must stay true while the process they concern is down (a service's backlog,
open dead letters and escalations, the supervisor's restarts) are not kept by any process:
the API computes them at scrape time (``services/api/metrics.py``), under the names and
help texts of :data:`SCRAPED`.

Metrics never make the work they measure fail: :func:`guarded` runs an update, and an
error in it is logged once (per place) and swallowed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as _multiprocess

#: Set (to a folder) in every process whose metrics the API's /metrics should show.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Seconds from a risk signal's recording to its EscalationRaised: the path is meant to take
#: well under a second; a minute is already an incident.
RISK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)
#: Seconds from an escalation's raising to a person's acknowledgement.
ACKNOWLEDGE_BUCKETS = (60, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
#: Seconds a service spends on one message (or the batch it came in).
PROCESSING_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# --------------------------------------------------------------------- HTTP API

HTTP_REQUESTS = Counter(
    "careplan_http_requests_total", "HTTP requests answered by the API, by route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "careplan_http_request_duration_seconds", "Time to answer an HTTP request, by route template.",
    ["method", "route"],
)

# --------------------------------------------------------------------- commands

COMMANDS = Counter(
    "careplan_commands_total",
    "Commands handled, by application, command class and outcome (accepted, refused: a domain or "
    "validation error answered to the caller, failed: an error of the system).",
    ["application", "command", "outcome"],
)

# --------------------------------------------------------------------- relays

RELAY_LAG = Gauge(
    "careplan_relay_lag_events", "Events in a store's log not yet acknowledged by the stream.",
    ["store"], multiprocess_mode="livemax",
)
RELAY_PUBLISHED = Counter(
    "careplan_relay_published_events_total", "Events a relay published and the stream acknowledged.", ["store"],
)
RELAY_ERRORS = Counter(
    "careplan_relay_errors_total",
    "Relay failures by kind: nats (NATS unreachable or refusing), event (an event in the store cannot be "
    "read or mapped, e.g. a wrong cipher key), halt (the store disagrees with the stream), streams (drift).",
    ["store", "kind"],
)
CHAIN_HEAD_AGE = Gauge(
    "careplan_chain_head_publication_age_seconds",
    "Seconds since a store's hash-chain head was last published to CARE_AUDIT (0 until the first).",
    ["store"], multiprocess_mode="livemax",
)

# --------------------------------------------------------------------- consumers

CONSUMER_PROCESSING = Histogram(
    "careplan_consumer_processing_seconds", "Time a service spends deciding and recording one message.",
    ["service"], buckets=PROCESSING_BUCKETS,
)
CONSUMER_MESSAGES = Counter(
    "careplan_consumer_messages_total",
    "Messages a service finished with, by outcome (processed, duplicate, dead_lettered, retried).",
    ["service", "outcome"],
)

# --------------------------------------------------------------------- dead letters

DEAD_LETTERS = Counter(
    "careplan_dead_letters_total", "Messages a service set aside as dead letters.", ["service"],
)

# --------------------------------------------------------------------- escalation

ESCALATION_ACKNOWLEDGE = Histogram(
    "careplan_escalation_acknowledge_seconds", "Time from an escalation's raising to its acknowledgement.",
    ["severity"], buckets=ACKNOWLEDGE_BUCKETS,
)
ESCALATION_TIMEOUTS = Counter(
    "careplan_escalation_timeouts_total",
    "Acknowledgement deadlines that passed (the escalation went to the next level).", ["severity"],
)
ESCALATION_NOTIFICATIONS = Counter(
    "careplan_escalation_notifications_total",
    "Deliveries of escalation notifications to the policy's contacts, by channel and outcome (delivered, failed).",
    ["channel", "outcome"],
)
ESCALATION_NOTIFICATION_LATENCY = Histogram(
    "careplan_escalation_notification_seconds",
    "Time a delivery of an escalation notification took, its retries included.", ["channel"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RISK_TO_ESCALATION = Histogram(
    "careplan_risk_signal_escalation_seconds",
    "Time from a risk signal's recording (a positive suicide item, a crisis raised, a fail-safe) to its "
    "EscalationRaised, by trigger.",
    ["trigger"], buckets=RISK_BUCKETS,
)

# --------------------------------------------------------------------- processes and alarms

ALARM_ACTIVE = Gauge(
    "careplan_alarm_active", "1 while an alarm is raised for a component, else 0 (see docs/operations.md).",
    ["alarm", "component"], multiprocess_mode="livemax",
)


# --------------------------------------------------------------------- computed at scrape time

#: name → (type, help, labels) of what the API computes when scraped (services/api/metrics.py).
SCRAPED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "careplan_consumer_pending_messages": (
        "gauge", ("Messages on the stream the service's durable consumer has not yet been given (JetStream "
                  "consumer info, read by the API when scraped: it grows while the service is down)."), ("service",)),
    "careplan_consumer_ack_pending_messages": (
        "gauge", "Messages given to the service and not yet acknowledged (JetStream consumer info).", ("service",)),
    "careplan_views_lag_events": (
        "gauge", ("Events in a store's log the read models (services/views) have not applied yet, read by the API "
                  "(the views process keeps it near 0; it grows while that process is down)."), ("store",)),
    "careplan_dead_letters_open": (
        "gauge", ("Dead letters not yet redriven (open, redrive requested or redrive failed), per service, "
                  "read from the stores by the API."), ("service",)),
    "careplan_escalations_open": (
        "gauge", "Escalations raised and not yet resolved, by severity, read from the escalation store by the API.",
        ("severity",)),
    "careplan_escalation_oldest_unacknowledged_age_seconds": (
        "gauge", "Age of the oldest escalation no one has acknowledged yet (0 when there is none).", ()),
    "careplan_process_restarts_total": (
        "counter", "Times `careplan up`'s supervisor restarted a child process (from its supervisor file).",
        ("process",)),
}

log = logging.getLogger(__name__)
_failed: set[str] = set()


def guarded(where: str, update: Callable[[], Any]) -> None:
    """Runs a metric update; an error is logged once per ``where`` and never propagates (a
    metric must not make an escalation, a decision or a publish fail)."""
    try:
        update()
    except Exception as e:  # noqa: BLE001 - metrics are never worth a failure of the work they measure
        if where not in _failed:
            _failed.add(where)
            log.warning("metrics: updating %s failed (%s); further failures there are not logged", where,
                        type(e).__name__)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def render(extra: CollectorRegistry | None = None) -> bytes:
    """The text exposition of every process's metrics (multiprocess mode) or of this
    process's (otherwise), plus ``extra`` (collectors the API adds, e.g. the supervisor's)."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry)
        text = generate_latest(registry)
    else:
        from prometheus_client import REGISTRY

        text = generate_latest(REGISTRY)
    if extra is not None:
        text += generate_latest(extra)
    return text


def mark_process_dead(pid: int, path: str | os.PathLike[str] | None = None) -> None:
    """A child exited: its live gauges go (its counters and histograms stay in the sums).
    ``path``: the children's folder (the supervisor's own environment does not name it)."""
    folder = os.fspath(path) if path is not None else multiprocess_dir()
    if folder:
        _multiprocess.mark_process_dead(pid, folder)


class RelayFigures:
    """One relay's metrics, its labelled children made once (a publish costs one increment)."""

    def __init__(self, store: str) -> None:
        self.store = store
        self._published = RELAY_PUBLISHED.labels(store)
        self._errors = {kind: RELAY_ERRORS.labels(store, kind) for kind in ("nats", "event", "halt", "streams")}
        self._lag = RELAY_LAG.labels(store)
        self._head_age = CHAIN_HEAD_AGE.labels(store)

    def published(self, count: int = 1) -> None:
        guarded("relay published", lambda: self._published.inc(count))

    def error(self, kind: str) -> None:
        guarded("relay errors", self._errors[kind].inc)

    def measured(self, lag: int, head_age: float) -> None:
        def update() -> None:
            self._lag.set(max(0, lag))
            self._head_age.set(head_age)

        guarded("relay lag", update)


class ConsumerFigures:
    """One service consumer's metrics, its labelled children made once (and shown at 0 from the start)."""

    OUTCOMES = ("processed", "duplicate", "dead_lettered", "retried")

    def __init__(self, service: str) -> None:
        self._processing = CONSUMER_PROCESSING.labels(service)
        self._outcomes = {outcome: CONSUMER_MESSAGES.labels(service, outcome) for outcome in self.OUTCOMES}
        self._dead_letters = DEAD_LETTERS.labels(service)

    def processed(self, count: int, seconds: float) -> None:
        """``count`` messages decided and recorded together in ``seconds``: each took its share."""
        def update() -> None:
            share = seconds / count
            for _ in range(count):
                self._processing.observe(share)
            self._outcomes["processed"].inc(count)

        if count:
            guarded("consumer processed", update)

    def outcome(self, outcome: str) -> None:
        guarded("consumer outcome", self._outcomes[outcome].inc)

    def dead_lettered(self) -> None:
        def update() -> None:
            self._outcomes["dead_lettered"].inc()
            self._dead_letters.inc()

        guarded("dead letters", update)


class EscalationFigures:
    """The escalation service's metrics by severity (each shown at 0 from the start)."""

    def __init__(self, severities: list[str]) -> None:
        self._timeouts = {s: ESCALATION_TIMEOUTS.labels(s) for s in severities}
        self._acknowledge = {s: ESCALATION_ACKNOWLEDGE.labels(s) for s in severities}

    def timed_out(self, severity: str) -> None:
        guarded("escalation timeouts", lambda: self._timeouts[severity].inc())

    def acknowledged(self, severity: str, seconds: float) -> None:
        guarded("escalation acknowledge", lambda: self._acknowledge[severity].observe(max(0.0, seconds)))
