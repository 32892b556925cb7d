"""Escalations reach people: each level's notification delivered to that level's contacts,
its outcome recorded on the crisis.

What is to be delivered is read from the service's own log, not kept in memory alone: a
``EscalationLevelNotified`` names a delivery for every channel of every contact of its level
(services/escalation/channels.py gives each a derived id), and an
``EscalationNotificationDelivered`` / ``...Failed`` with that id closes it. The notifier
follows the log from the start at every start, so a delivery whose outcome was not
recorded (the process stopped between sending and recording) is sent again, with the same
id; one whose crisis was acknowledged, resolved or moved to another level meanwhile is
dropped. Sending happens outside any store transaction (in a small thread pool, every due
delivery at once); the outcomes are recorded one by one afterwards.

When every delivery of the current notification failed, the crisis notifies its next level
at once (domain/escalation/crisis.py); at the last level there is no next one until the
acknowledgement timeout loops back to the first, and the alarm ``escalation_not_delivered``
tells a person at the console meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import IntegrityError, ProcessRecorder
from eventsourcing.utils import get_topic

from domain.base import Actor, AggregateRoot, CommandContext, quote
from domain.catalogues.escalation import DeliveryChannel
from domain.escalation.crisis import Crisis, CrisisStatus
from domain.escalation.policy import EmailChannel, EscalationPolicy, WebhookChannel
from domain.events.escalation import (
    CrisisResolved,
    EscalationAcknowledged,
    EscalationLevelNotified,
    EscalationNotificationDelivered,
    EscalationNotificationFailed,
)
from services.escalation.channels import Notice, Outcome, deliver, notification_id
from services.shared import metrics
from services.shared.alarms import ESCALATION_NOT_DELIVERED, Alarm
from services.shared.settings import Settings
from services.shared.timers import Timers


class Notifying(Protocol):
    """What the notifier needs of the escalation application."""

    settings: Settings
    policy: EscalationPolicy
    timers: Timers
    actor: Actor
    mapper: Any

    @property
    def process_recorder(self) -> ProcessRecorder: ...
    def clock(self) -> datetime: ...
    def find(self, cls: type[AggregateRoot], aggregate_id: UUID) -> Any: ...
    def save(self, *aggregates: Any) -> Any: ...
    def forget_cached(self) -> None: ...

log = logging.getLogger(__name__)

COMPONENT = "service:escalation"
_TOPICS = [get_topic(cls) for cls in (EscalationLevelNotified, EscalationNotificationDelivered,
                                      EscalationNotificationFailed, EscalationAcknowledged, CrisisResolved)]
_PAGE = 500


@dataclass(frozen=True)
class Delivery:
    """One channel of one contact, for one notification."""

    id: UUID
    crisis_id: UUID
    notified_event_id: UUID
    level: int
    level_name: str
    round: int
    ack_due: datetime
    contact: str
    channel: WebhookChannel | EmailChannel


def deliveries_of(policy: EscalationPolicy, event: EscalationLevelNotified) -> list[Delivery]:
    level = policy.level(event.level - 1)
    return [
        Delivery(id=notification_id(event.event_id, contact.id, channel), crisis_id=event.originator_id,
                 notified_event_id=event.event_id, level=event.level, level_name=event.level_name, round=event.round,
                 ack_due=event.ack_due, contact=contact.id, channel=channel)
        for contact, channel in level.deliveries()
    ]


class Notifier:
    """The escalation service's deliveries (run from its timer tick)."""

    def __init__(self, app: Notifying, *,
                 send: Callable[[WebhookChannel | EmailChannel, Notice, Settings], Outcome] = deliver) -> None:
        self.app = app
        self.send = send
        #: The position in the service's log read so far.
        self.after = 0
        #: Deliveries with no recorded outcome, by id.
        self.pending: dict[UUID, Delivery] = {}
        #: Crises whose last level could not be reached by any channel.
        self.unreached: set[UUID] = set()
        self.alarm = Alarm(ESCALATION_NOT_DELIVERED, COMPONENT)
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="escalation-notify")
        metrics.guarded("escalation notifications", self._show_figures)
        if not any(level.deliveries() for level in app.policy.levels):
            log.warning("the escalation policy names no delivery channel: notifications reach no one by themselves "
                        "(docs/operations.md, Contacts and channels)")

    @staticmethod
    def _show_figures() -> None:
        """Every channel's figures, at 0 from the start (a scrape shows them before the first crisis)."""
        for channel in DeliveryChannel:
            metrics.ESCALATION_NOTIFICATION_LATENCY.labels(channel.value)
            for outcome in ("delivered", "failed"):
                metrics.ESCALATION_NOTIFICATIONS.labels(channel.value, outcome)

    def reset(self) -> None:
        """The store was mended under the service: read it again from the start."""
        self.after = 0
        self.pending.clear()
        self.unreached.clear()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.alarm.retire()

    # ----------------------------------------------------------------- the log

    def read_log(self) -> None:
        """Follows the service's log: new notifications add deliveries, outcomes and
        decisions close them."""
        recorder, mapper, policy = self.app.process_recorder, self.app.mapper, self.app.policy
        touched: set[UUID] = set()
        while True:
            page = recorder.select_notifications(start=self.after + 1, limit=_PAGE, topics=_TOPICS)
            for notification in page:
                event = mapper.to_domain_event(notification)
                crisis = event.originator_id
                if isinstance(event, EscalationLevelNotified):
                    self._drop(crisis)  # a notification supersedes the crisis's previous one
                    for delivery in deliveries_of(policy, event):
                        self.pending[delivery.id] = delivery
                elif isinstance(event, (EscalationNotificationDelivered, EscalationNotificationFailed)):
                    self.pending.pop(event.notification_id, None)
                    if isinstance(event, EscalationNotificationDelivered):
                        self.unreached.discard(crisis)
                    else:
                        touched.add(crisis)
                else:  # acknowledged or resolved: a person has it
                    self._drop(crisis)
                    self.unreached.discard(crisis)
                self.after = notification.id
            if len(page) < _PAGE:
                break
        for cid in touched:
            found: Crisis | None = self.app.find(Crisis, cid)
            if found is not None and self.last_level_unreached(found):
                self.unreached.add(cid)

    def _drop(self, crisis_id: UUID) -> None:
        for key in [k for k, d in self.pending.items() if d.crisis_id == crisis_id]:
            del self.pending[key]

    def expected(self, crisis: Crisis) -> set[UUID]:
        """The delivery ids of the crisis's current notification."""
        level = self.app.policy.level(crisis.level - 1)
        assert crisis.notified_event_id is not None
        return {notification_id(crisis.notified_event_id, contact.id, channel) for contact, channel in level.deliveries()}

    def last_level_unreached(self, crisis: Crisis) -> bool:
        return (crisis.notified_event_id is not None and crisis.level >= len(self.app.policy.levels)
                and crisis.level_unreached(self.expected(crisis)))

    # ----------------------------------------------------------------- delivering

    def run(self) -> int:
        """Delivers what is due and records the outcomes; a level that could not be reached
        is followed by the next at once, in the same run. Returns how many outcomes were recorded."""
        recorded = 0
        for _ in range(len(self.app.policy.levels) + 1):
            self.read_log()
            due = self._due()
            if not due:
                break
            outcomes = list(self.pool.map(self._send, due))
            for delivery, outcome in outcomes:
                recorded += self._record(delivery, outcome)
        self._sound()
        return recorded

    def _send(self, due: tuple[Delivery, str]) -> tuple[Delivery, Outcome]:
        delivery, severity = due
        started = time.monotonic()
        try:
            return delivery, self.send(delivery.channel, self._notice(delivery, severity), self.app.settings)
        except Exception as e:  # noqa: BLE001 - recorded as this delivery's failure; the others go on
            return delivery, Outcome(ok=False, status=None, error_class=quote(type(e).__name__, 100), attempts=1,
                                     latency_ms=(time.monotonic() - started) * 1000)

    def _due(self) -> list[tuple[Delivery, str]]:
        """Pending deliveries of crises still waiting for acknowledgement at that
        notification, with the crisis's severity."""
        due = []
        crises: dict[UUID, Crisis | None] = {}
        for delivery in list(self.pending.values()):
            if delivery.crisis_id not in crises:
                crises[delivery.crisis_id] = self.app.find(Crisis, delivery.crisis_id)
            crisis = crises[delivery.crisis_id]
            if (crisis is None or crisis.status is not CrisisStatus.ESCALATING
                    or crisis.notified_event_id != delivery.notified_event_id):
                del self.pending[delivery.id]
                continue
            due.append((delivery, crisis.severity.value))
        return due

    def _notice(self, delivery: Delivery, severity: str) -> Notice:
        template = self.app.settings.escalation_link_template
        return Notice(
            notification_id=delivery.id, crisis_id=delivery.crisis_id, severity=severity, level=delivery.level,
            level_name=delivery.level_name, round=delivery.round, acknowledge_by=delivery.ack_due,
            contact=delivery.contact, link=template.replace("{crisis_id}", str(delivery.crisis_id)) if template else None,
        )

    def _record(self, delivery: Delivery, outcome: Outcome) -> int:
        """Records one outcome on the crisis (loaded afresh: others may have written it)."""
        for attempt in range(3):
            crisis: Crisis | None = self.app.find(Crisis, delivery.crisis_id)
            if crisis is None:
                return 0
            ctx = CommandContext(actor=self.app.actor, at=self.app.clock(), correlation_id=crisis.correlation_id,
                                 causation_id=str(delivery.notified_event_id))
            result = crisis.record_delivery(
                notification_id=delivery.id, notified_event_id=delivery.notified_event_id, level=delivery.level,
                round_=delivery.round, contact=delivery.contact,
                channel=delivery.channel.kind, attempts=outcome.attempts, latency_ms=outcome.latency_ms,
                status=outcome.status, error_class=outcome.error_class, expected=self.expected(crisis),
                policy=self.app.policy, ctx=ctx,
            )
            try:
                self.app.save(crisis)
            except IntegrityError:
                self.app.forget_cached()  # written meanwhile (an acknowledgement): read it again
                if attempt == 2:
                    raise
                continue
            break
        self.pending.pop(delivery.id, None)
        kind = delivery.channel.kind.value
        metrics.guarded("escalation notifications", lambda: (
            metrics.ESCALATION_NOTIFICATIONS.labels(kind, "delivered" if outcome.ok else "failed").inc(),
            metrics.ESCALATION_NOTIFICATION_LATENCY.labels(kind).observe(outcome.latency_ms / 1000)))
        log.log(logging.INFO if outcome.ok else logging.WARNING,
                "crisis %s level %d: %s delivery to contact %s %s", delivery.crisis_id, delivery.level,
                delivery.channel.kind.value, delivery.contact,
                "delivered" if outcome.ok else f"failed ({outcome.error_class}, {outcome.attempts} attempts)")
        if result == "escalated":
            self.app.timers.arm(crisis.id, crisis.ack_due)
            log.warning("crisis %s: nobody at level %d could be reached; level %d notified at once",
                        crisis.id, delivery.level, crisis.level)
        elif result == "unreached":
            self.unreached.add(crisis.id)
        elif result == "delivered":
            self.unreached.discard(crisis.id)
        return 1

    def _sound(self) -> None:
        if self.unreached:
            n = len(self.unreached)
            self.alarm.raise_(f"{n} {'crisis' if n == 1 else 'crises'} reached no contact at the last level")
        else:
            self.alarm.clear()
