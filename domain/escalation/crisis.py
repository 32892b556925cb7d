"""Crisis: one escalation, from the trigger to its resolution.

Its id is derived from the triggering event, so the same trigger seen twice raises one
crisis. Timers are its own data: each notification records when acknowledgement is due,
so after a restart the service re-arms them from the stored state."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Self
from uuid import UUID, uuid5

from domain.base import Actor, AggregateRoot, CommandContext, Role, require_reason, when
from domain.catalogues.escalation import SEVERITY_OF, EscalationSeverity, EscalationTrigger
from domain.errors import DomainError, NotAuthorisedError
from domain.escalation.policy import EscalationPolicy
from domain.events.escalation import (
    CrisisResolved,
    EscalationAcknowledged,
    EscalationLevelNotified,
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
