"""Crisis escalation: consumes the assessment service's decisions, raises escalations by
the policy, escalates on acknowledgement timeouts (durable timers), and takes
acknowledge and resolve commands (care.escalation.v1...)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from contracts.subjects import APPLICATION_CONTEXTS
from domain.assessment.instruments import has_suicide_item
from domain.assessment.results import SuicideRisk
from domain.base import (
    TEXT_MAX,
    Actor,
    AggregateRoot,
    CommandContext,
    DomainEvent,
    Role,
    bounded,
    derive_event_id,
    quote,
)
from domain.catalogues.escalation import SEVERITY_OF, EscalationSeverity, EscalationTrigger
from domain.escalation.crisis import Crisis, CrisisStatus, crisis_id
from domain.escalation.plan_risk import OUTREACH_LEVELS, MissedSlot, PlanRisk, plan_risk_id
from domain.escalation.policy import DEFAULT_POLICY, EscalationPolicy, WebhookChannel
from domain.events.assessment import AssessmentRejected, AssessmentScored
from domain.events.care_plan import CrisisRaisedByClinician, RiskLevelLowered, RiskLevelRaised
from domain.events.dead_letters import MessageDeadLettered
from domain.events.escalation import CrisisResolved, EscalationAcknowledged, EscalationLevelNotified
from domain.events.scheduling import SessionAttendanceCorrected, SessionMissed
from domain.operations.dead_letter import DeadLetter
from services.escalation.notify import Notifier
from services.escalation.open_view import OpenCrises
from services.shared import metrics
from services.shared.clock import Clock
from services.shared.cloudevents import Inbound
from services.shared.commands import CommandHandling, CommandMeta
from services.shared.reactions import Reactions
from services.shared.settings import Settings
from services.shared.timers import Fired, Timers
from services.shared.tracking import ServiceApplication

NAME = "escalation"
_ORDER = [EscalationSeverity.IMMEDIATE, EscalationSeverity.URGENT, EscalationSeverity.REVIEW, EscalationSeverity.OUTREACH]


def load_policy(settings: Settings) -> EscalationPolicy:
    if settings.escalation_policy_file is None:
        return DEFAULT_POLICY
    policy = EscalationPolicy.model_validate_json(settings.escalation_policy_file.read_text())
    check_channels(policy, settings)
    return policy


def check_channels(policy: EscalationPolicy, settings: Settings) -> None:
    """Every webhook secret the policy names is in the escalation secrets file and is one
    the Standard Webhooks library can sign with (a bad one is found at start, not at the
    first crisis). Raises ValueError naming the contact."""
    from services.escalation.secrets import SecretsError, escalation_secrets

    secrets = escalation_secrets(settings)
    for level in policy.levels:
        for contact, channel in level.deliveries():
            if isinstance(channel, WebhookChannel):
                try:
                    secrets.of(channel.secret_name)
                except SecretsError as e:
                    msg = f"the webhook secret of contact {contact.id!r} (level {level.name!r}): {e}"
                    raise ValueError(msg) from None


Decision = CrisisRaisedByClinician | AssessmentScored | AssessmentRejected


def triggers(event: Decision) -> list[tuple[EscalationTrigger, str]]:
    """What in an assessment decision (or a clinician's judgement) calls for escalation,
    with a reason for each. Every reason fits its event whatever the message carries:
    quoted text is bounded."""
    if isinstance(event, CrisisRaisedByClinician):
        by = f"Raised by {quote(event.actor.id, 200)} ({quote(event.actor.role.value, 40)}): "
        return [(EscalationTrigger.CLINICIAN_RAISED, bounded(by, event.reason))]
    found: list[tuple[EscalationTrigger, str]] = []
    instrument = quote(event.instrument, 40)
    if isinstance(event, AssessmentRejected):
        if event.suicide_item_positive:
            found.append((
                EscalationTrigger.UNSCORABLE_WITH_RISK_SIGNAL,
                bounded(f"{instrument} could not be scored (", event.rejection_reason,
                        suffix=") but its answers carry a risk signal"),
            ))
        return found
    if event.suicide_risk is SuicideRisk.HIGH:
        found.append((EscalationTrigger.CSSRS_HIGH_RISK, "C-SSRS screener: high risk (intent, plan or recent behaviour)"))
    if event.suicide_item_positive and has_suicide_item(event.instrument):  # PHQ-9 item 9
        found.append((EscalationTrigger.PHQ9_SUICIDE_ITEM, "PHQ-9 item 9 above 0: thoughts of being better off dead or of self-harm"))
    if event.change is not None and event.change.reliable_deterioration:
        found.append((
            EscalationTrigger.RELIABLE_DETERIORATION,
            bounded(f"{instrument} reliable deterioration: ", f"{event.change.baseline_total} → {event.total}"),
        ))
    return found


def triggers_of(inbound: Inbound) -> list[tuple[EscalationTrigger, str]]:
    """:func:`triggers` of a consumed decision."""
    event = EscalationApplication.reactions.decode(inbound)
    assert isinstance(event, Decision)
    return triggers(event)


def fail_safe_reason(dead: DeadLetter) -> str:
    """What a person must know of a risk signal that could not be processed: ids and kinds only."""
    return quote(
        f"A risk signal could not be processed: {dead.failed_event_type} (event {dead.failed_event_id or 'unknown'}, "
        f"from {dead.source or 'an unknown source'}) failed in the {dead.service} service with {dead.error_class}. "
        f"Check the client's record now; the dead letter is {dead.id}.",
        TEXT_MAX,
    )


class EscalationApplication(CommandHandling, ServiceApplication):
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
        self.timers = self._armed_timers()
        self.open_view = OpenCrises(self.recorder, self.mapper)
        #: Deliveries to the policy's contacts (services/escalation/notify.py): made by the
        #: first timer tick, so only the service's process delivers (the API's copy never does).
        self._notifier: Notifier | None = None
        self.figures: metrics.EscalationFigures | None = None
        metrics.guarded("escalation figures", self._make_figures)

    def _make_figures(self) -> None:
        self.figures = metrics.EscalationFigures([severity.value for severity in EscalationSeverity])

    # ----------------------------------------------------------------- consuming

    def _decision(self, event: Decision, inbound: Inbound) -> Sequence[AggregateRoot]:
        found = triggers(event)
        if not found:
            return []
        if self.find(Crisis, crisis_id(inbound.event_id)) is not None:
            return []  # this decision already raised its crisis
        found.sort(key=lambda t: _ORDER.index(SEVERITY_OF[t[0]]))
        trigger = found[0][0]
        reason = quote("; ".join(reason for _, reason in found), TEXT_MAX)
        # a plan's own event names no plan_id: the plan is its originator
        plan_id = event.originator_id if isinstance(event, CrisisRaisedByClinician) else event.plan_id
        return [self._raise(
            plan_id=plan_id, client_id=event.client_id, trigger=trigger,
            source_event_id=inbound.event_id, reason=reason, ctx=self.context_for(inbound),
        )]

    def _raise(self, *, plan_id: UUID | None, client_id: str | None, trigger: EscalationTrigger, source_event_id: str,
               reason: str, ctx: CommandContext) -> Crisis:
        crisis = Crisis.raise_(plan_id=plan_id, client_id=client_id, trigger=trigger, source_event_id=source_event_id,
                               reason=reason, policy=self.policy, ctx=ctx)
        assert crisis.ack_due is not None
        self.timers.arm(crisis.id, crisis.ack_due)  # an entry for an unrecorded crisis is dropped when it fires
        return crisis

    def _plan_risk(self, plan_id: UUID, ctx: CommandContext) -> PlanRisk:
        return self.find(PlanRisk, plan_risk_id(plan_id)) or PlanRisk.unknown(plan_id, ctx=ctx)

    def _note_risk(self, event: RiskLevelRaised | RiskLevelLowered, inbound: Inbound) -> Sequence[AggregateRoot]:
        """A change of the plan's risk, dated by the care record; a session missed after it
        (read earlier) is escalated now if the risk then called for outreach."""
        plan_id, level, since = event.originator_id, event.level, event.timestamp
        ctx = self.context_for(inbound)
        known: PlanRisk | None = self.find(PlanRisk, plan_risk_id(plan_id))
        if known is None:
            plan = PlanRisk.note_first(plan_id, level, since=since, ctx=ctx)
        elif known.note(level, since=since, ctx=ctx):
            plan = known
        else:
            return []
        return [plan, *self._outreach(plan, plan.misses_at_outreach_risk(since=since), ctx)]

    def _missed_session(self, event: SessionMissed, inbound: Inbound) -> Sequence[AggregateRoot]:
        ctx = self.context_for(inbound)
        plan = self._plan_risk(event.plan_id, ctx)
        slot = MissedSlot(
            course_id=event.course_id, client_id=quote(event.client_id, 200), kind=quote(event.kind.value, 40),
            number=event.number, starts_at=event.starts_at, missed_at=event.timestamp,
            session_missed_event_id=inbound.event_id,
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

    def _held_after_all(self, event: SessionAttendanceCorrected, inbound: Inbound) -> Sequence[AggregateRoot]:
        known: PlanRisk | None = self.find(PlanRisk, plan_risk_id(event.plan_id))
        if known is None:
            return []
        changed = known.note_held_after_all(event.course_id, event.kind.value, event.number, ctx=self.context_for(inbound))
        return [known] if changed else []

    # ----------------------------------------------------------------- fail-safe

    def _dead_letter_elsewhere(self, event: MessageDeadLettered, inbound: Inbound) -> Sequence[AggregateRoot]:
        """Another service could not process a message that may carry a risk signal: a
        person is told at once (immediate severity)."""
        if not event.risk_signal:
            return []
        dead = DeadLetter.created_by(event)
        assert isinstance(dead, DeadLetter)
        return self._fail_safe_crisis(dead, inbound.event_id, self.context_for(inbound))

    reactions = Reactions(
        {
            AssessmentScored: _decision,
            AssessmentRejected: _decision,
            CrisisRaisedByClinician: _decision,
            RiskLevelRaised: _note_risk,
            RiskLevelLowered: _note_risk,
            SessionMissed: _missed_session,  # the scheduling service's: a slot not held by its end plus grace
            SessionAttendanceCorrected: _held_after_all,
            MessageDeadLettered: _dead_letter_elsewhere,
        },
        # Every other application's dead letters: the fail-safe for a risk signal it could not
        # process. This service's own raise their crisis as they are recorded (``fail_safe``),
        # so it never reads them back (a failure on one of its own would loop).
        contexts={MessageDeadLettered: [c for application, c in APPLICATION_CONTEXTS.items() if application != NAME]},
    )

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
        self.open_view.reset()
        if self._notifier is not None:
            self._notifier.reset()

    def _armed_timers(self) -> Timers:
        timers = Timers()
        for notification in self.stored_notifications():
            event = self.mapper.to_domain_event(notification)
            if isinstance(event, EscalationLevelNotified):
                timers.arm(event.originator_id, event.ack_due)
            elif isinstance(event, (EscalationAcknowledged, CrisisResolved)):
                timers.disarm(event.originator_id)
        return timers

    def follow_timers(self, after: int) -> int:
        for notification in self.notifications_after(after):
            after = notification.id
            event = self.mapper.to_domain_event(notification)
            if isinstance(event, EscalationLevelNotified):
                self.timers.arm(event.originator_id, event.ack_due)
            elif isinstance(event, (EscalationAcknowledged, CrisisResolved)):
                self.timers.disarm(event.originator_id)
        return after

    def fire_due_timers(self) -> int:
        """Escalates every crisis whose acknowledgement is overdue, then delivers every
        notification not yet delivered (services/escalation/notify.py); returns how many
        events were recorded."""
        now = self.clock()
        fired = self.timers.fire(now, lambda cid: self._time_out(cid, now))
        return fired + self.notifier.run()

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            self._notifier = Notifier(self)
        return self._notifier

    def close(self) -> None:
        if self._notifier is not None:
            self._notifier.close()
        super().close()

    def _time_out(self, cid: UUID, now: datetime) -> Fired:
        crisis: Crisis | None = self.find(Crisis, cid)
        if crisis is None or crisis.status is not CrisisStatus.ESCALATING or crisis.ack_due is None:
            return Fired(recorded=False, next_due=None)
        ctx = CommandContext(actor=self.actor, at=now, correlation_id=crisis.correlation_id,
                             causation_id=str(crisis.notified_event_id))
        recorded = crisis.time_out(policy=self.policy, ctx=ctx)
        if recorded:
            self.save(crisis)
            if self.figures is not None:
                self.figures.timed_out(crisis.severity.value)
        return Fired(recorded=recorded, next_due=crisis.ack_due)

    # ----------------------------------------------------------------- commands

    def open_crisis_ids(self) -> dict[UUID, str | None]:
        """Crises not yet resolved, oldest first, with their clients: from the view of the
        log (services/escalation/open_view.py), without loading any crisis."""
        return self.open_view.refresh()

    def open_crises(self, ids: Iterable[UUID] | None = None) -> list[Crisis]:
        """Crises not yet resolved, oldest first (all of them, or those of ``ids``): only the
        open ones are loaded."""
        crises = [self.find(Crisis, cid) for cid in (self.open_crisis_ids() if ids is None else ids)]
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

    def command_context(self, meta: CommandMeta, aggregate: AggregateRoot | None) -> CommandContext:
        """A person's decision on a crisis belongs to the crisis's story, caused by its latest notification."""
        assert isinstance(aggregate, Crisis)
        return CommandContext(
            actor=meta.actor, at=self.clock(), correlation_id=meta.correlation_id or aggregate.correlation_id,
            causation_id=str(aggregate.notified_event_id) if aggregate.notified_event_id else None,
        )

    def after_command(self, aggregate: AggregateRoot) -> None:
        self.timers.disarm(aggregate.id)  # acknowledged or resolved: no escalation is due
        if self.figures is not None and isinstance(aggregate, Crisis) and aggregate.status is CrisisStatus.ACKNOWLEDGED:
            # Only an acknowledgement leaves a crisis acknowledged (resolving makes it resolved).
            self.figures.acknowledged(aggregate.severity.value,
                                      (aggregate.modified_on - aggregate.created_on).total_seconds())


SUBJECTS = EscalationApplication.reactions.subjects
