"""The risk-signal watchdog: every risk signal recorded is escalated, or a person is told.

It runs in the API process (a task of the app's lifespan), which reads every store for
readiness anyway. It follows each store's notification log from the beginning, keeping its
positions in memory, and decodes only the events of the classes it needs (selected by
topic): the risk signals, what lies between a signal and its escalation, and the
escalations. Matching follows the causation chain as the services record it:

- a questionnaire submission whose answers carry a risk signal (its instrument's suicide
  item above 0; the C-SSRS screener's high risk): its assessment decision is caused by it,
  its dead letter names it as the failed event;
- an assessment decision the escalation service escalates (C-SSRS high risk, PHQ-9 item 9,
  reliable deterioration, an unscorable submission with a risk signal);
- a crisis raised by a clinician;
- a dead letter flagged ``risk_signal`` (the fail-safe);
- an ``EscalationRaised`` names its source event (and is caused by it); walking back from
  it through decisions and dead letters marks every signal it follows from.

A signal older than ``alarm_risk_signal_seconds`` and not escalated raises
``risk_signal_not_escalated`` on the component ``risk-signals`` (readiness down); it
clears once all are escalated. Each escalation it sees recorded while it runs is observed
once in ``careplan_risk_signal_escalation_seconds{trigger}``. (A missed session at high
risk is escalated by the escalation service from the plan's risk history; the watchdog
does not judge those.) Nothing here may break a safety path: a failure is logged by its
class and the watchdog carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eventsourcing.utils import get_topic

from domain.assessment.instruments import instrument_named
from domain.events.assessment import AssessmentRejected, AssessmentScored
from domain.events.care_plan import CrisisRaisedByClinician
from domain.events.dead_letters import MessageDeadLettered
from domain.events.escalation import EscalationRaised
from domain.events.therapy_course import QuestionnaireSubmitted
from services.escalation.service import triggers
from services.registry import PROCESSES, STORES
from services.shared.alarms import CRASH_LOOPING, RISK_SIGNAL_NOT_ESCALATED, Alarm
from services.shared.health import DEGRADED, OK
from services.shared.metrics import ALARM_ACTIVE, RISK_TO_ESCALATION
from services.shared.settings import Settings

log = logging.getLogger(__name__)

COMPONENT = "risk-signals"
#: The classes the watchdog decodes; every other event is passed over by its topic.
CLASSES = (QuestionnaireSubmitted, CrisisRaisedByClinician, AssessmentScored, AssessmentRejected,
           MessageDeadLettered, EscalationRaised)
TOPICS = [get_topic(cls) for cls in CLASSES]
BATCH = 500
#: How long an escalation that follows from no known signal is tried again (its signal may
#: be read in a later pass, from a store read before the escalation store); after that it is
#: one the watchdog does not judge (a missed session at high risk).
UNMATCHED_SECONDS = 600.0


@dataclass
class Signal:
    recorded_at: datetime
    escalated: bool = False


class RiskMatcher:
    """The matching, in memory: fed events in each store's order (stores in any order)."""

    def __init__(self, *, observe_from: datetime | None = None) -> None:
        #: Escalations recorded at or after this moment are observed in the histogram.
        self.observe_from = observe_from
        self.signals: dict[str, Signal] = {}
        #: event id → the ids it follows from (decisions, dead letters)
        self.parents: dict[str, tuple[str, ...]] = {}
        #: escalations seen before what they follow from (read from another store first)
        self._unmatched: dict[str, EscalationRaised] = {}
        self._observed: set[tuple[str, str]] = set()

    def note(self, event: Any) -> None:
        event_id = str(event.event_id)
        if isinstance(event, QuestionnaireSubmitted):
            definition = instrument_named(event.instrument)
            if definition is not None and definition.risk_signal(event.answers):
                self._signal(event_id, event.timestamp)
        elif isinstance(event, CrisisRaisedByClinician):
            self._signal(event_id, event.timestamp)
        elif isinstance(event, (AssessmentScored, AssessmentRejected)):
            self.parents[event_id] = tuple(i for i in (event.causation_id,) if i)
            if triggers(event):
                self._signal(event_id, event.timestamp)
        elif isinstance(event, MessageDeadLettered):
            self.parents[event_id] = tuple(i for i in (event.failed_event_id, event.causation_id) if i)
            if event.risk_signal:
                self._signal(event_id, event.timestamp)
        elif isinstance(event, EscalationRaised) and not self._match(event):
            self._unmatched[event_id] = event

    def _signal(self, event_id: str, at: datetime) -> None:
        if event_id not in self.signals:
            self.signals[event_id] = Signal(at)

    def retry(self, now: datetime) -> None:
        """After a pass: escalations read before what they follow from are matched now;
        those unmatched for ``UNMATCHED_SECONDS`` are let go."""
        for esc_id, escalation in list(self._unmatched.items()):
            if self._match(escalation) or (now - escalation.timestamp).total_seconds() > UNMATCHED_SECONDS:
                del self._unmatched[esc_id]

    def _ancestors(self, starts: tuple[str, ...]) -> list[str]:
        seen: list[str] = []
        frontier = [s for s in starts if s]
        while frontier:
            current = frontier.pop()
            if current in seen:
                continue
            seen.append(current)
            frontier += self.parents.get(current, ())
        return seen

    def _match(self, escalation: EscalationRaised) -> bool:
        """Marks the signals ``escalation`` follows from; False when it follows from none known."""
        met = [i for i in self._ancestors((escalation.source_event_id, escalation.causation_id or ""))
               if i in self.signals]
        if not met:
            return False
        for signal_id in met:
            self.signals[signal_id].escalated = True
        root = min(met, key=lambda i: self.signals[i].recorded_at)
        key = (root, str(escalation.event_id))
        if (self.observe_from is not None and escalation.timestamp >= self.observe_from
                and key not in self._observed):
            self._observed.add(key)
            seconds = (escalation.timestamp - self.signals[root].recorded_at).total_seconds()
            RISK_TO_ESCALATION.labels(escalation.trigger.value).observe(max(seconds, 0.0))
        return True

    def pending(self, now: datetime, older_than: float) -> list[str]:
        """Signals recorded more than ``older_than`` seconds before ``now`` and not escalated
        (a signal that follows from another signal counts as that one)."""
        found = []
        for signal_id, signal in self.signals.items():
            if signal.escalated or (now - signal.recorded_at).total_seconds() < older_than:
                continue
            if any(a in self.signals for a in self._ancestors(self.parents.get(signal_id, ()))):
                continue
            found.append(signal_id)
        return found


