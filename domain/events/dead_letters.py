"""Events of dead letters: a consumed message that could not be decided, kept as a record
in the store of the service that gave up on it, with what an operator needs to act (where
the message came from, its position, the error's class and field paths) and nothing of its
content. Every application records them, so they are published in the context of the
application that recorded them: ``care.<context>.v1.dead_letter.<id>.<event>``."""

from __future__ import annotations

from typing import Annotated, ClassVar
from uuid import UUID

from pydantic import Field

from domain.base import ANY_CONTEXT, DomainEvent, RequiresReason, ShortText

#: Where these events are published: care.<context of the recording application>.v1.dead_letter.<id>.<event>
CONTEXT = ANY_CONTEXT
AGGREGATE = "dead_letter"

FieldPath = Annotated[str, Field(min_length=1, max_length=200)]


class MessageDeadLettered(DomainEvent):
    """A message the service could not decide after its retries. ``risk_signal``: the
    message may carry a risk signal, so the escalation service raises a fail-safe crisis."""

    summary_template: ClassVar[str] = "{failed_event_type} dead-lettered by {service}: {error_class}"
    service: ShortText
    subject: ShortText
    stream_sequence: int = Field(ge=1)
    #: The application that published the message, and its position there (None: the message
    #: was not a careplan event).
    source: ShortText | None = None
    position: int | None = Field(default=None, ge=1)
    failed_event_id: ShortText | None = None
    failed_event_type: ShortText
    error_class: ShortText
    error_code: ShortText | None = None
    field_paths: list[FieldPath] = Field(default_factory=list, max_length=10)
    attempts: int = Field(ge=0)
    risk_signal: bool
    #: Where the message belongs, when that could be read from it (for the fail-safe escalation).
    plan_id: UUID | None = None
    client_id: ShortText | None = None


class DeadLetterRedriveRequested(RequiresReason):
    summary_template: ClassVar[str] = "Redrive requested"


class DeadLetterRedriven(DomainEvent):
    summary_template: ClassVar[str] = "Redriven: decided again, {events_recorded} event(s) recorded"
    events_recorded: int = Field(ge=0)


class DeadLetterRedriveFailed(DomainEvent):
    summary_template: ClassVar[str] = "Redrive failed: {error_class}"
    error_class: ShortText
    error_code: ShortText | None = None
    field_paths: list[FieldPath] = Field(default_factory=list, max_length=10)
