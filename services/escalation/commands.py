"""The escalation service's commands: people acknowledging and resolving crises (the same
style as the care application's: ``EscalationApplication.handle(command, meta)``)."""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID

from domain.base import AggregateRoot, CommandContext
from domain.escalation.crisis import Crisis
from services.shared.commands import Command


class CrisisCommand(Command):
    aggregate_type: ClassVar[type[AggregateRoot]] = Crisis
    crisis_id: UUID

    def target_id(self) -> UUID:
        return self.crisis_id


class AcknowledgeEscalation(CrisisCommand):
    """Someone has the crisis in hand: escalation to the next level stops."""

    reason: str | None = None

    def execute(self, aggregate: Crisis, ctx: CommandContext, lookup: Any) -> None:
        aggregate.acknowledge(reason=self.reason, ctx=ctx)


class ResolveCrisis(CrisisCommand):
    """The crisis is over, with its outcome."""

    outcome: str
    reason: str | None = None

    def execute(self, aggregate: Crisis, ctx: CommandContext, lookup: Any) -> None:
        aggregate.resolve(outcome=self.outcome, reason=self.reason, ctx=ctx)