#: The stores that may hold a risk signal or its escalation. The subscriptions store holds
#: neither: it passes events on, and its dead letters never carry a risk signal (the
#: escalation service has its own consumer of every signal).
WATCHED_STORES: tuple[str, ...] = tuple(store for store in STORES if store != "subscriptions")


class RiskWatchdog:
    """Follows the stores and keeps the ``risk_signal_not_escalated`` alarm; one per API process."""

    def __init__(self, settings: Settings, *, stores: tuple[str, ...] = WATCHED_STORES) -> None:
        self.settings = settings
        self.store_names = stores
        self.matcher = RiskMatcher(observe_from=datetime.now(UTC))
        self.alarm = Alarm(RISK_SIGNAL_NOT_ESCALATED, COMPONENT)
        self.positions: dict[str, int] = dict.fromkeys(stores, 0)
        self._stores: dict[str, Any] = {}
        #: None until the first pass over every store; then the class of the last failure, or "".
        self.failure: str | None = None
        self.crash_loops = CrashLoopAlarms(settings)

    # ----------------------------------------------------------------- reading

    def read(self) -> int:
        """One pass: every store's new events of the relevant classes; how many were read."""
        read = 0
        for name in self.store_names:
            read += self._read_store(name)
        self.matcher.retry(datetime.now(UTC))
        self.failure = ""
        return read

    def _read_store(self, name: str) -> int:
        if name not in self._stores:
            self._stores[name] = StoreReader(self.settings, name)
        stores = self._stores[name]
        end = stores.recorder.max_notification_id() or 0
        read = 0
        while self.positions[name] < end:
            batch = stores.recorder.select_notifications(start=self.positions[name] + 1, limit=BATCH, stop=end,
                                                         topics=TOPICS)
            for notification in batch:
                self.matcher.note(stores.mapper.to_domain_event(notification))
                read += 1
            self.positions[name] = batch[-1].id if len(batch) == BATCH else end
        return read

    def check(self, now: datetime | None = None) -> None:
        threshold = self.settings.alarm_risk_signal_seconds
        late = self.matcher.pending(now or datetime.now(UTC), threshold)
        if late:
            s = "" if len(late) == 1 else "s"
            self.alarm.raise_(f"{len(late)} risk signal{s} not escalated within {threshold:g} s")
        else:
            self.alarm.clear()

    def component(self) -> dict[str, str]:
        """Readiness's view of ``risk-signals``."""
        if self.alarm.active:
            return {"status": self.alarm.status, "reason": self.alarm.describe()}
        if self.failure is None:
            return {"status": DEGRADED, "reason": "watchdog starting"}
        if self.failure:
            return {"status": DEGRADED, "reason": f"watchdog cannot read the stores ({self.failure})"}
        return {"status": OK, "reason": "every risk signal escalated in time"}

    # ----------------------------------------------------------------- running

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.read)
            except Exception as e:  # noqa: BLE001 - never stops: logged by class, tried again
                if self.failure != type(e).__name__:
                    log.warning("risk-signal watchdog: reading the stores failed (%s); trying again", type(e).__name__)
                self.failure = type(e).__name__
                self._forget()
            try:
                self.check()
                self.crash_loops.refresh()
            except Exception as e:  # noqa: BLE001 - never stops: logged by class, tried again
                log.warning("risk-signal watchdog: check failed (%s)", type(e).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.settings.alarm_check_seconds)

    def _forget(self) -> None:
        for stores in self._stores.values():
            with contextlib.suppress(Exception):
                stores.close()
        self._stores.clear()

    def close(self) -> None:
        self._forget()
        self.alarm.retire()


