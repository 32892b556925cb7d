"""The care application on a real event store: SQLite and PostgreSQL run the same tests."""

from __future__ import annotations

import threading
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.catalogues.care import ExpectationHolder, PlanStatus
from domain.catalogues.modalities import InitialPhaseTask, Modality
from domain.catalogues.problem_areas import ProblemArea
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from domain.errors import DomainError, PlanNotActiveError, ProblemAreaNotChosenError
from domain.events.care_plan import ExpectationAdjusted
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.shared.errors import AggregateMissingError, ConcurrencyConflictError, NotYetExistingError
from services.shared.clock import ManualClock
from services.shared.settings import Settings
from tests.conftest import CLINICIAN, T0
from tests.support.commands import plan_commands
from tests.support.invariants import check_invariants

META = CommandMeta(actor=CLINICIAN)


@pytest.fixture
def app(backend_settings: Settings, clock: ManualClock):  # type: ignore[no-untyped-def]
    application = CareApplication(backend_settings, clock=clock)
    yield application
    application.close()


def draft(app: CareApplication, meta: CommandMeta = META) -> UUID:
    return app.handle(
        c.DraftCarePlan(
            client_id="client-7", title="Episode 1", strategy=Strategy.SHORT_TERM_MODERATE,
            therapy_models=[TherapyModel.EMOTIONAL_CALM],
        ),
        meta,
    ).aggregate_id


def stored_count(app: CareApplication) -> int:
    return app.recorder.max_notification_id() or 0


def test_commands_are_stored_and_survive_a_restart(app: CareApplication, backend_settings: Settings) -> None:
    plan_id = draft(app)
    result = app.handle(c.AddGoal(plan_id=plan_id, description="Return to work part-time"), META)
    assert result.version == 2 and result.event_types == ["GoalAdded"]
    reopened = CareApplication(backend_settings)
    try:
        plan = reopened.get_plan(plan_id)
        assert plan.version == 2
        assert [g.description for g in plan.goals.values()] == ["Return to work part-time"]
        assert [type(e).__name__ for e in reopened.history(plan_id)] == ["CarePlanDrafted", "GoalAdded"]
    finally:
        reopened.close()


def test_every_event_names_its_cause_and_story(app: CareApplication) -> None:
    meta = CommandMeta(actor=CLINICIAN)
    plan_id = draft(app, meta)
    upstream = CommandMeta(actor=CLINICIAN, causation_id="0d6c...-escalation-raised", correlation_id=uuid4())
    app.handle(c.RaiseRisk(plan_id=plan_id, level="high", reason="Crisis raised"), upstream)
    drafted, raised = app.history(plan_id)
    assert drafted.causation_id == f"command:{meta.command_id}"
    assert (raised.causation_id, raised.correlation_id) == (upstream.causation_id, upstream.correlation_id)


def test_a_refused_command_writes_nothing_and_says_why(app: CareApplication) -> None:
    plan_id = draft(app)
    before = stored_count(app)
    with pytest.raises(DomainError, match="alliance"):
        app.handle(c.ActivatePlan(plan_id=plan_id), META)
    with pytest.raises(AggregateMissingError, match="check the id"):
        app.handle(c.ActivatePlan(plan_id=uuid4()), META)
    assert stored_count(app) == before
    assert app.get_plan(plan_id).status is PlanStatus.DRAFT


def test_a_stale_expected_version_is_a_conflict_and_writes_nothing(app: CareApplication) -> None:
    plan_id = draft(app)
    app.handle(c.AddGoal(plan_id=plan_id, description="One"), META.model_copy(update={"expected_version": 1}))
    before = stored_count(app)
    with pytest.raises(ConcurrencyConflictError, match="version 2, not 1"):
        app.handle(c.AddGoal(plan_id=plan_id, description="Two"), META.model_copy(update={"expected_version": 1}))
    assert stored_count(app) == before
    assert len(app.get_plan(plan_id).goals) == 1


