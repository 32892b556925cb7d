"""Each service's reactions, decided without NATS: a domain event becomes the message a relay
would publish (tests/support/reactions.py) and the service decides it on a temporary
store. The end-to-end tests run the same decisions over a real nats-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from domain.assessment.results import Severity, SuicideRisk
from domain.base import Actor, Role
from domain.catalogues.escalation import EscalationSeverity, EscalationTrigger
from domain.catalogues.modalities import Modality
from domain.catalogues.risk import RiskLevel
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from domain.escalation.crisis import Crisis
from domain.events.assessment import AssessmentRejected, AssessmentScored
from domain.events.care_plan import CarePlanDrafted, EmergencySupportActivated
from domain.events.dead_letters import MessageDeadLettered
from domain.events.escalation import CrisisResolved, EscalationRaised
from domain.events.scheduling import SlotKind
from domain.events.therapy_course import CourseStarted
from domain.scheduling.schedule import CourseSchedule
from services.care import commands as c
from services.care.application import CareApplication
from services.escalation.service import EscalationApplication
from services.scheduling.service import SchedulingApplication
from services.shared.commands import CommandMeta
from services.shared.reactions import Reactions, UndecodableEventError
from services.shared.settings import Settings
from tests.conftest import T0
from tests.support.reactions import decide, event_of, inbound_of

SERVICE = Actor(id="assessment-service", role=Role.SERVICE)
CLINICIAN = CommandMeta(actor=Actor(id="clinician-17", role=Role.CLINICIAN))


@pytest.fixture
def escalation(tmp_path: Path) -> Iterator[EscalationApplication]:
    app = EscalationApplication(Settings(data_dir=tmp_path))
    yield app
    app.close()


def scored(**fields: object) -> AssessmentScored:
    values: dict[str, object] = {
        "submission_id": uuid4(), "course_id": uuid4(), "plan_id": uuid4(), "client_id": "client-4",
        "instrument": "PHQ-9", "answered_at": T0, "total": 8, "severity": Severity.MILD, "answered_items": 9,
        "prorated": False, "suicide_item_positive": False,
    }
    return event_of(AssessmentScored, actor=SERVICE, **{**values, **fields})


def crises(decided: list[object]) -> list[Crisis]:
    return [a for a in decided if isinstance(a, Crisis)]


# ----------------------------------------------------------------- escalation triggers


def test_a_positive_phq9_item_9_raises_an_urgent_crisis_once(escalation: EscalationApplication) -> None:
    event = scored(suicide_item_positive=True, total=12, severity=Severity.MODERATE)
    (crisis,) = crises(decide(escalation, event))
    assert crisis.trigger is EscalationTrigger.PHQ9_SUICIDE_ITEM and crisis.severity is EscalationSeverity.URGENT
    assert crisis.plan_id == event.plan_id and crisis.client_id == "client-4"
    assert crises(decide(escalation, inbound_of(event))) == []  # the same decision again: nothing new


def test_the_most_severe_trigger_decides_and_every_reason_is_kept(escalation: EscalationApplication) -> None:
    (crisis,) = crises(decided := decide(escalation, scored(suicide_item_positive=True, suicide_risk=SuicideRisk.HIGH)))
    assert crisis.trigger is EscalationTrigger.CSSRS_HIGH_RISK and crisis.severity is EscalationSeverity.IMMEDIATE
    (raised_event,) = [e for e in escalation.events.get(crisis.id) if isinstance(e, EscalationRaised)]
    assert decided and "C-SSRS" in raised_event.reason and "PHQ-9 item 9" in raised_event.reason


def test_an_unscorable_submission_with_a_risk_signal_is_escalated(escalation: EscalationApplication) -> None:
    rejected = event_of(AssessmentRejected, actor=SERVICE, submission_id=uuid4(), course_id=uuid4(), plan_id=uuid4(),
                        client_id="client-4", instrument="PHQ-9", answered_at=T0, rejection_reason="item 3 is 7",
                        suicide_item_positive=True)
    (crisis,) = crises(decide(escalation, rejected))
    assert crisis.trigger is EscalationTrigger.UNSCORABLE_WITH_RISK_SIGNAL


def test_a_score_without_risk_raises_nothing(escalation: EscalationApplication) -> None:
    assert decide(escalation, scored()) == []


def test_another_services_dead_letter_with_a_risk_signal_is_escalated_at_once(escalation: EscalationApplication) -> None:
    def dead(risk: bool) -> MessageDeadLettered:
        return event_of(MessageDeadLettered, actor=SERVICE, service="assessment", subject="care.clinical.v1.x", stream_sequence=9,
                        failed_event_type="therapy_course.questionnaire_submitted", error_class="ValueError", attempts=5,
                        risk_signal=risk, plan_id=uuid4(), client_id="client-4")

    (crisis,) = crises(decide(escalation, dead(True), application="assessment"))
    assert crisis.trigger is EscalationTrigger.UNPROCESSABLE_RISK_SIGNAL and crisis.severity is EscalationSeverity.IMMEDIATE
    assert decide(escalation, dead(False), application="assessment") == []


# ----------------------------------------------------------------- decoding


def test_fields_a_service_does_not_know_yet_are_tolerated(escalation: EscalationApplication) -> None:
    message = inbound_of(scored(suicide_item_positive=True))
    grown = type(message)(**{**message.__dict__, "body": {**message.body, "added_in_v1_1": {"any": "thing"}}})
    assert len(crises(decide(escalation, grown))) == 1


def test_a_body_that_is_not_its_event_fails_naming_fields_never_values(escalation: EscalationApplication) -> None:
    message = inbound_of(scored(suicide_item_positive=True))
    broken = type(message)(**{**message.__dict__, "body": {**message.body, "total": "Called me at home at 3am"}})
    with pytest.raises(UndecodableEventError) as caught:
        escalation.decide(broken)
    assert caught.value.field_paths == ["total"] and "3am" not in str(caught.value)


def test_a_reaction_table_refuses_what_is_not_a_public_event() -> None:
    with pytest.raises(ValueError, match="not a public event"):
        Reactions({Settings: lambda app, event, inbound: []})  # type: ignore[dict-item]


# ----------------------------------------------------------------- scheduling


def test_scheduling_plans_a_course_and_re_plans_it_for_emergency_support(tmp_path: Path) -> None:
    app = SchedulingApplication(Settings(data_dir=tmp_path))
    try:
        plan = uuid4()
        drafted = event_of(CarePlanDrafted, originator_id=plan, client_id="client-4", title="Episode",
                           strategy=Strategy.SHORT_TERM_MODERATE, therapy_models=[TherapyModel.EMOTIONAL_CALM])
        started = event_of(CourseStarted, plan_id=plan, client_id="client-4", modality=Modality.INTERPERSONAL, planned_sessions=12)
        decided = decide(app, drafted, started)
        (schedule,) = [a for a in decided if isinstance(a, CourseSchedule)]
        sessions = [s for s in schedule.slots if s.kind is SlotKind.SESSION]
        assert len(sessions) == 12 and schedule.strategy is Strategy.SHORT_TERM_MODERATE
        activated = event_of(EmergencySupportActivated, originator_id=plan, version=2, at=T0.replace(hour=10),
                             crisis_id=uuid4(), previous_strategy=Strategy.SHORT_TERM_MODERATE, reason="Crisis raised")
        decide(app, activated)
        after: CourseSchedule = app.find(CourseSchedule, schedule.id)
        assert after.strategy is Strategy.EMERGENCY_SUPPORT
        assert any(s.kind is SlotKind.CHECK_IN for s in after.slots)
        assert schedule.id in app.timers
    finally:
        app.close()


# ----------------------------------------------------------------- care policies


@pytest.fixture
def care(tmp_path: Path) -> Iterator[CareApplication]:
    app = CareApplication(Settings(data_dir=tmp_path))
    yield app
    app.close()


def _plan(care: CareApplication) -> UUID:
    return care.handle(c.DraftCarePlan(client_id="client-4", title="Episode", strategy=Strategy.SHORT_TERM_MODERATE,
                                       therapy_models=[TherapyModel.EMOTIONAL_CALM]), CLINICIAN).aggregate_id


def raised(plan: UUID | None, severity: EscalationSeverity, trigger: EscalationTrigger) -> EscalationRaised:
    return event_of(EscalationRaised, actor=Actor(id="escalation-service", role=Role.SERVICE), plan_id=plan,
                    client_id="client-4", trigger=trigger, severity=severity, source_event_id=str(uuid4()),
                    reason="PHQ-9 item 9 above 0")


def test_an_urgent_crisis_raises_the_plans_risk_and_enters_emergency_support(care: CareApplication) -> None:
    plan = _plan(care)
    crisis = raised(plan, EscalationSeverity.URGENT, EscalationTrigger.PHQ9_SUICIDE_ITEM)
    decide(care, crisis)
    after = care.get_plan(plan)
    assert after.strategy is Strategy.EMERGENCY_SUPPORT and crisis.originator_id in after.open_crises
    assert after.risk_level is RiskLevel.MODERATE  # an urgent crisis: at least moderate risk
    resolved = event_of(CrisisResolved, originator_id=crisis.originator_id, version=4,
                        actor=Actor(id="supervisor-3", role=Role.SUPERVISOR), plan_id=plan, outcome="Safe",
                        reason="Reviewed")
    decide(care, resolved)
    assert crisis.originator_id not in care.get_plan(plan).open_crises


def test_review_escalations_and_fail_safe_crises_without_a_plan_leave_plans_alone(care: CareApplication) -> None:
    plan = _plan(care)
    assert decide(care, raised(plan, EscalationSeverity.REVIEW, EscalationTrigger.RELIABLE_DETERIORATION)) == []
    assert decide(care, raised(None, EscalationSeverity.IMMEDIATE, EscalationTrigger.UNPROCESSABLE_RISK_SIGNAL)) == []
    assert care.get_plan(plan).version == 1
