"""``careplan demo``: one client's story through the care application, as a timeline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from uuid import UUID

import nats
from rich.console import Console
from rich.table import Table

from domain.base import Actor, DomainEvent, Role
from domain.catalogues.care import (
    CopingSkill,
    EnhancementStage,
    ExpectationHolder,
    ExpertBacking,
    GoalComparator,
    HarmfulEmotion,
)
from domain.catalogues.escalation import EscalationSeverity
from domain.catalogues.instruments import Instrument
from domain.catalogues.modalities import HomeworkKind, InitialPhaseTask, Modality
from domain.catalogues.problem_areas import ProblemArea, RelationshipPeriod, RelationshipRole
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from domain.escalation.crisis import Crisis
from domain.escalation.policy import DEFAULT_POLICY, EscalationPolicy
from domain.events.care_plan import GoalTarget
from services.assessment.service import AssessmentApplication
from services.care import commands as c
from services.care.application import CareApplication
from services.escalation.commands import AcknowledgeEscalation, ResolveCrisis
from services.escalation.service import EscalationApplication
from services.scheduling.service import SchedulingApplication
from services.shared.commands import CommandMeta
from services.shared.persistence import OutboxStores
from services.shared.settings import Settings
from services.system import System

CLINICIAN = Actor(id="clinician-17", role=Role.CLINICIAN)
ONCALL = Actor(id="oncall-sup-4", role=Role.SUPERVISOR)  # crises are acknowledged by supervisors
SUPERVISOR = Actor(id="supervisor-3", role=Role.SUPERVISOR)
CLIENT_APP = Actor(id="intake-portal", role=Role.INTEGRATION)


#: Minutes become seconds so that a timeout to the next level happens while you watch.
DEMO_POLICY = EscalationPolicy(
    levels=DEFAULT_POLICY.levels,
    ack_timeouts={severity: timedelta(seconds=3) for severity in EscalationSeverity},
)


def run_demo(settings: Settings, console: Console) -> None:
    """Starts the system (NATS, relay, services), tells the story through the care
    application, waits until every event has reached JetStream, then prints the timeline."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    policy_file = settings.data_dir / "demo-escalation-policy.json"
    policy_file.write_text(DEMO_POLICY.model_dump_json(indent=2))
    settings = settings.model_copy(update={"escalation_policy_file": policy_file})
    with System(settings) as system:
        console.print(system.ready_line())
        app = CareApplication(settings)
        try:
            plan_id, course_id, inventory_id = _story(app)
            console.print("Story told; now a crisis: a PHQ-9 with item 9 positive …")
            _crisis(app, settings, plan_id, course_id, console)
            last = app.recorder.max_notification_id() or 0
            _wait_relayed(settings, CareApplication.name, last)
            service_events = [
                *_caught_up_events(settings, system.url_as("auditor"), AssessmentApplication.name),
                *_caught_up_events(settings, system.url_as("auditor"), EscalationApplication.name),
                *_caught_up_events(settings, system.url_as("auditor"), SchedulingApplication.name),
            ]
            _print(app, console, plan_id, course_id, inventory_id, settings, service_events)
            console.print(asyncio.run(_stream_summary(system.url_as("auditor"), settings, last)))
            _audit(settings, console, plan_id)
        finally:
            app.close()


def _crisis(app: CareApplication, settings: Settings, plan_id: UUID, course_id: UUID, console: Console) -> None:
    """Item 9 positive → scored → escalation (urgent) → emergency support on the plan → no
    acknowledgement in time → level 2 → acknowledged → resolved → a clinician ends
    emergency support."""
    story = CommandMeta(actor=CLIENT_APP)
    app.handle(
        c.SubmitQuestionnaire(
            course_id=course_id, instrument=Instrument.PHQ9.value, answers=[2, 2, 2, 2, 2, 2, 2, 2, 1],
            answered_at=datetime.now(UTC),
        ),
        story,
    )
    _until(lambda: app.get_plan(plan_id).strategy is Strategy.EMERGENCY_SUPPORT, "emergency support on the plan")
    (crisis_id,) = app.get_plan(plan_id).open_crises
    console.print(f"  crisis {crisis_id}: plan in emergency support; waiting for the level-1 timeout …")
    escalation = EscalationApplication(settings)
    try:
        _until(lambda: escalation.find(Crisis, crisis_id).level >= 2, "escalation to level 2")
        escalation.handle(AcknowledgeEscalation(crisis_id=crisis_id, reason="Phoned the client within minutes; safety plan reviewed"),
                          CommandMeta(actor=ONCALL))
        escalation.handle(ResolveCrisis(
            crisis_id=crisis_id, outcome="Client safe; crisis line and partner informed; follow-up tomorrow",
            reason="Risk reassessed by phone: no current intent",
        ), CommandMeta(actor=ONCALL))
    finally:
        escalation.close()
    _until(lambda: not app.get_plan(plan_id).open_crises, "the resolution recorded on the plan")
    app.handle(
        c.EndEmergencySupport(
            plan_id=plan_id, strategy=Strategy.MID_TERM_IN_DEPTH,
            reason="Crisis resolved; back to the in-depth work on the role dispute",
        ),
        CommandMeta(actor=SUPERVISOR),  # leaving emergency support is a supervisor's decision
    )


