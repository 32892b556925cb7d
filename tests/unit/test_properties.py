"""Random command sequences against each aggregate, in memory.

No sequence of accepted commands breaks an invariant (replaying the history gives the
same state, and the clinical invariants hold); every refused command leaves the
aggregate and its pending events exactly as they were.
"""

from __future__ import annotations

from uuid import UUID

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.base import AggregateRoot, DomainEvent
from domain.care_plan import CarePlan
from domain.catalogues.modalities import Modality
from domain.catalogues.strategies import Strategy
from domain.catalogues.therapy_models import TherapyModel
from domain.errors import DomainError
from domain.inventory import Inventory
from domain.therapy_course import TherapyCourse
from services.care import commands as c
from services.care.commands import Command
from tests.conftest import CLINICIAN, ESCALATION, SUPERVISOR, ctx
from tests.support.commands import course_commands, inventory_commands, plan_commands
from tests.support.invariants import check_invariants

PLAN_ID, COURSE_ID, INVENTORY_ID = UUID(int=101), UUID(int=102), UUID(int=103)
SETTINGS = settings(max_examples=150, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class InMemoryLookup:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    def get_plan(self, plan_id: UUID) -> CarePlan:
        raise AssertionError("not used")

    def get_inventory(self, inventory_id: UUID) -> Inventory:
        return self.inventory

    def crisis_held_open(self, crisis_id: UUID) -> UUID | None:
        return None


#: Crisis commands come from the care policies (escalation's reactions) and supervisors.
ACTOR_OF = {c.ActivateEmergencySupport: ESCALATION, c.RecordCrisisResolved: ESCALATION, c.EndEmergencySupport: SUPERVISOR}


def run_sequence(aggregate: AggregateRoot, commands: list[Command], lookup: InMemoryLookup) -> tuple[int, int]:
    history: list[DomainEvent] = list(aggregate.collect_events())
    accepted = refused = 0
    for command in commands:
        before = aggregate.model_dump()
        try:
            command.execute(aggregate, ctx(ACTOR_OF.get(type(command), CLINICIAN)), lookup)
        except DomainError as e:
            refused += 1
            assert str(e), "an error a user meets must say what to do"
            assert aggregate.model_dump() == before, f"{type(command).__name__} was refused but changed the state"
            assert aggregate.pending_events == []
            continue
        accepted += 1
        history.extend(aggregate.collect_events())
        check_invariants(aggregate, history)
    return accepted, refused


def new_plan() -> CarePlan:
    plan = CarePlan.draft(
        PLAN_ID, client_id="client-1", title="Episode", strategy=Strategy.SHORT_TERM_MODERATE,
        therapy_models=[TherapyModel.STEADY_PROGRESS], ctx=ctx(),
    )
    return plan


def new_inventory() -> Inventory:
    return Inventory.open(INVENTORY_ID, client_id="client-1", plan_id=PLAN_ID, ctx=ctx())


@SETTINGS
@given(st.lists(plan_commands(PLAN_ID), max_size=60))
def test_care_plan_sequences_keep_invariants(commands: list[Command]) -> None:
    run_sequence(new_plan(), commands, InMemoryLookup(new_inventory()))


@SETTINGS
@given(
    st.lists(inventory_commands(INVENTORY_ID), max_size=20),
    st.lists(course_commands(COURSE_ID, INVENTORY_ID), max_size=60),
    st.sampled_from([Modality.INTERPERSONAL, Modality.COGNITIVE_BEHAVIOURAL]),
)
def test_therapy_course_sequences_keep_invariants(
    inventory_cmds: list[Command], course_cmds: list[Command], modality: Modality
) -> None:
    inventory = new_inventory()
    run_sequence(inventory, inventory_cmds, InMemoryLookup(inventory))
    course = TherapyCourse.start(
        COURSE_ID, plan_id=PLAN_ID, client_id="client-1", modality=modality, planned_sessions=12, ctx=ctx()
    )
    run_sequence(course, course_cmds, InMemoryLookup(inventory))


@SETTINGS
@given(st.lists(inventory_commands(INVENTORY_ID), max_size=60))
def test_inventory_sequences_keep_invariants(commands: list[Command]) -> None:
    inventory = new_inventory()
    run_sequence(inventory, commands, InMemoryLookup(inventory))


def test_random_sequences_reach_both_paths() -> None:
    """Guards the generators: a sequence that is all refusals would prove nothing."""
    from hypothesis import find

    found = find(
        st.lists(plan_commands(PLAN_ID), min_size=30, max_size=30),
        lambda cmds: run_sequence(new_plan(), cmds, InMemoryLookup(new_inventory()))[0] >= 8,
        settings=settings(max_examples=500, deadline=None),
    )
    assert len(found) == 30
