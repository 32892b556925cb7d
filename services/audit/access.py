"""The auditors' own access log: who read which history, when, and why.

Each audit read is an event in a store of its own (``audit_access``), hash-chained like
every other store, and readable by the auditors of the auditors (``careplan audit
access-log``). A read without a stated purpose is refused before anything is read. These
events stay in the audit store: they are not published on the CARE stream (they name who
looked at which client, which subscribers have no need to know)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar, Self
from uuid import UUID, uuid4

from eventsourcing.application import Application
from pydantic import Field

from domain.base import Actor, AggregateRoot, CommandContext, DomainEvent
from domain.errors import ReasonRequiredError
from services.shared.persistence import eventsourcing_env, paged_notifications, surviving_catalog_races
from services.shared.settings import Settings

NAME = "audit_access"


class AuditRead(DomainEvent):
    summary_template: ClassVar[str] = "{function} of {subject} read: {purpose}"
    function: str = Field(min_length=1, max_length=40)
    subject: str = Field(min_length=1, max_length=200)
    purpose: str = Field(min_length=1, max_length=4000)


class AccessEntry(AggregateRoot):
    created_event = AuditRead

    function: str
    subject: str
    purpose: str

    @classmethod
    def record(cls, *, function: str, subject: str, purpose: str, ctx: CommandContext) -> Self:
        return cls._start(AuditRead, ctx, uuid4(), function=function, subject=subject, purpose=purpose)

    @classmethod
    def _from_created(cls, event: AuditRead) -> Self:  # type: ignore[override]
        return cls._created(event, function=event.function, subject=event.subject, purpose=event.purpose)


class AccessLog(Application[UUID]):
    name = NAME

    def __init__(self, settings: Settings) -> None:
        env = eventsourcing_env(settings, NAME)
        env["IS_SNAPSHOTTING_ENABLED"] = "n"
        surviving_catalog_races(lambda: super(AccessLog, self).__init__(env=env))

    def record(self, actor: Actor, function: str, subject: str, purpose: str | None) -> AuditRead:
        if not purpose or not purpose.strip():
            msg = f"State why you read {subject} (--purpose): every audit read is recorded with its purpose."
            raise ReasonRequiredError(msg)
        ctx = CommandContext(actor=actor, at=datetime.now(UTC), correlation_id=uuid4(), causation_id=f"audit:{function}")
        entry = AccessEntry.record(function=function, subject=subject, purpose=purpose.strip(), ctx=ctx)
        (event,) = entry.pending_events
        self.save(entry)
        return event  # type: ignore[return-value]

    def entries(self) -> list[AuditRead]:
        return [self.mapper.to_domain_event(n) for n in paged_notifications(self.recorder)]
