"""Crisis: one escalation, from the trigger to its resolution.

Its id is derived from the triggering event, so the same trigger seen twice raises one
crisis. Timers are its own data: each notification records when acknowledgement is due,
so after a restart the service re-arms them from the stored state."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from enum import Enum
from typing import Literal, Self
from uuid import UUID, uuid5

from pydantic import Field

from domain.base import Actor, AggregateRoot, CommandContext, Role, require_reason, when
from domain.catalogues.escalation import SEVERITY_OF, DeliveryChannel, EscalationSeverity, EscalationTrigger
from domain.errors import DomainError, NotAuthorisedError
from domain.escalation.policy import EscalationPolicy
from domain.events.escalation import (
    CrisisResolved,
    EscalationAcknowledged,
    EscalationLevelNotified,
    EscalationNotificationDelivered,
    EscalationNotificationFailed,
    EscalationRaised,
    EscalationTimedOut,
)

#: Who may acknowledge or resolve a crisis, on every path (API, Python, the CLI's --local):
#: a supervisor. A clinician raises a crisis and lets escalation hold it; the operator at the
#: machine (``careplan ... --local``) keeps the system running but makes no clinical decision.
CRISIS_DECIDERS = frozenset({Role.SUPERVISOR})


def _require_decider(actor: Actor, what: str) -> None:
    if actor.role not in CRISIS_DECIDERS:
        msg = f"Only a supervisor may {what}; {actor.id} acted as {actor.role.value}."
        raise NotAuthorisedError(msg)


CRISIS_NAMESPACE = UUID("8d2f4c9e-1b7a-4f3e-9c55-0e6a7b8d9f10")


class EscalationStateError(DomainError):
    code = "escalation-state"


class CrisisStatus(str, Enum):
    ESCALATING = "escalating"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def crisis_id(source_event_id: str) -> UUID:
    return uuid5(CRISIS_NAMESPACE, f"crisis:{source_event_id}")


class Crisis(AggregateRoot):
    created_event = EscalationRaised

    #: None only for a fail-safe crisis whose message could not be read for them.
    plan_id: UUID | None
    client_id: str | None
    trigger: EscalationTrigger
    severity: EscalationSeverity
    status: CrisisStatus = CrisisStatus.ESCALATING
    #: 1-based level last notified, the round through the levels, and when its ack is due.
    level: int = 0
    round: int = 0
    ack_due: datetime | None = None
    #: The story this crisis belongs to, and the notification whose timer is running.
    correlation_id: UUID
    notified_event_id: UUID | None = None
    #: Deliveries (notification ids) of the current notification that reached their channel,
    #: and those that failed.
    delivered: list[UUID] = Field(default_factory=list)
    failed: list[UUID] = Field(default_factory=list)

    @classmethod
    def raise_(
        cls,
        *,
        plan_id: UUID | None,
        client_id: str | None,
        trigger: EscalationTrigger,
        source_event_id: str,
        reason: str,
        policy: EscalationPolicy,
        ctx: CommandContext,
    ) -> Self:
        crisis = cls._start(
            EscalationRaised,
            ctx,
            crisis_id(source_event_id),
            plan_id=plan_id,
            client_id=client_id,
            trigger=trigger,
            severity=SEVERITY_OF[trigger],
            source_event_id=source_event_id,
            reason=require_reason(reason, "raise an escalation"),
        )
        crisis._notify(policy, 1, 1, ctx)
        return crisis

    @classmethod
    def _from_created(cls, event: EscalationRaised) -> Self:  # type: ignore[override]
        return cls._created(
            event,
            plan_id=event.plan_id,
            client_id=event.client_id,
            trigger=event.trigger,
            severity=event.severity,
            correlation_id=event.correlation_id,
        )

    def _notify(self, policy: EscalationPolicy, level: int, round_: int, ctx: CommandContext) -> None:
        target = policy.level(level - 1)
        self._trigger(
            EscalationLevelNotified,
            ctx,
            level=level,
            level_name=target.name,
            contact=target.contact,
            round=round_,
            ack_due=ctx.at + policy.ack_timeouts[self.severity],
        )

    @when(EscalationLevelNotified)
    def _notified(self, event: EscalationLevelNotified) -> None:
        self.level, self.round, self.ack_due = event.level, event.round, event.ack_due
        self.notified_event_id = event.event_id
        self.delivered, self.failed = [], []

    def record_delivery(
        self,
        *,
        notification_id: UUID,
        notified_event_id: UUID,
        level: int,
        round_: int,
        contact: str,
        channel: DeliveryChannel,
        attempts: int,
        latency_ms: float,
        status: int | None,
        error_class: str | None,
        expected: Collection[UUID],
        policy: EscalationPolicy,
        ctx: CommandContext,
    ) -> Literal["delivered", "failed", "escalated", "unreached"]:
        """The outcome of one delivery of a notification (``error_class`` None: delivered).
        When every delivery (``expected``) of the current notification has failed, nobody at
        this level was told: the next level is notified at once, without waiting for the
        acknowledgement timeout ("escalated"); at the last level there is no next one before
        the timeout loops back ("unreached": the service raises an alarm)."""
        common = {"notification_id": notification_id, "notified_event_id": notified_event_id, "level": level,
                  "round": round_, "contact": contact,
                  "channel": channel, "attempts": attempts, "latency_ms": round(latency_ms, 1), "status": status}
        if error_class is None:
            self._trigger(EscalationNotificationDelivered, ctx, **common)
            return "delivered"
        failed = self._trigger(EscalationNotificationFailed, ctx, error_class=error_class, **common)
        if not self.level_unreached(expected) or notified_event_id != self.notified_event_id:
            return "failed"
        if self.level >= len(policy.levels):
            return "unreached"
        then = ctx.model_copy(update={"causation_id": str(failed.event_id)})
        self._notify(policy, self.level + 1, self.round, then)
        return "escalated"

    def level_unreached(self, expected: Collection[UUID]) -> bool:
        """Whether the current notification, still awaiting acknowledgement, failed on every
        one of its deliveries ``expected`` (and there were some)."""
        return (self.status is CrisisStatus.ESCALATING and bool(expected) and not self.delivered
                and set(expected) <= set(self.failed))

    @when(EscalationNotificationDelivered)
    def _delivered(self, event: EscalationNotificationDelivered) -> None:
        if event.notified_event_id == self.notified_event_id:
            self.delivered = [*self.delivered, event.notification_id]

    @when(EscalationNotificationFailed)
    def _failed(self, event: EscalationNotificationFailed) -> None:
        if event.notified_event_id == self.notified_event_id:
            self.failed = [*self.failed, event.notification_id]

    def time_out(self, *, policy: EscalationPolicy, ctx: CommandContext) -> bool:
        """At or after the due time with no acknowledgement: escalate to the next level,
        looping to the first after the last. Returns whether anything happened."""
        if self.status is not CrisisStatus.ESCALATING or self.ack_due is None or ctx.at < self.ack_due:
            return False
        self._trigger(EscalationTimedOut, ctx, level=self.level, ack_due=self.ack_due)
        last = len(policy.levels)
        next_level, next_round = (1, self.round + 1) if self.level >= last else (self.level + 1, self.round)
        self._notify(policy, next_level, next_round, ctx)
        return True

    def acknowledge(self, *, reason: str | None, ctx: CommandContext) -> None:
        _require_decider(ctx.actor, "acknowledge an escalation")
        if self.status is not CrisisStatus.ESCALATING:
            msg = f"Crisis {self.id} is {self.status.value}; only an escalating crisis can be acknowledged."
            raise EscalationStateError(msg)
        self._trigger(EscalationAcknowledged, ctx, level=self.level, reason=require_reason(reason, "acknowledge an escalation"))

    @when(EscalationAcknowledged)
    def _acknowledged(self, _: EscalationAcknowledged) -> None:
        self.status = CrisisStatus.ACKNOWLEDGED
        self.ack_due = None

    def resolve(self, *, outcome: str, reason: str | None, ctx: CommandContext) -> None:
        _require_decider(ctx.actor, "resolve a crisis")
        if self.status is CrisisStatus.RESOLVED:
            msg = f"Crisis {self.id} is already resolved."
            raise EscalationStateError(msg)
        self._trigger(
            CrisisResolved, ctx, plan_id=self.plan_id, outcome=outcome.strip() or "(none given)",
            reason=require_reason(reason, "resolve a crisis"),
        )

    @when(CrisisResolved)
    def _resolved(self, _: CrisisResolved) -> None:
        self.status = CrisisStatus.RESOLVED
        self.ack_due = None