def _audit(settings: Settings, console: Console, plan_id: UUID) -> None:
    """What an auditor can do with the record just made (each read is itself recorded)."""
    from services.audit.auditor import Auditor

    auditor = Auditor(settings, Actor(id="governance-2", role=Role.AUDITOR), purpose="Demo: serious incident review")
    plan = auditor.history(plan_id)[1]
    crisis_start = next(e for e in plan if e.event_type == "EmergencySupportActivated")
    before = auditor.replay(plan_id, at=crisis_start.recorded - timedelta(microseconds=1))
    traced = auditor.trace(crisis_start.event_id)
    reports = auditor.verify()
    console.print(
        f"\nAudit: the plan just before the crisis was v{before.version} with strategy {before.state['strategy']}; "
        f"emergency support traces back through {' → '.join(h.event_type for h in traced.causes)}; "
        + ", ".join(f"{r.store} chain {'OK' if r.ok else 'BROKEN'} ({r.events})" for r in reports)
        + ". Try: careplan audit trace|history|replay|diff|export|verify --data-dir "
        f"{settings.data_dir} --local --purpose why (or through the API: --token T instead of --local)"
    )


def _until(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            msg = f"the demo waited {timeout:.0f} s for {what}"
            raise RuntimeError(msg)
        time.sleep(0.1)


def _wait_relayed(settings: Settings, application: str, notification_id: int, timeout: float = 60) -> None:
    stores = OutboxStores(settings, application)
    try:
        deadline = time.monotonic() + timeout
        while (stores.tracking.max_tracking_id(application) or 0) < notification_id:
            if time.monotonic() > deadline:
                msg = f"The {application} relay did not publish up to notification {notification_id} within {timeout:.0f} s"
                raise RuntimeError(msg)
            time.sleep(0.05)
    finally:
        stores.close()


def _caught_up_events(settings: Settings, url: str, application: str, timeout: float = 60) -> list[DomainEvent]:
    """Everything a service decided about the story, once its consumer has caught up with
    the stream and its relay has published it all."""

    async def caught_up() -> bool:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().consumer_info(settings.stream_name, application)
            return info.num_pending == 0 and info.num_ack_pending == 0
        finally:
            await nc.close()

    _until(lambda: asyncio.run(caught_up()), f"the {application} service to catch up", timeout)
    stores = OutboxStores(settings, application)
    try:
        last = stores.recorder.max_notification_id() or 0
        events = [stores.mapper.to_domain_event(n) for n in stores.recorder.select_notifications(start=1, limit=last)]
    finally:
        stores.close()
    _wait_relayed(settings, application, last, timeout)
    return events


async def _stream_summary(url: str, settings: Settings, last: int) -> str:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        # Counted per subject from the stream's info: the auditor user may read that, not make a consumer.
        info = await js.stream_info(settings.stream_name, subjects_filter="care.>")
        events = sum((info.state.subjects or {}).values())
        newest = await js.get_last_msg(settings.stream_name, "care.>")
        headers = newest.headers or {}
        return (
            f"JetStream stream {settings.stream_name} holds {events} events (and {info.state.messages - events} relay "
            "watermarks); the newest event is\n"
            f"  {newest.subject}\n  ce-type {headers.get('ce-type')}, ce-sequence {headers.get('ce-sequence')}, "
            f"Nats-Msg-Id {headers.get('Nats-Msg-Id')}\n"
            f"Store and stream stay in {settings.data_dir.resolve()} (care.sqlite, nats/)."
        )
    finally:
        await nc.close()


def _story(app: CareApplication) -> tuple[UUID, UUID, UUID]:
    meta = CommandMeta(actor=CLINICIAN)
    run = app.handle
    first_session = datetime.combine(date.today() + timedelta(days=7 - date.today().weekday()), datetime.min.time(), UTC)
    first_session += timedelta(hours=10)

    plan = run(
        c.DraftCarePlan(
            client_id="client-0042",
            title="Low mood after a move and a strained partnership",
            strategy=Strategy.SHORT_TERM_MODERATE,
            therapy_models=[TherapyModel.STEADY_PROGRESS, TherapyModel.EMOTIONAL_CALM],
        ),
        meta,
    )
    story = CommandMeta(actor=CLINICIAN, correlation_id=plan.correlation_id)
    pid = plan.aggregate_id
    run(c.RecordConsent(plan_id=pid, note="Written consent to 16 weeks of therapy."), story)
    run(c.ExplainConfidentiality(plan_id=pid, note="Limits explained: risk to self or others."), story)
    goal = c.AddGoal(
        plan_id=pid,
        description="Mood lifts enough to enjoy weekends again",
        target=GoalTarget(
            instrument=Instrument.PHQ9, comparator=GoalComparator.BELOW, threshold=5, by=date.today() + timedelta(weeks=16)
        ),
    )
    run(goal, story)
    run(c.AgreeGoal(plan_id=pid, goal_id=goal.goal_id), story)
    run(c.ActivatePlan(plan_id=pid), story)

    expectation = c.RecordExpectation(
        plan_id=pid, holder=ExpectationHolder.SELF, statement="I should never feel anxious or low again"
    )
    run(expectation, story)
    run(
        c.IdentifyUnrealisticExpectation(
            plan_id=pid,
            expectation_id=expectation.expectation_id,
            rationale="An absolute standard no one meets; each low day is read as failure and deepens the low mood.",
        ),
        story,
    )
    run(
        c.AdjustExpectation(
            plan_id=pid,
            expectation_id=expectation.expectation_id,
            fair_goal="Notice low moments early and use one coping step before they take over the day",
            rationale="A fair goal the client can meet and build on; agreed in session.",
        ),
        story,
    )
    run(
        c.GiveExpertBacking(
            plan_id=pid,
            expectation_id=expectation.expectation_id,
            backing=ExpertBacking.ENCOURAGEMENT,
            note="Named two recent weekends when the client recovered a low morning.",
        ),
        story,
    )
    run(c.StartEnhancementStage(plan_id=pid, stage=EnhancementStage.EXPLORE_CORE_BELIEFS), story)
    run(
        c.CompleteEnhancementStage(
            plan_id=pid, stage=EnhancementStage.EXPLORE_CORE_BELIEFS, note="Core belief: 'I am only worth what I achieve.'"
        ),
        story,
    )
    run(c.StartEnhancementStage(plan_id=pid, stage=EnhancementStage.RELEASE_HARMFUL_EMOTIONS), story)
    run(c.ReleaseHarmfulEmotion(plan_id=pid, emotion=HarmfulEmotion.GUILT, note="Guilt about leaving the old job."), story)

    inventory = run(c.OpenInventory(plan_id=pid), story)
    iid = inventory.aggregate_id
    partner = c.RecordRelationship(
        inventory_id=iid, alias="Partner-A", role=RelationshipRole.PARTNER, period=RelationshipPeriod.PRESENT,
        closeness=4, satisfaction=2,
    )
    run(partner, story)
    run(
        c.RecordRelationship(
            inventory_id=iid, alias="Mother-B", role=RelationshipRole.PARENT, period=RelationshipPeriod.PRESENT,
            closeness=3, satisfaction=4,
        ),
        story,
    )
    run(
        c.NoteRelationshipPattern(
            inventory_id=iid, relationship_id=partner.relationship_id, pattern="Arguments about chores end in silence for days"
        ),
        story,
    )
    run(
        c.NoteRelationshipExpectation(
            inventory_id=iid, relationship_id=partner.relationship_id,
            expectation="Partner should notice without being told when the client is struggling", mutual=False,
        ),
        story,
    )
    run(
        c.IdentifyProblemArea(
            inventory_id=iid, area=ProblemArea.ROLE_DISPUTE, evidence="Non-reciprocal expectations with Partner-A"
        ),
        story,
    )
    run(
        c.IdentifyProblemArea(
            inventory_id=iid, area=ProblemArea.ROLE_TRANSITION, evidence="Moved city and changed job three months ago"
        ),
        story,
    )
    run(
        c.ChooseProblemAreaFocus(
            inventory_id=iid,
            areas=[ProblemArea.ROLE_DISPUTE],
            rationale="The dispute is current, linked to mood changes, and the client wants to work on it.",
        ),
        story,
    )

    course = run(c.StartCourse(plan_id=pid, modality=Modality.INTERPERSONAL, planned_sessions=14), story)
    cid = course.aggregate_id
    sessions = [
        c.ScheduleSession(course_id=cid, scheduled_for=first_session + timedelta(weeks=i)) for i in range(3)
    ]
    for s in sessions:
        run(s, story)
    portal = CommandMeta(actor=CLIENT_APP, correlation_id=plan.correlation_id)
    run(
        c.SubmitQuestionnaire(
            course_id=cid, instrument=Instrument.PHQ9.value, answers=[2, 2, 1, 2, 1, 2, 1, 1, 0],
            answered_at=first_session - timedelta(hours=1),
        ),
        portal,
    )
    run(
        c.SubmitQuestionnaire(
            course_id=cid, instrument=Instrument.GAD7.value, answers=[2, 1, 2, 1, 1, 1, 0],
            answered_at=first_session - timedelta(hours=1),
        ),
        portal,
    )
    run(c.HoldSession(course_id=cid, session_id=sessions[0].session_id, held_at=first_session), story)
    for task in InitialPhaseTask:
        run(c.CompleteInitialTask(course_id=cid, task=task), story)
    homework = c.AssignHomework(
        course_id=cid, kind=HomeworkKind.COMMUNICATION_EXERCISE,
        description="Ask Partner-A for one specific help with chores, using an 'I' statement",
        due=first_session + timedelta(weeks=1),
    )
    run(homework, story)
    run(c.EnterMiddlePhase(course_id=cid, inventory_id=iid), story)
    run(
        c.HoldSession(course_id=cid, session_id=sessions[1].session_id, held_at=first_session + timedelta(weeks=1)),
        story,
    )
    run(
        c.ReviewHomework(
            course_id=cid, homework_id=homework.homework_id, completed=True, note="Asked twice; once it went well."
        ),
        story,
    )
    run(c.TargetCopingSkill(plan_id=pid, skill=CopingSkill.COMMUNICATION), story)
    run(
        c.ChangeStrategy(
            plan_id=pid,
            strategy=Strategy.MID_TERM_IN_DEPTH,
            reason="The role dispute is entrenched; a mid-term in-depth format gives room for guided exploration.",
        ),
        story,
    )
    return pid, cid, iid


def _print(
    app: CareApplication,
    console: Console,
    plan_id: UUID,
    course_id: UUID,
    inventory_id: UUID,
    settings: Settings,
    service_events: list[DomainEvent],
) -> None:
    events: list[tuple[str, DomainEvent]] = []
    for label, aggregate_id in (("plan", plan_id), ("course", course_id), ("inventory", inventory_id)):
        events.extend((label, e) for e in app.history(aggregate_id))
    events.extend((type(e).__module__.rsplit(".", 1)[-1], e) for e in service_events)
    events.sort(key=lambda pair: pair[1].timestamp)

    table = Table(title="Care history of client-0042 (recorded order)", show_lines=False, expand=True)
    table.add_column("recorded", no_wrap=True)
    table.add_column("what", ratio=3)
    table.add_column("who", no_wrap=True)
    table.add_column("why", ratio=2)
    for label, event in events:
        table.add_row(
            event.timestamp.strftime("%H:%M:%S.%f")[:-3],
            f"[bold]{label} v{event.originator_version}[/bold] {event.describe()}",
            f"{event.actor.id} ({event.actor.role.value})",
            event.reason or "",
        )
    console.print(table)

    plan = app.get_plan(plan_id)
    course = app.get_course(course_id)
    console.print(
        f"\nPlan {plan.id}: status [bold]{plan.status.value}[/bold], strategy [bold]{plan.strategy.title}[/bold], "
        f"risk {plan.risk_level.value}, models {', '.join(m.title for m in plan.therapy_models)}"
    )
    for expectation in plan.expectations.values():
        console.print(f"Expectation chain: '{expectation.original_statement}'")
        for link in expectation.adjustments:
            console.print(f"  → '{link.adjusted_statement}' (v{link.version}, {link.actor.id}: {link.reason})")
    console.print(
        f"Course {course.id}: {course.modality.value}, phase {course.phase.value}, "
        f"{course.sessions_held}/{course.planned_sessions} sessions held, focus {[a.value for a in course.problem_areas]}"
    )
    console.print(f"\n{len(events)} events stored in this story")
