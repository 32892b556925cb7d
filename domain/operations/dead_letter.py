"""DeadLetter: a consumed message its service could not decide, until it is redriven.

Its id follows from the service and the message's stream position, so a message is
dead-lettered once however often the attempt is repeated. Redriving decides the message
again, in the service's own process, and records the outcome on the dead letter in the
same transaction as the decision's events: a dead letter is redriven at most once."""

from __future__ import annotations

from enum import Enum
from typing import Self
from uuid import UUID, uuid5

from domain.base import AggregateRoot, CommandContext, Role, require_reason, when
from domain.errors import DomainError, NotAuthorisedError
from domain.events.dead_letters import (
    DeadLetterRedriveFailed,
    DeadLetterRedriven,
    DeadLetterRedriveRequested,
    MessageDeadLettered,
)

DEAD_LETTER_NAMESPACE = UUID("2f6e8a14-5c3b-4d7e-9f10-6a2b4c8d0e35")
#: Who may ask for a dead letter to be decided again.
REDRIVERS = frozenset({Role.SUPERVISOR, Role.OPERATOR})


class DeadLetterStateError(DomainError):
    """The dead letter is not in a state that allows this (e.g. redriven already)."""

    code = "dead-letter-state"


class DeadLetterStatus(str, Enum):
    OPEN = "open"
    REDRIVE_REQUESTED = "redrive_requested"
    REDRIVEN = "redriven"
    REDRIVE_FAILED = "redrive_failed"


def dead_letter_id(service: str, stream_sequence: int) -> UUID:
    return uuid5(DEAD_LETTER_NAMESPACE, f"dead-letter:{service}:{stream_sequence}")


class DeadLetter(AggregateRoot):
    created_event = MessageDeadLettered

    service: str
    subject: str
    stream_sequence: int
    source: str | None = None
    position: int | None = None
    failed_event_id: str | None = None
    failed_event_type: str
    error_class: str
    error_code: str | None = None
    field_paths: list[str]
    attempts: int
    risk_signal: bool
    plan_id: UUID | None = None
    client_id: str | None = None
    status: DeadLetterStatus = DeadLetterStatus.OPEN
    redrives: int = 0
    #: The story of the failed message, for the events a redrive records.
    correlation_id: UUID

    @classmethod
    def record(cls, *, ctx: CommandContext, **fields: object) -> Self:
        service, sequence = fields["service"], fields["stream_sequence"]
        assert isinstance(service, str) and isinstance(sequence, int)
        return cls._start(MessageDeadLettered, ctx, dead_letter_id(service, sequence), **fields)

    @classmethod
    def _from_created(cls, event: MessageDeadLettered) -> Self:  # type: ignore[override]
        fields = set(cls.model_fields) - {"id", "version", "created_on", "modified_on", "status", "redrives"}
        return cls._created(event, **{name: getattr(event, name) for name in fields})

    def request_redrive(self, *, reason: str | None, ctx: CommandContext) -> None:
        if ctx.actor.role not in REDRIVERS:
            msg = f"Only a supervisor or an operator may redrive a dead letter; {ctx.actor.id} acted as {ctx.actor.role.value}."
            raise NotAuthorisedError(msg)
        if self.status not in (DeadLetterStatus.OPEN, DeadLetterStatus.REDRIVE_FAILED):
            msg = f"Dead letter {self.id} is {self.status.value}; only an open or failed one can be redriven."
            raise DeadLetterStateError(msg)
        self._trigger(DeadLetterRedriveRequested, ctx, reason=require_reason(reason, "redrive a dead letter"))

    @when(DeadLetterRedriveRequested)
    def _requested(self, _: DeadLetterRedriveRequested) -> None:
        self.status = DeadLetterStatus.REDRIVE_REQUESTED

    def redriven(self, *, events_recorded: int, ctx: CommandContext) -> None:
        self._require_requested()
        self._trigger(DeadLetterRedriven, ctx, events_recorded=events_recorded)

    @when(DeadLetterRedriven)
    def _redriven(self, _: DeadLetterRedriven) -> None:
        self.status = DeadLetterStatus.REDRIVEN
        self.redrives += 1

    def redrive_failed(self, *, error_class: str, error_code: str | None, field_paths: list[str], ctx: CommandContext) -> None:
        self._require_requested()
        self._trigger(DeadLetterRedriveFailed, ctx, error_class=error_class, error_code=error_code, field_paths=field_paths)

    @when(DeadLetterRedriveFailed)
    def _redrive_failed(self, _: DeadLetterRedriveFailed) -> None:
        self.status = DeadLetterStatus.REDRIVE_FAILED
        self.redrives += 1

    def _require_requested(self) -> None:
        if self.status is not DeadLetterStatus.REDRIVE_REQUESTED:
            msg = f"Dead letter {self.id} is {self.status.value}; no redrive is pending."
            raise DeadLetterStateError(msg)
