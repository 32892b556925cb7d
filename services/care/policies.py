"""How the care application reacts to other services' events (``careplan service
care-policies``).

- A crisis raised at immediate or urgent severity raises the plan's risk level (never
  lowers it) and activates emergency support, the escalation event linked as the cause.
- A resolved crisis is recorded on the plan. Leaving emergency support stays a clinician's
  decision (EndEmergencySupport).

The handlers need only what :class:`Plans` names, so this module does not import the
application that runs them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol
from uuid import UUID

from domain.base import AggregateRoot, CommandContext, DomainEvent, bounded
from domain.care_plan import CarePlan
from domain.catalogues.escalation import CRISIS_RISK_LEVEL, EscalationTrigger
from domain.events.escalation import CrisisResolved, EscalationRaised
from services.shared.cloudevents import Inbound
from services.shared.reactions import Reactions

log = logging.getLogger(__name__)

NAME = "care-policies"
#: A crisis the policies cannot act on is escalated in its own right (a person is told the
#: plan is not in emergency support) — except a fail-safe crisis, which is that already.
RISK_SIGNALS: frozenset[type[DomainEvent]] = frozenset({EscalationRaised})


class Plans(Protocol):
    """What the policies read and write through: the care application."""

    def get_plan(self, plan_id: UUID) -> CarePlan: ...
    def context_for(self, inbound: Inbound) -> CommandContext: ...


def is_risk_signal(body: dict[str, Any] | None) -> bool:
    return body is None or body.get("trigger") != EscalationTrigger.UNPROCESSABLE_RISK_SIGNAL.value


def escalation_raised(app: Plans, raised: EscalationRaised, inbound: Inbound) -> Sequence[AggregateRoot]:
    if raised.plan_id is None:
        return []  # a fail-safe crisis that could name no plan: people act on it, the plan cannot
    risk = CRISIS_RISK_LEVEL.get(raised.severity)
    if risk is None:
        return []  # review and outreach escalations notify clinicians; the plan's strategy stays
    crisis_id = raised.originator_id
    plan = app.get_plan(raised.plan_id)
    if not plan.is_open:
        log.warning("crisis %s raised on closed plan %s: nothing to change on the plan", crisis_id, raised.plan_id)
        return []
    ctx = app.context_for(inbound)
    why = bounded(f"Crisis raised ({raised.severity.value}): ", raised.reason)
    if risk.rank > plan.risk_level.rank:
        plan.raise_risk(risk, reason=why, ctx=ctx)
    if crisis_id not in plan.open_crises:
        plan.activate_emergency_support(crisis_id, reason=why, ctx=ctx)
    return [plan]


def crisis_resolved(app: Plans, resolved: CrisisResolved, inbound: Inbound) -> Sequence[AggregateRoot]:
    if resolved.plan_id is None:
        return []
    plan = app.get_plan(resolved.plan_id)
    if resolved.originator_id not in plan.open_crises or not plan.is_open:
        return []
    plan.record_crisis_resolved(resolved.originator_id, outcome=resolved.outcome, ctx=app.context_for(inbound))
    return [plan]


REACTIONS: Reactions[Plans] = Reactions({EscalationRaised: escalation_raised, CrisisResolved: crisis_resolved})
SUBJECTS = REACTIONS.subjects
