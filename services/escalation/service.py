"""Crisis escalation: consumes the assessment service's decisions, raises escalations by
the policy, escalates on acknowledgement timeouts (durable timers), and takes
acknowledge and resolve commands (care.escalation.v1...)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from contracts.subjects import APPLICATION_CONTEXTS, subject_for
from domain.base import TEXT_MAX, Actor, AggregateRoot, CommandContext, DomainEvent, Role, bounded, derive_event_id, quote
from domain.catalogues.escalation import SEVERITY_OF, EscalationSeverity, EscalationTrigger
from domain.catalogues.risk import RiskLevel
from domain.escalation.crisis import Crisis, CrisisStatus, crisis_id
from domain.escalation.plan_risk import OUTREACH_LEVELS, MissedSlot, PlanRisk, plan_risk_id
from domain.escalation.policy import DEFAULT_POLICY, EscalationPolicy
from domain.events.assessment import AssessmentRejected, AssessmentScored
from domain.events.care_plan import CrisisRaisedByClinician, RiskLevelLowered, RiskLevelRaised
from domain.events.dead_letters import MessageDeadLettered
from domain.events.escalation import CrisisResolved, EscalationAcknowledged, EscalationLevelNotified, EscalationRaised
from domain.events.scheduling import SessionAttendanceCorrected, SessionMissed
from domain.operations.dead_letter import DeadLetter
from services.care.errors import AggregateMissingError
from services.shared.clock import Clock
from services.shared.processing import Inbound, ServiceApplication, subjects_of
from services.shared.settings import Settings

NAME = "escalation"
REACTS_TO: list[type[DomainEvent]] = [
    AssessmentScored,
    AssessmentRejected,
    CrisisRaisedByClinician,
    RiskLevelRaised,
    RiskLevelLowered,
    SessionMissed,  # the scheduling service's: a slot not held by its end plus grace
    SessionAttendanceCorrected,
]
#: Every other application's dead letters: the fail-safe for a risk signal it could not
#: process. This service's own raise their crisis as they are recorded (``fail_safe``), so it
#: never reads them back (a failure on one of its own would loop).
SUBJECTS = [
    *subjects_of(REACTS_TO),
    *(subject_for(MessageDeadLettered, "*", context=context) for application, context in APPLICATION_CONTEXTS.items()
      if application != NAME),
]
_ORDER = [EscalationSeverity.IMMEDIATE, EscalationSeverity.URGENT, EscalationSeverity.REVIEW, EscalationSeverity.OUTREACH]


def load_policy(settings: Settings) -> EscalationPolicy:
    if settings.escalation_policy_file is None:
        return DEFAULT_POLICY
    return EscalationPolicy.model_validate_json(settings.escalation_policy_file.read_text())


def triggers_of(inbound: Inbound) -> list[tuple[EscalationTrigger, str]]:
    """What in an assessment decision calls for escalation, with a reason for each. Every
    reason fits its event whatever the message carries: quoted text is bounded."""
    body = inbound.body
    found: list[tuple[EscalationTrigger, str]] = []
    if inbound.event_name == "crisis_raised_by_clinician":
        actor = body.get("actor") or {}
        by = f"Raised by {quote(actor.get('id'), 200)} ({quote(actor.get('role'), 40)}): "
        return [(EscalationTrigger.CLINICIAN_RAISED, bounded(by, body.get("reason")))]
    instrument = quote(body.get("instrument"), 40)
    if inbound.event_name == "assessment_rejected":
        if body.get("suicide_item_positive"):
            found.append((
                EscalationTrigger.UNSCORABLE_WITH_RISK_SIGNAL,
                bounded(f"{instrument} could not be scored (", body.get("rejection_reason"),
                        suffix=") but its answers carry a risk signal"),
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
            bounded(f"{instrument} reliable deterioration: ", f"{change.get('baseline_total')} → {body.get('total')}"),
        ))
    return found


def fail_safe_reason(dead: DeadLetter) -> str:
    """What a person must know of a risk signal that could not be processed: ids and kinds only."""
    return quote(
        f"A risk signal could not be processed: {dead.failed_event_type} (event {dead.failed_event_id or 'unknown'}, "
        f"from {dead.source or 'an unknown source'}) failed in the {dead.service} service with {dead.error_class}. "
        f"Check the client's record now; the dead letter is {dead.id}.",
        TEXT_MAX,
    )


def _moment(value: Any, fallback: datetime) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return fallback


class EscalationApplication(ServiceApplication):
    name = NAME
    actor = Actor(id="escalation-service", role=Role.SERVICE)
    risk_signals: ClassVar[frozenset[type[DomainEvent]]] = frozenset(
        {AssessmentScored, AssessmentRejected, CrisisRaisedByClinician, SessionMissed, MessageDeadLettered}
    )

    def is_risk_signal(self, subject: str, body: dict[str, Any] | None) -> bool:
        """A dead letter carries a risk signal only if it says so (one that cannot be read is
        taken to): the loop of a failure about a failure ends there."""
        if subject.endswith(".message_dead_lettered") and body is not None and body.get("risk_signal") is False:
            return False
        return super().is_risk_signal(subject, body)

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
        if inbound.event_name == "session_attendance_corrected":
            return self._held_after_all(inbound)
        if inbound.event_name == "message_dead_lettered":
            return self._dead_letter_elsewhere(inbound)
        triggers = triggers_of(inbound)
        if not triggers:
            return []
        if self.find(Crisis, crisis_id(inbound.event_id)) is not None:
            return []  # this decision already raised its crisis
        triggers.sort(key=lambda t: _ORDER.index(SEVERITY_OF[t[0]]))
        trigger = triggers[0][0]
        reason = quote("; ".join(reason for _, reason in triggers), TEXT_MAX)
        plan_id = inbound.body.get("plan_id") or inbound.aggregate_id  # a plan's own event names no plan_id
        return [self._raise(
            plan_id=UUID(str(plan_id)), client_id=str(inbound.body["client_id"]), trigger=trigger,
            source_event_id=inbound.event_id, reason=reason, ctx=self.context_for(inbound),
        )]

    def _raise(self, *, plan_id: UUID | None, client_id: str | None, trigger: EscalationTrigger, source_event_id: str,
               reason: str, ctx: CommandContext) -> Crisis:
        crisis = Crisis.raise_(plan_id=plan_id, client_id=client_id, trigger=trigger, source_event_id=source_event_id,
                               reason=reason, policy=self.policy, ctx=ctx)
        assert crisis.ack_due is not None
        self.timers[crisis.id] = crisis.ack_due  # an entry for an unrecorded crisis is dropped when it fires
        return crisis

    def _plan_risk(self, plan_id: UUID, ctx: CommandContext) -> PlanRisk:
        return self.find(PlanRisk, plan_risk_id(plan_id)) or PlanRisk.unknown(plan_id, ctx=ctx)

    def _note_risk(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        """A change of the plan's risk, dated by the care record; a session missed after it
        (read earlier) is escalated now if the risk then called for outreach."""
        plan_id, level = UUID(inbound.aggregate_id), RiskLevel(inbound.body["level"])
        since = _moment(inbound.body.get("timestamp"), self.clock())
        ctx = self.context_for(inbound)
        known: PlanRisk | None = self.find(PlanRisk, plan_risk_id(plan_id))
        if known is None:
            plan = PlanRisk.note_first(plan_id, level, since=since, ctx=ctx)
        elif known.note(level, since=since, ctx=ctx):
            plan = known
        else:
            return []
        return [plan, *self._outreach(plan, plan.misses_at_outreach_risk(since=since), ctx)]

    def _missed_session(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        body = inbound.body
        ctx = self.context_for(inbound)
        plan = self._plan_risk(UUID(str(body["plan_id"])), ctx)
        slot = MissedSlot(
            course_id=UUID(str(body["course_id"])), client_id=quote(body["client_id"], 200), kind=quote(body["kind"], 40),
            number=int(body["number"]), starts_at=datetime.fromisoformat(str(body["starts_at"])),
            missed_at=_moment(body.get("timestamp"), self.clock()), session_missed_event_id=inbound.event_id,
        )
        if not plan.note_miss(slot, ctx=ctx):
            return []
        at_risk = plan.level_at(slot.missed_at) in OUTREACH_LEVELS
        return [plan, *self._outreach(plan, [slot] if at_risk else [], ctx)]

    def _outreach(self, plan: PlanRisk, misses: list[MissedSlot], ctx: CommandContext) -> list[Crisis]:
        raised = []
        for miss in misses:
            if self.find(Crisis, crisis_id(miss.session_missed_event_id)) is not None:
                continue
            level = plan.level_at(miss.missed_at)
            reason = quote(f"{miss.kind.replace('_', '-')} {miss.number} on {miss.starts_at.isoformat()} missed while "
                           f"risk was {level.value}", TEXT_MAX)
            raised.append(self._raise(
                plan_id=plan.plan_id, client_id=miss.client_id, trigger=EscalationTrigger.MISSED_SESSION_AT_HIGH_RISK,
                source_event_id=miss.session_missed_event_id, reason=reason, ctx=ctx,
            ))
        return raised

    def _held_after_all(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        body = inbound.body
        known: PlanRisk | None = self.find(PlanRisk, plan_risk_id(UUID(str(body["plan_id"]))))
        if known is None:
            return []
        changed = known.note_held_after_all(UUID(str(body["course_id"])), str(body["kind"]), int(body["number"]),
                                            ctx=self.context_for(inbound))
        return [known] if changed else []

    # ----------------------------------------------------------------- fail-safe

    def _dead_letter_elsewhere(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        """Another service (or this one, read back) could not process a message that may
        carry a risk signal: a person is told at once (immediate severity)."""
        if not inbound.body.get("risk_signal"):
            return []
        dead = DeadLetter.created_by(MessageDeadLettered.model_validate(_event_fields(MessageDeadLettered, inbound.body)))
        assert isinstance(dead, DeadLetter)
        return self._fail_safe_crisis(dead, inbound.event_id, self.context_for(inbound))

    def fail_safe(self, dead: DeadLetter) -> Sequence[AggregateRoot]:
        """This service's own dead letters: the fail-safe crisis is recorded with them."""
        if not dead.risk_signal:
            return []
        ctx = CommandContext(actor=self.actor, at=self.clock(), correlation_id=dead.correlation_id,
                             causation_id=derive_event_id(dead.id, 1))
        return self._fail_safe_crisis(dead, derive_event_id(dead.id, 1), ctx)

    def _fail_safe_crisis(self, dead: DeadLetter, dead_letter_event_id: str, ctx: CommandContext) -> list[Crisis]:
        if self.find(Crisis, crisis_id(dead_letter_event_id)) is not None:
            return []
        return [self._raise(
            plan_id=dead.plan_id, client_id=dead.client_id, trigger=EscalationTrigger.UNPROCESSABLE_RISK_SIGNAL,
            source_event_id=dead_letter_event_id, reason=fail_safe_reason(dead), ctx=ctx,
        )]

    # ----------------------------------------------------------------- timers

    def reread_after_recovery(self) -> None:
        super().reread_after_recovery()
        self.timers = self._armed_timers()

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

    def crisis_held_open(self, cid: UUID) -> UUID | None:
        """The plan of crisis ``cid`` while it is not resolved (None: unknown or resolved)."""
        crisis: Crisis | None = self.find(Crisis, cid)
        if crisis is None or crisis.status is CrisisStatus.RESOLVED:
            return None
        return crisis.plan_id

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


def _event_fields(event_class: type[DomainEvent], body: dict[str, Any]) -> dict[str, Any]:
    """An event's contract JSON as its class takes it: fields it does not know (contracts
    only grow) and the derived id are left out."""
    return {k: v for k, v in body.items() if k in event_class.model_fields}
