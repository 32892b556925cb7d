"""Inventory rules: relationships by alias, patterns, expectations, problem areas and focus."""

from __future__ import annotations

from uuid import uuid4

import pytest

from domain.catalogues.problem_areas import ProblemArea, RelationshipPeriod, RelationshipRole
from domain.errors import InvalidValueError, ProblemAreaError, ReasonRequiredError, UnknownRelationshipError
from domain.events.inventory import ProblemAreaFocusChosen
from domain.inventory import Inventory
from tests.conftest import ctx
from tests.unit.test_care_plan import refused


def inventory() -> Inventory:
    return Inventory.open(uuid4(), client_id="client-1", plan_id=uuid4(), ctx=ctx())


def test_relationships_are_recorded_by_distinct_alias_and_rated_one_to_five() -> None:
    inv = inventory()
    rid = uuid4()
    inv.record_relationship(
        rid, alias="Sibling-C", role=RelationshipRole.SIBLING, period=RelationshipPeriod.PAST, closeness=2, satisfaction=1, ctx=ctx()
    )
    refused(
        inv, InvalidValueError, inv.record_relationship, uuid4(), alias="Sibling-C", role=RelationshipRole.FRIEND,
        period=RelationshipPeriod.PRESENT, closeness=3, satisfaction=3, ctx=ctx(),
    )
    for bad in (0, 6, True):
        refused(
            inv, InvalidValueError, inv.record_relationship, uuid4(), alias="Friend-D", role=RelationshipRole.FRIEND,
            period=RelationshipPeriod.PRESENT, closeness=bad, satisfaction=3, ctx=ctx(),
        )
    refused(
        inv, InvalidValueError, inv.record_relationship, uuid4(), alias="x" * 41, role=RelationshipRole.FRIEND,
        period=RelationshipPeriod.PRESENT, closeness=3, satisfaction=3, ctx=ctx(),
    )
    inv.revise_relationship(rid, closeness=3, satisfaction=2, period=RelationshipPeriod.PRESENT, reason="Reconnected", ctx=ctx())
    assert (inv.relationships[rid].closeness, inv.relationships[rid].period) == (3, RelationshipPeriod.PRESENT)
    refused(inv, InvalidValueError, inv.revise_relationship, rid, closeness=3, satisfaction=2, ctx=ctx())
    inv.note_pattern(rid, pattern="Withdraws after conflict", ctx=ctx())
    inv.note_relationship_expectation(rid, expectation="Sibling calls first", mutual=False, ctx=ctx())
    assert inv.relationships[rid].patterns == ["Withdraws after conflict"]
    assert inv.relationships[rid].expectations[0].mutual is False
    refused(inv, UnknownRelationshipError, inv.note_pattern, uuid4(), pattern="x", ctx=ctx())


def test_focus_is_one_or_two_identified_areas_with_rationale_and_can_be_revised() -> None:
    inv = inventory()
    refused(inv, ProblemAreaError, inv.choose_focus, [ProblemArea.GRIEF], rationale="x", ctx=ctx())
    inv.identify_problem_area(ProblemArea.GRIEF, evidence="Father died last spring", ctx=ctx())
    inv.identify_problem_area(ProblemArea.ROLE_TRANSITION, evidence="Retired in January", ctx=ctx())
    inv.identify_problem_area(ProblemArea.INTERPERSONAL_DEFICITS, evidence="Few close ties", ctx=ctx())
    refused(inv, ProblemAreaError, inv.identify_problem_area, ProblemArea.GRIEF, evidence="again", ctx=ctx())
    refused(inv, ReasonRequiredError, inv.choose_focus, [ProblemArea.GRIEF], rationale=None, ctx=ctx())
    refused(inv, ProblemAreaError, inv.choose_focus, [], rationale="x", ctx=ctx())
    refused(
        inv, ProblemAreaError, inv.choose_focus,
        [ProblemArea.GRIEF, ProblemArea.ROLE_TRANSITION, ProblemArea.INTERPERSONAL_DEFICITS], rationale="x", ctx=ctx(),
    )
    inv.choose_focus([ProblemArea.GRIEF], rationale="Most linked to onset", ctx=ctx())
    inv.choose_focus([ProblemArea.GRIEF, ProblemArea.ROLE_TRANSITION], rationale="Retirement compounds the loss", ctx=ctx())
    last = inv.pending_events[-1]
    assert isinstance(last, ProblemAreaFocusChosen)
    assert last.previous_areas == [ProblemArea.GRIEF]
    assert inv.focus == [ProblemArea.GRIEF, ProblemArea.ROLE_TRANSITION]


@pytest.mark.parametrize("alias", ["", "   "])
def test_alias_may_not_be_empty(alias: str) -> None:
    inv = inventory()
    refused(
        inv, InvalidValueError, inv.record_relationship, uuid4(), alias=alias, role=RelationshipRole.FRIEND,
        period=RelationshipPeriod.PRESENT, closeness=3, satisfaction=3, ctx=ctx(),
    )