class StoreReader:
    """One store's notification log and mapper, read only: it creates no table (a store not
    created yet by its application is a failure to read, tried again), and keeps no
    tracking of its own."""

    def __init__(self, settings: Settings, application: str) -> None:
        from eventsourcing.persistence import InfrastructureFactory
        from eventsourcing.utils import Environment

        from services.shared.persistence import eventsourcing_env

        env = eventsourcing_env(settings, application) | {"CREATE_TABLE": "n"}
        self.factory = InfrastructureFactory.construct(Environment(application, env))
        try:
            self.recorder = self.factory.application_recorder()
            self.mapper = self.factory.mapper(transcoder=self.factory.transcoder())
        except BaseException:
            self.factory.close()
            raise

    def close(self) -> None:
        self.factory.close()


class CrashLoopAlarms:
    """``careplan_alarm_active{alarm="crash_looping"}`` of `careplan up`'s children, from the
    supervisor's file (the supervisor logs the alarm; the API, which serves /metrics, sets
    the gauge). The same family as every other alarm, so it is set, not collected apart."""

    def __init__(self, settings: Settings) -> None:
        self.path = settings.supervisor_file
        self._known: set[str] = set()

    def refresh(self) -> None:
        from services.api.health import read_supervisor_file  # it owns the watchdog

        if self.path is None:
            return
        children = read_supervisor_file(self.path)
        for name in {p.name for p in PROCESSES} | set(children) | self._known:
            state = str(children.get(name, {}).get("state", ""))
            ALARM_ACTIVE.labels(CRASH_LOOPING, name).set(1 if state == "crash-looping" else 0)
            self._known.add(name)


def lifespan(api: Any) -> Any:
    """The app's lifespan: the readiness's watchdog runs while the API serves."""

    def run(_: object) -> Any:
        return watching(getattr(api.readiness, "watchdog", None))

    return run


@contextlib.asynccontextmanager
async def watching(watchdog: RiskWatchdog | None) -> AsyncIterator[None]:
    """The watchdog as a background task for as long as the API serves."""
    if watchdog is None:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(watchdog.run(stop))
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, timeout=10)
