"""How the care application reacts to other services' events.

- A crisis raised at immediate or urgent severity raises the plan's risk level (never
  lowers it) and activates emergency support, the escalation event linked as the cause.
- A resolved crisis is recorded on the plan. Leaving emergency support stays a clinician's
  decision (EndEmergencySupport).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID

from domain.base import AggregateRoot, bounded
from domain.catalogues.escalation import CRISIS_RISK_LEVEL, EscalationSeverity, EscalationTrigger
from domain.events.escalation import CrisisResolved, EscalationRaised
from services.shared.processing import Inbound, subjects_of

if TYPE_CHECKING:
    from services.care.application import CareApplication

log = logging.getLogger(__name__)

NAME = "care-policies"
REACTS_TO = [EscalationRaised, CrisisResolved]
SUBJECTS = subjects_of(REACTS_TO)
#: A crisis the policies cannot act on is escalated in its own right (a person is told the
#: plan is not in emergency support) — except a fail-safe crisis, which is that already.
RISK_SIGNALS = frozenset({EscalationRaised})


def is_risk_signal(body: dict[str, object] | None) -> bool:
    return body is None or body.get("trigger") != EscalationTrigger.UNPROCESSABLE_RISK_SIGNAL.value


def react(app: CareApplication, inbound: Inbound) -> Sequence[AggregateRoot]:
    body = inbound.body
    crisis_id = UUID(inbound.aggregate_id)
    if body.get("plan_id") is None:
        return []  # a fail-safe crisis that could name no plan: people act on it, the plan cannot
    plan_id = UUID(str(body["plan_id"]))
    if inbound.event_name == "escalation_raised":
        risk_severity = EscalationSeverity(body["severity"])
        risk = CRISIS_RISK_LEVEL.get(risk_severity)
        if risk is None:
            return []  # review and outreach escalations notify clinicians; the plan's strategy stays
        plan = app.get_plan(plan_id)
        if not plan.is_open:
            log.warning("crisis %s raised on closed plan %s: nothing to change on the plan", crisis_id, plan_id)
            return []
        ctx = app.context_for(inbound)
        why = bounded(f"Crisis raised ({risk_severity.value}): ", body.get("reason"))
        if risk.rank > plan.risk_level.rank:
            plan.raise_risk(risk, reason=why, ctx=ctx)
        if crisis_id not in plan.open_crises:
            plan.activate_emergency_support(crisis_id, reason=why, ctx=ctx)
        return [plan]
    if inbound.event_name == "crisis_resolved":
        plan = app.get_plan(plan_id)
        if crisis_id not in plan.open_crises or not plan.is_open:
            return []
        plan.record_crisis_resolved(crisis_id, outcome=body["outcome"], ctx=app.context_for(inbound))
        return [plan]
    return []
