"""Alarms: a condition a person must act on, raised by the process that sees it.

An alarm has a name (``risk_signal_not_escalated``, ``relay_not_publishing``,
``consumer_not_advancing``, ``crash_looping``, ``stream_drift``,
``escalation_not_delivered``, ``subscription_not_delivering``) and a component
(``relay:care``, ``service:assessment``, ``risk-signals``, ...). Raising it logs one ERROR
line when it starts; clearing it logs one INFO line; while it is raised the gauge
``careplan_alarm_active{alarm,component}`` is 1, else 0, and the component's status record
(readiness) is degraded or down with the alarm's name and reason. A reason is a short
class ("NATS unreachable", "1 risk signal not escalated within 60 s"): never an id of a
client, never what anyone wrote. docs/operations.md says what to do about each.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from services.shared.health import DEGRADED, DOWN, OK, Status
from services.shared.metrics import ALARM_ACTIVE

log = logging.getLogger("careplan.alarms")

RISK_SIGNAL_NOT_ESCALATED = "risk_signal_not_escalated"
RELAY_NOT_PUBLISHING = "relay_not_publishing"
CONSUMER_NOT_ADVANCING = "consumer_not_advancing"
CRASH_LOOPING = "crash_looping"
STREAM_DRIFT = "stream_drift"
#: Every channel of every contact of an escalation's last level failed: nobody was told.
ESCALATION_NOT_DELIVERED = "escalation_not_delivered"
#: A subscription in ``error``, or with events waiting and no successful delivery for long.
SUBSCRIPTION_NOT_DELIVERING = "subscription_not_delivering"
NAMES = (RISK_SIGNAL_NOT_ESCALATED, RELAY_NOT_PUBLISHING, CONSUMER_NOT_ADVANCING, CRASH_LOOPING, STREAM_DRIFT,
         ESCALATION_NOT_DELIVERED, SUBSCRIPTION_NOT_DELIVERING)

_RANK = {OK: 0, DEGRADED: 1, DOWN: 2}
_lock = threading.Lock()
#: The alarms raised in this process, by (name, component).
_raised: dict[tuple[str, str], Alarm] = {}


class Alarm:
    """One alarm of one component in this process. ``status``: what readiness shows while
    it is raised (down, or degraded)."""

    def __init__(self, name: str, component: str, *, status: str = DOWN, metric: bool = True) -> None:
        self.name, self.component, self.status, self.metric = name, component, status, metric
        self.reason = ""
        #: When (monotonic) it was raised, or None.
        self.since: float | None = None
        if metric:
            ALARM_ACTIVE.labels(name, component).set(0)

    @property
    def active(self) -> bool:
        return self.since is not None

    def raise_(self, reason: str) -> bool:
        """Raised (again) with ``reason``; True when it starts now (the one ERROR line)."""
        self.reason = reason
        if self.since is not None:
            return False
        self.since = time.monotonic()
        with _lock:
            _raised[(self.name, self.component)] = self
        if self.metric:
            ALARM_ACTIVE.labels(self.name, self.component).set(1)
        log.error("ALARM %s on %s: %s (docs/operations.md, Alarms)", self.name, self.component, reason)
        return True

    def clear(self) -> bool:
        """Cleared; True when it was raised (the one INFO line)."""
        if self.since is None:
            return False
        took = time.monotonic() - self.since
        self.retire()
        log.info("alarm %s on %s cleared after %.0f s", self.name, self.component, took)
        return True

    def set(self, reason: str | None) -> None:
        """Raised with ``reason``, or cleared when it is None."""
        if reason is None:
            self.clear()
        else:
            self.raise_(reason)

    def retire(self) -> None:
        """The process stops watching (it is stopping): forgotten without a log line; the
        gauge goes with the process."""
        self.since = None
        with _lock:
            if _raised.get((self.name, self.component)) is self:
                del _raised[(self.name, self.component)]
        if self.metric:
            ALARM_ACTIVE.labels(self.name, self.component).set(0)

    def describe(self) -> str:
        return f"{self.name}: {self.reason}"


def raised(component: str | None = None) -> list[Alarm]:
    """The alarms raised in this process (of ``component``), most severe first."""
    with _lock:
        found = [a for (_, c), a in _raised.items() if component is None or c == component]
    return sorted(found, key=lambda a: -_RANK.get(a.status, 2))


def overlay(record: Status) -> Status:
    """A component's status record with its raised alarms: the worst of them outranks the
    record when it is at least as severe (the reason names the alarm)."""
    for alarm in raised(record.component):
        if _RANK.get(alarm.status, 2) >= _RANK.get(record.status, 0):
            return Status(record.component, record.state, alarm.status, alarm.describe(), record.at)
        break
    return record


def component_view(component: str, otherwise: dict[str, Any]) -> dict[str, Any]:
    """Readiness's ``{"status", "reason"}`` of a component watched in this process."""
    found = raised(component)
    if found:
        return {"status": found[0].status, "reason": found[0].describe()}
    return otherwise