def test_two_writers_racing_on_one_version_one_wins(backend_settings: Settings) -> None:
    first, second = CareApplication(backend_settings), CareApplication(backend_settings)
    try:
        plan_id = draft(first)
        second.get_plan(plan_id)  # both now hold version 1 (in their caches)
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def write(app: CareApplication, text: str) -> None:
            plan = app.get_plan(plan_id)
            barrier.wait()
            try:
                app.handle(c.AddGoal(plan_id=plan_id, description=text), META.model_copy(update={"expected_version": plan.version}))
                outcomes.append("ok")
            except ConcurrencyConflictError:
                outcomes.append("conflict")

        threads = [threading.Thread(target=write, args=(a, t)) for a, t in ((first, "A"), (second, "B"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["conflict", "ok"]
        assert first.get_plan(plan_id).version == 2
        # the loser's cache was evicted: its next command sees the winner's event
        second.handle(c.AddGoal(plan_id=plan_id, description="C"), META)
        assert len(second.get_plan(plan_id).goals) == 2
    finally:
        first.close()
        second.close()


def test_read_at_a_version_and_as_of_a_timestamp(app: CareApplication, clock: ManualClock) -> None:
    plan_id = draft(app)  # at T0
    clock.advance(hours=1)
    app.handle(c.ChangeStrategy(plan_id=plan_id, strategy=Strategy.COMBINED_APPROACH, reason="Needs both"), META)
    clock.advance(hours=1)
    app.handle(c.ChangeStrategy(plan_id=plan_id, strategy=Strategy.LONG_TERM_DEEP_WORK, reason="Longer work"), META)

    assert app.get_plan(plan_id, version=2).strategy is Strategy.COMBINED_APPROACH
    assert app.as_of(plan_id, T0).strategy is Strategy.SHORT_TERM_MODERATE
    assert app.as_of(plan_id, T0 + timedelta(minutes=90)).strategy is Strategy.COMBINED_APPROACH
    assert app.as_of(plan_id, T0 + timedelta(hours=1)).version == 2  # an event at exactly that time is included
    assert app.as_of(plan_id, T0 + timedelta(days=1)).strategy is Strategy.LONG_TERM_DEEP_WORK
    with pytest.raises(NotYetExistingError, match="did not exist yet"):
        app.as_of(plan_id, T0 - timedelta(seconds=1))
    with pytest.raises(AggregateMissingError):
        app.as_of(uuid4(), T0)
    with pytest.raises(AggregateMissingError, match="version 9"):
        app.get_plan(uuid4(), version=9)


def test_cross_aggregate_rules(app: CareApplication) -> None:
    plan_id = draft(app)
    inventory_id = app.handle(c.OpenInventory(plan_id=plan_id), META).aggregate_id
    course_id = app.handle(
        c.StartCourse(plan_id=plan_id, modality=Modality.INTERPERSONAL, planned_sessions=16), META
    ).aggregate_id
    course = app.get_course(course_id)
    assert course.client_id == "client-7" and course.plan_id == plan_id
    app.handle(c.CompleteInitialTask(course_id=course_id, task=InitialPhaseTask.TREATMENT_CONTRACT), META)
    with pytest.raises(ProblemAreaNotChosenError, match="inventory"):
        app.handle(c.EnterMiddlePhase(course_id=course_id, inventory_id=inventory_id), META)
    app.handle(c.IdentifyProblemArea(inventory_id=inventory_id, area=ProblemArea.GRIEF, evidence="Loss of a parent"), META)
    app.handle(c.ChooseProblemAreaFocus(inventory_id=inventory_id, areas=[ProblemArea.GRIEF], rationale="Onset"), META)
    app.handle(c.EnterMiddlePhase(course_id=course_id, inventory_id=inventory_id), META)
    assert app.get_course(course_id).problem_areas == [ProblemArea.GRIEF]
    app.handle(c.RevokePlan(plan_id=plan_id, reason="Transferred"), META)
    with pytest.raises(PlanNotActiveError):
        app.handle(c.StartCourse(plan_id=plan_id, modality=Modality.SUPPORTIVE, planned_sessions=6), META)


def test_snapshots_give_the_same_state_as_a_full_replay(backend_settings: Settings) -> None:
    settings_ = backend_settings.model_copy(update={"snapshot_interval": 10, "aggregate_cache_size": 0})
    app = CareApplication(settings_)
    try:
        plan_id = draft(app)
        eid = uuid4()
        app.handle(c.RecordExpectation(plan_id=plan_id, expectation_id=eid, holder=ExpectationHolder.SELF, statement="v0"), META)
        app.handle(c.IdentifyUnrealisticExpectation(plan_id=plan_id, expectation_id=eid, rationale="r"), META)
        for i in range(1, 35):
            app.handle(c.AdjustExpectation(plan_id=plan_id, expectation_id=eid, fair_goal=f"v{i}", rationale=f"r{i}"), META)
        assert app.snapshots is not None
        assert [s.originator_version for s in app.snapshots.get(plan_id)] == [10, 20, 30]
        with_snapshots = app.get_plan(plan_id)
        history = list(app.history(plan_id))
        check_invariants(with_snapshots, history)
        assert len(with_snapshots.expectations[eid].adjustments) == 34
        assert sum(isinstance(e, ExpectationAdjusted) for e in history) == 34
    finally:
        app.close()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(commands=st.lists(plan_commands(UUID(int=0)), max_size=25))
def test_random_sequences_on_the_store_keep_invariants_and_refusals_write_nothing(
    app: CareApplication, commands: list[c.Command]
) -> None:
    plan_id = draft(app)
    for command in commands:
        command = command.model_copy(update={"plan_id": plan_id})
        before = stored_count(app)
        try:
            app.handle(command, META)
        except DomainError:
            assert stored_count(app) == before
            continue
        assert stored_count(app) == before + 1
        check_invariants(app.get_plan(plan_id), list(app.history(plan_id)))
