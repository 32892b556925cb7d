"""The DataSubject aggregate: one client's rights over their records (issue 16).

Erasure is four-eyes: a supervisor asks (with a reason), a different supervisor confirms
within a window; a legal hold refuses both. Whether the client has an open crisis is asked
of the escalation service by the application (services.privacy.erasure) and refuses too.
The aggregate names the client only by pseudonym (domain/events/data_subjects.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Self
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import BaseModel, Field

from domain.base import AggregateRoot, CommandContext, Role, require_reason, when
from domain.errors import ErasureRequestError, FourEyesError, LegalHoldError, NotAuthorisedError
from domain.events.data_subjects import (
    ClientDataErased,
    DataSubjectOpened,
    ErasureConfirmed,
    ErasureRequested,
    LegalHoldReleased,
    LegalHoldSet,
)

_NAMESPACE = uuid5(NAMESPACE_URL, "urn:careplan:data-subject")


def data_subject_id(client_hash: str) -> UUID:
    """The one DataSubject of a client pseudonym."""
    return uuid5(_NAMESPACE, client_hash)


class PendingErasure(BaseModel):
    request_id: UUID
    requested_by: str
    reason: str
    expires_at: Any


class DataSubject(AggregateRoot):
    created_event = DataSubjectOpened

    client_hash: str
    held: bool = False
    hold_reason: str | None = None
    pending: dict[UUID, PendingErasure] = Field(default_factory=dict)
    confirmed: UUID | None = None
    erased_at: Any = None
    erasures: int = 0

    @classmethod
    def open(cls, client_hash: str, *, ctx: CommandContext) -> Self:
        return cls._start(DataSubjectOpened, ctx, data_subject_id(client_hash), client_hash=client_hash)

    @classmethod
    def _from_created(cls, event: DataSubjectOpened) -> Self:  # type: ignore[override]
        return cls._created(event, client_hash=event.client_hash)

    @staticmethod
    def _require_supervisor(ctx: CommandContext, what: str) -> None:
        if ctx.actor.role is not Role.SUPERVISOR:
            msg = f"Only a supervisor may {what}; {ctx.actor.id} acts as {ctx.actor.role.value}."
            raise NotAuthorisedError(msg)

    def _refuse_if_held(self) -> None:
        if self.held:
            msg = f"The client's records are under a legal hold ({self.hold_reason}); release it first."
            raise LegalHoldError(msg)

    # ----------------------------------------------------------------- holds

    def set_hold(self, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_supervisor(ctx, "set a legal hold")
        if self.held:
            msg = "A legal hold is already set on the client's records."
            raise LegalHoldError(msg)
        self._trigger(LegalHoldSet, ctx, reason=require_reason(reason, "set a legal hold"))

    def release_hold(self, *, reason: str | None, ctx: CommandContext) -> None:
        self._require_supervisor(ctx, "release a legal hold")
        if not self.held:
            msg = "No legal hold is set on the client's records."
            raise LegalHoldError(msg)
        self._trigger(LegalHoldReleased, ctx, reason=require_reason(reason, "release a legal hold"))

    @when(LegalHoldSet)
    def _held(self, event: LegalHoldSet) -> None:
        self.held, self.hold_reason = True, event.reason

    @when(LegalHoldReleased)
    def _released(self, event: LegalHoldReleased) -> None:
        self.held, self.hold_reason = False, None

    # ----------------------------------------------------------------- erasure

    def request_erasure(self, request_id: UUID, *, reason: str | None, window: timedelta, ctx: CommandContext) -> None:
        self._require_supervisor(ctx, "ask for an erasure")
        self._refuse_if_held()
        self._trigger(ErasureRequested, ctx, reason=require_reason(reason, "erase a client's records"),
                      request_id=request_id, expires_at=ctx.at + window)

    def pending_request(self, request_id: UUID, ctx: CommandContext) -> PendingErasure:
        """The request a confirmation names, if it may be confirmed by ``ctx.actor`` now."""
        self._require_supervisor(ctx, "confirm an erasure")
        self._refuse_if_held()
        request = self.pending.get(request_id)
        if request is None:
            msg = f"No erasure request {request_id} is pending for this client; ask for one first."
            raise ErasureRequestError(msg)
        if ctx.at > request.expires_at:
            msg = f"Erasure request {request_id} lapsed at {request.expires_at.isoformat()}; ask again."
            raise ErasureRequestError(msg)
        if request.requested_by == ctx.actor.id:
            msg = "An erasure is confirmed by a second supervisor, not by the one who asked for it."
            raise FourEyesError(msg)
        return request

    def confirm_erasure(self, request_id: UUID, *, ctx: CommandContext) -> None:
        request = self.pending_request(request_id, ctx)
        self._trigger(ErasureConfirmed, ctx, request_id=request_id, requested_by=request.requested_by)

    def record_erased(self, *, request_id: UUID, requested_by: str, confirmed_by: str, reason: str,
                      keys_destroyed: int, stores: list[str], streams: list[str], messages_purged: int,
                      views: list[str], ctx: CommandContext) -> ClientDataErased:
        return self._trigger(ClientDataErased, ctx, reason=reason, client_hash=self.client_hash, request_id=request_id,
                             requested_by=requested_by, confirmed_by=confirmed_by, keys_destroyed=keys_destroyed,
                             stores=stores, streams=streams, messages_purged=messages_purged, views=views)

    @when(ErasureRequested)
    def _requested(self, event: ErasureRequested) -> None:
        self.pending[event.request_id] = PendingErasure(request_id=event.request_id, requested_by=event.actor.id,
                                                        reason=event.reason, expires_at=event.expires_at)

    @when(ErasureConfirmed)
    def _confirmed(self, event: ErasureConfirmed) -> None:
        self.confirmed = event.request_id

    @when(ClientDataErased)
    def _erased(self, event: ClientDataErased) -> None:
        self.pending.pop(event.request_id, None)
        self.confirmed, self.erased_at = None, event.timestamp
        self.erasures += 1
