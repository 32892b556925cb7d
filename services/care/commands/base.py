"""What every command of the care application shares: the two base classes (every
application's, from :mod:`services.shared.commands`), the read access commands get to
other aggregates, and the errors of commands themselves.

A command names its target aggregate and says what to ask of it; the application does
the rest (load, concurrency check, save). Creation commands make a new aggregate.
"""

from __future__ import annotations

from typing import Protocol
from uuid import UUID

from domain.care_plan import CarePlan
from domain.errors import EmergencySupportError
from domain.inventory import Inventory
from services.shared.commands import Command, CreationCommand


class Lookup(Protocol):
    """Read access to other aggregates, for commands whose rule spans two of them."""

    def get_plan(self, plan_id: UUID) -> CarePlan: ...
    def get_inventory(self, inventory_id: UUID) -> Inventory: ...
    def crisis_held_open(self, crisis_id: UUID) -> UUID | None:
        """The plan of ``crisis_id`` if the escalation service holds it open, else None."""
        ...


class CrisisNotHeldError(EmergencySupportError):
    """Emergency support names a crisis the escalation service does not hold open for this plan."""


__all__ = ["Command", "CreationCommand", "CrisisNotHeldError", "Lookup"]
