"""Crisis escalation: consumes the assessment service's decisions, raises escalations by
the policy, escalates on acknowledgement timeouts (durable timers), and takes
acknowledge and resolve commands (care.escalation.v1...)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from contracts.subjects import subject_for
from domain.base import Actor, AggregateRoot, CommandContext, Role
from domain.catalogues.escalation import SEVERITY_OF, EscalationSeverity, EscalationTrigger
from domain.catalogues.risk import RiskLevel
from domain.escalation.crisis import Crisis, CrisisStatus, crisis_id
from domain.escalation.plan_risk import OUTREACH_LEVELS, PlanRisk, plan_risk_id
from domain.escalation.policy import DEFAULT_POLICY, EscalationPolicy
from domain.events.assessment import AssessmentRejected, AssessmentScored
from domain.events.care_plan import CrisisRaisedByClinician, RiskLevelLowered, RiskLevelRaised
from domain.events.scheduling import SessionMissed
from domain.events.escalation import CrisisResolved, EscalationAcknowledged, EscalationLevelNotified, EscalationRaised
from services.care.errors import AggregateMissingError
from services.shared.clock import Clock
from services.shared.processing import Inbound, ServiceApplication
from services.shared.settings import Settings

NAME = "escalation"
SUBJECTS = [
    subject_for(AssessmentScored, "*"),
    subject_for(AssessmentRejected, "*"),
    subject_for(CrisisRaisedByClinician, "*"),
    subject_for(RiskLevelRaised, "*"),
    subject_for(RiskLevelLowered, "*"),
    subject_for(SessionMissed, "*"),  # the scheduling service's: a slot not held by its end plus grace
]
_ORDER = [EscalationSeverity.IMMEDIATE, EscalationSeverity.URGENT, EscalationSeverity.REVIEW, EscalationSeverity.OUTREACH]


def load_policy(settings: Settings) -> EscalationPolicy:
    if settings.escalation_policy_file is None:
        return DEFAULT_POLICY
    return EscalationPolicy.model_validate_json(settings.escalation_policy_file.read_text())


def triggers_of(inbound: Inbound) -> list[tuple[EscalationTrigger, str]]:
    """What in an assessment decision calls for escalation, with a reason for each."""
    body = inbound.body
    found: list[tuple[EscalationTrigger, str]] = []
    if inbound.event_name == "crisis_raised_by_clinician":
        actor = body.get("actor") or {}
        return [(EscalationTrigger.CLINICIAN_RAISED, f"Raised by {actor.get('id')} ({actor.get('role')}): {body.get('reason')}")]
    instrument = body.get("instrument")
    if inbound.event_name == "assessment_rejected":
        if body.get("suicide_item_positive"):
            found.append((
                EscalationTrigger.UNSCORABLE_WITH_RISK_SIGNAL,
                f"{instrument} could not be scored ({body.get('rejection_reason')}) but its answers carry a risk signal",
            ))
        return found
    if body.get("suicide_risk") == "high":
        found.append((EscalationTrigger.CSSRS_HIGH_RISK, "C-SSRS screener: high risk (intent, plan or recent behaviour)"))
    if instrument == "PHQ-9" and body.get("suicide_item_positive"):
        found.append((EscalationTrigger.PHQ9_SUICIDE_ITEM, "PHQ-9 item 9 above 0: thoughts of being better off dead or of self-harm"))
    change = body.get("change") or {}
    if change.get("reliable_deterioration"):
        found.append((
            EscalationTrigger.RELIABLE_DETERIORATION,
            f"{instrument} reliable deterioration: {change.get('baseline_total')} → {body.get('total')}",
        ))
    return found


class EscalationApplication(ServiceApplication):
    name = NAME
    actor = Actor(id="escalation-service", role=Role.SERVICE)

    def __init__(self, settings: Settings, *, clock: Clock | None = None, policy: EscalationPolicy | None = None) -> None:
        super().__init__(settings, clock=clock)
        self.policy = policy or load_policy(settings)
        #: crisis id → when its acknowledgement is due; rebuilt from the stored events at start.
        self.timers: dict[UUID, datetime] = self._armed_timers()

    # ----------------------------------------------------------------- consuming

    def decide(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        if inbound.event_name in ("risk_level_raised", "risk_level_lowered"):
            return self._note_risk(inbound)
        if inbound.event_name == "session_missed":
            return self._missed_session(inbound)
        triggers = triggers_of(inbound)
        if not triggers:
            return []
        if self.find(Crisis, crisis_id(inbound.event_id)) is not None:
            return []  # this decision already raised its crisis
        triggers.sort(key=lambda t: _ORDER.index(SEVERITY_OF[t[0]]))
        trigger = triggers[0][0]
        reason = "; ".join(reason for _, reason in triggers)
        plan_id = inbound.body.get("plan_id") or inbound.aggregate_id  # a plan's own event names no plan_id
        crisis = Crisis.raise_(
            plan_id=UUID(plan_id),
            client_id=str(inbound.body["client_id"]),
            trigger=trigger,
            source_event_id=inbound.event_id,
            reason=reason,
            policy=self.policy,
            ctx=self.context_for(inbound),
        )
        assert crisis.ack_due is not None
        self.timers[crisis.id] = crisis.ack_due  # an entry for an unrecorded crisis is dropped when it fires
        return [crisis]

    def _note_risk(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        plan_id, level = UUID(inbound.aggregate_id), RiskLevel(inbound.body["level"])
        ctx = self.context_for(inbound)
        known: PlanRisk | None = self.find(PlanRisk, plan_risk_id(plan_id))
        if known is None:
            return [PlanRisk.note_first(plan_id, level, ctx=ctx)]
        return [known] if known.note(level, ctx=ctx) else []

    def _missed_session(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        body = inbound.body
        plan_id = UUID(body["plan_id"])
        known: PlanRisk | None = self.find(PlanRisk, plan_risk_id(plan_id))
        if known is None or known.level not in OUTREACH_LEVELS:
            return []
        if self.find(Crisis, crisis_id(inbound.event_id)) is not None:
            return []
        crisis = Crisis.raise_(
            plan_id=plan_id,
            client_id=str(body["client_id"]),
            trigger=EscalationTrigger.MISSED_SESSION_AT_HIGH_RISK,
            source_event_id=inbound.event_id,
            reason=f"{body['kind'].replace('_', '-')} {body['number']} on {body['starts_at']} missed while risk is {known.level.value}",
            policy=self.policy,
            ctx=self.context_for(inbound),
        )
        assert crisis.ack_due is not None
        self.timers[crisis.id] = crisis.ack_due
        return [crisis]

    # ----------------------------------------------------------------- timers

    def _armed_timers(self) -> dict[UUID, datetime]:
        timers: dict[UUID, datetime] = {}
        for notification in self.stored_notifications():
            event = self.mapper.to_domain_event(notification)
            if isinstance(event, EscalationLevelNotified):
                timers[event.originator_id] = event.ack_due
            elif isinstance(event, (EscalationAcknowledged, CrisisResolved)):
                timers.pop(event.originator_id, None)
        return timers

    def fire_due_timers(self) -> int:
        """Escalates every crisis whose acknowledgement is overdue; returns how many."""
        now = self.clock()
        fired = 0
        for cid, due in sorted(self.timers.items(), key=lambda item: item[1]):
            if due > now:
                continue
            crisis: Crisis | None = self.find(Crisis, cid)
            if crisis is None or crisis.status is not CrisisStatus.ESCALATING or crisis.ack_due is None:
                self.timers.pop(cid, None)
                continue
            ctx = CommandContext(
                actor=self.actor, at=now, correlation_id=crisis.correlation_id,
                causation_id=str(crisis.notified_event_id),
            )
            if crisis.time_out(policy=self.policy, ctx=ctx):
                self.save(crisis)
                fired += 1
            self.timers[cid] = crisis.ack_due
        return fired

    # ----------------------------------------------------------------- commands

    def open_crises(self) -> list[Crisis]:
        """Crises not yet resolved, oldest first (from the stored log)."""
        crises = [self.find(Crisis, cid) for cid in self.aggregate_ids_created_by(EscalationRaised)]
        return [c for c in crises if c is not None and c.status is not CrisisStatus.RESOLVED]

    def find_crisis_status(self, cid: UUID) -> CrisisStatus | None:
        crisis: Crisis | None = self.find(Crisis, cid)
        return crisis.status if crisis is not None else None

    def _crisis(self, cid: UUID) -> Crisis:
        crisis: Crisis | None = self.find(Crisis, cid)
        if crisis is None:
            msg = f"No crisis {cid} is recorded; check the id."
            raise AggregateMissingError(msg)
        return crisis

    def acknowledge(self, cid: UUID, *, actor: Actor, reason: str | None, correlation_id: UUID | None = None) -> Crisis:
        crisis = self._crisis(cid)
        crisis.acknowledge(reason=reason, ctx=self._command_context(crisis, actor, correlation_id))
        self.save(crisis)
        self.timers.pop(cid, None)
        return crisis

    def resolve(self, cid: UUID, *, actor: Actor, outcome: str, reason: str | None) -> Crisis:
        crisis = self._crisis(cid)
        crisis.resolve(outcome=outcome, reason=reason, ctx=self._command_context(crisis, actor, None))
        self.save(crisis)
        self.timers.pop(cid, None)
        return crisis

    def _command_context(self, crisis: Crisis, actor: Actor, correlation_id: UUID | None) -> CommandContext:
        return CommandContext(
            actor=actor, at=self.clock(), correlation_id=correlation_id or crisis.correlation_id,
            causation_id=str(crisis.notified_event_id) if crisis.notified_event_id else None,
        )
