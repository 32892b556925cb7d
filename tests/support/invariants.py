"""Invariants that no sequence of accepted commands may break."""

from __future__ import annotations

from domain.base import AggregateRoot, DomainEvent, project
from domain.care_plan import CarePlan
from domain.catalogues.care import ENHANCEMENT_ORDER, PlanStatus
from domain.catalogues.modalities import CoursePhase, Modality
from domain.catalogues.problem_areas import MAX_FOCUS_AREAS
from domain.catalogues.strategies import Strategy
from domain.inventory import Inventory
from domain.therapy_course import CourseStatus, TherapyCourse


def check_invariants(aggregate: AggregateRoot, history: list[DomainEvent]) -> None:
    assert aggregate.version == len(history)
    assert [e.originator_version for e in history] == list(range(1, len(history) + 1))
    replayed = project(None, history)
    assert replayed.model_dump() == aggregate.model_dump(), "replaying the history gives another state"
    if isinstance(aggregate, CarePlan):
        _care_plan(aggregate)
    elif isinstance(aggregate, TherapyCourse):
        _course(aggregate)
    elif isinstance(aggregate, Inventory):
        _inventory(aggregate)


def _care_plan(plan: CarePlan) -> None:
    assert isinstance(plan.strategy, Strategy)
    if plan.open_crises:
        assert plan.strategy is Strategy.EMERGENCY_SUPPORT
    assert plan.therapy_models and len(set(plan.therapy_models)) == len(plan.therapy_models)
    if plan.status in (PlanStatus.ACTIVE, PlanStatus.ON_HOLD, PlanStatus.COMPLETED):
        assert plan.consent_recorded and plan.confidentiality_explained
    done = plan.enhancement.completed_stages
    assert tuple(done) == ENHANCEMENT_ORDER[: len(done)]
    if plan.enhancement.current_stage is not None:
        assert plan.enhancement.current_stage is ENHANCEMENT_ORDER[len(done)]
    for expectation in plan.expectations.values():
        chain = expectation.adjustments
        if chain:
            assert expectation.identified_unrealistic
            assert chain[0].previous_statement == expectation.original_statement
            assert all(a.adjusted_statement == b.previous_statement for a, b in zip(chain, chain[1:]))
            assert expectation.statement == chain[-1].adjusted_statement
            assert all(link.reason for link in chain)
        else:
            assert expectation.statement == expectation.original_statement


def _course(course: TherapyCourse) -> None:
    active = course.active_sessions
    assert len(active) <= course.planned_sessions
    numbers = [s.number for s in active]
    assert len(numbers) == len(set(numbers))
    if course.modality is Modality.INTERPERSONAL and course.phase is not CoursePhase.INITIAL:
        assert 1 <= len(course.problem_areas) <= MAX_FOCUS_AREAS
    if course.status is CourseStatus.COMPLETED:
        assert course.phase is CoursePhase.TERMINATION


def _inventory(inventory: Inventory) -> None:
    assert set(inventory.focus) <= set(inventory.problem_areas)
    assert len(inventory.focus) <= MAX_FOCUS_AREAS and len(set(inventory.focus)) == len(inventory.focus)
    aliases = [r.alias for r in inventory.relationships.values()]
    assert len(aliases) == len(set(aliases))
    assert all(1 <= r.closeness <= 5 and 1 <= r.satisfaction <= 5 for r in inventory.relationships.values())
