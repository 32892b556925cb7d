"""Commands on a client's DataSubject (issue 16): legal holds and four-eyes erasure.

services.privacy.erasure sends them (and does the shredding between confirmation and the
record of it); the API and the CLI call that module, not these directly."""

from __future__ import annotations

from datetime import timedelta
from typing import ClassVar
from uuid import UUID, uuid4

from pydantic import Field

from domain.base import AggregateRoot, CommandContext
from domain.data_subject import DataSubject
from services.care.commands.base import Command, CreationCommand, Lookup


class OpenDataSubject(CreationCommand):
    aggregate_type: ClassVar[type[AggregateRoot]] = DataSubject
    client_hash: str

    def create(self, ctx: CommandContext, lookup: Lookup) -> AggregateRoot:
        return DataSubject.open(self.client_hash, ctx=ctx)


class DataSubjectCommand(Command):
    aggregate_type: ClassVar[type[AggregateRoot]] = DataSubject
    subject_id: UUID

    def target_id(self) -> UUID:
        return self.subject_id


class SetLegalHold(DataSubjectCommand):
    reason: str | None = None

    def execute(self, subject: DataSubject, ctx: CommandContext, lookup: Lookup) -> None:
        subject.set_hold(reason=self.reason, ctx=ctx)


class ReleaseLegalHold(DataSubjectCommand):
    reason: str | None = None

    def execute(self, subject: DataSubject, ctx: CommandContext, lookup: Lookup) -> None:
        subject.release_hold(reason=self.reason, ctx=ctx)


class RequestErasure(DataSubjectCommand):
    request_id: UUID = Field(default_factory=uuid4)
    reason: str | None = None
    window_hours: float = Field(default=24.0, gt=0)

    def execute(self, subject: DataSubject, ctx: CommandContext, lookup: Lookup) -> None:
        subject.request_erasure(self.request_id, reason=self.reason, window=timedelta(hours=self.window_hours), ctx=ctx)


class ConfirmErasure(DataSubjectCommand):
    request_id: UUID

    def execute(self, subject: DataSubject, ctx: CommandContext, lookup: Lookup) -> None:
        subject.confirm_erasure(self.request_id, ctx=ctx)


class RecordErasure(DataSubjectCommand):
    request_id: UUID
    requested_by: str
    confirmed_by: str
    reason: str
    keys_destroyed: int
    stores: list[str]
    streams: list[str]
    messages_purged: int
    views: list[str]

    def execute(self, subject: DataSubject, ctx: CommandContext, lookup: Lookup) -> None:
        subject.record_erased(request_id=self.request_id, requested_by=self.requested_by,
                              confirmed_by=self.confirmed_by, reason=self.reason, keys_destroyed=self.keys_destroyed,
                              stores=self.stores, streams=self.streams, messages_purged=self.messages_purged,
                              views=self.views, ctx=ctx)
