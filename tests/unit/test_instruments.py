"""The instrument registry: every instrument is whole, and what the rest of the code reads
from it (catalogue, suicide items, change norms) agrees with the published rules."""

from __future__ import annotations

import math

import pytest
from pydantic import TypeAdapter

from domain.assessment.change import RCI_CRITERION, against_baseline
from domain.assessment.instruments import (
    INSTRUMENTS,
    Instrument,
    InstrumentDefinition,
    has_suicide_item,
    instrument_named,
)
from domain.catalogues.instruments import ITEM_COUNTS, MAX_ANSWER_VALUE, MAX_SUBMITTED_ITEMS


def test_each_member_carries_the_definition_of_its_name() -> None:
    assert [member.value for member in Instrument] == ["PHQ-9", "GAD-7", "C-SSRS-screener"]
    for member, definition in INSTRUMENTS.items():
        assert definition.name == member.value
        assert instrument_named(member.value) is definition
    assert instrument_named("BDI-II") is None


def test_the_catalogue_reads_the_item_counts_from_the_registry() -> None:
    assert ITEM_COUNTS == {Instrument.PHQ9: 9, Instrument.GAD7: 7, Instrument.CSSRS_SCREENER: 6}
    assert Instrument.PHQ9.item_count == 9
    # events (a goal's target) name an instrument by its value
    assert TypeAdapter(Instrument).validate_python("GAD-7") is Instrument.GAD7
    assert TypeAdapter(Instrument).dump_python(Instrument.CSSRS_SCREENER, mode="json") == "C-SSRS-screener"


@pytest.mark.parametrize("definition", INSTRUMENTS.values(), ids=lambda d: d.name)
def test_every_answer_an_instrument_takes_passes_the_door(definition: InstrumentDefinition) -> None:
    """The course refuses answers outside 0 to MAX_ANSWER_VALUE before scoring sees them."""
    assert definition.items <= MAX_SUBMITTED_ITEMS
    assert all(0 <= low <= high <= MAX_ANSWER_VALUE for low, high in definition.answer_ranges)
    assert all(1 <= item <= definition.items for item in definition.suicide_items)


@pytest.mark.parametrize("definition", [d for d in INSTRUMENTS.values() if d.bands], ids=lambda d: d.name)
def test_severity_bands_cover_every_total(definition: InstrumentDefinition) -> None:
    uppers = [upper for upper, _ in definition.bands]
    assert uppers == sorted(uppers)
    assert uppers[-1] == sum(high for _, high in definition.answer_ranges)


@pytest.mark.parametrize("definition", [d for d in INSTRUMENTS.values() if d.change], ids=lambda d: d.name)
def test_the_rci_criterion_agrees_with_each_reliable_change_threshold(definition: InstrumentDefinition) -> None:
    norms = definition.change
    assert norms is not None
    one_point = 1 / (norms.sd1 * math.sqrt(2) * math.sqrt(1 - norms.retest_r))
    assert (norms.reliable_change - 1) * one_point <= RCI_CRITERION < norms.reliable_change * one_point
    top = sum(high for _, high in definition.answer_ranges)
    assert against_baseline(definition.name, top, top - norms.reliable_change).rci_reliable


def test_only_the_phq9_has_a_suicide_item_read_above_zero() -> None:
    """The C-SSRS screener grades suicide risk as a whole; its high risk escalates by itself."""
    phq9 = instrument_named("PHQ-9")
    assert has_suicide_item("PHQ-9") and phq9 is not None and phq9.suicide_items == (9,)
    assert not has_suicide_item("GAD-7")
    assert not has_suicide_item("C-SSRS-screener")
    assert not has_suicide_item("BDI-II")
