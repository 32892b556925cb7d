"""The instruments the assessment service scores: one module each, registered here once.

To add an instrument, write its module (its ``InstrumentDefinition``: items and answer
ranges, scoring, severity bands, change norms, LOINC codes, suicide items) and add one
member to ``Instrument`` below. Everything else reads this registry: the catalogue
(``domain.catalogues.instruments``), scoring, change over time, the FHIR views.
"""

from __future__ import annotations

from enum import Enum
from typing import Self

from domain.assessment.instruments import cssrs, gad7, phq9
from domain.assessment.instruments.definition import InstrumentDefinition


class Instrument(str, Enum):
    # The registry: one line per instrument. A member's value is its definition's name
    # ("PHQ-9"), and the member carries the definition.
    PHQ9 = phq9.PHQ9
    GAD7 = gad7.GAD7
    CSSRS_SCREENER = cssrs.CSSRS_SCREENER

    definition: InstrumentDefinition

    def __new__(cls, definition: InstrumentDefinition) -> Self:
        member = str.__new__(cls, definition.name)
        member._value_ = definition.name
        member.definition = definition
        return member

    @property
    def item_count(self) -> int:
        return self.definition.items


INSTRUMENTS: dict[Instrument, InstrumentDefinition] = {member: member.definition for member in Instrument}
_BY_NAME: dict[str, InstrumentDefinition] = {member.value: member.definition for member in Instrument}


def instrument_named(name: str) -> InstrumentDefinition | None:
    """The instrument called ``name`` ("PHQ-9"); None when no instrument has that name."""
    return _BY_NAME.get(name)


def has_suicide_item(name: str) -> bool:
    """Whether the instrument called ``name`` has an item about thoughts of death or
    self-harm whose answer above 0 needs review whatever the total (PHQ-9 item 9). False
    for the C-SSRS screener, which grades suicide risk as a whole, and for an unknown name."""
    found = instrument_named(name)
    return found is not None and bool(found.suicide_items)


__all__ = ["INSTRUMENTS", "Instrument", "InstrumentDefinition", "has_suicide_item", "instrument_named"]
