"""Events of the DataSubject aggregate: a client's rights over their records (issue 16).

They name the client only by a pseudonym (``client_hash``: a keyed hash of the client id,
services.shared.privacy.keys), so they are not under the client's key and outlive an erasure:
they are the proof that it was asked for, confirmed by a second person, and done.
"""

from __future__ import annotations

from typing import ClassVar
from uuid import UUID

from pydantic import Field

from domain.base import DomainEvent, Moment, RequiresReason, ShortText

#: Where these events are published: care.<CONTEXT>.v1.<AGGREGATE>.<id>.<event>
CONTEXT = "clinical"
AGGREGATE = "data_subject"

ClientHash = ShortText


class DataSubjectOpened(DomainEvent):
    summary_template: ClassVar[str] = "Rights record opened for client pseudonym {client_hash}"
    client_hash: ClientHash


class LegalHoldSet(RequiresReason):
    summary_template: ClassVar[str] = "Legal hold set: {reason}"


class LegalHoldReleased(RequiresReason):
    summary_template: ClassVar[str] = "Legal hold released: {reason}"


class ErasureRequested(RequiresReason):
    summary_template: ClassVar[str] = "Erasure requested ({request_id}), to be confirmed by {expires_at}: {reason}"
    request_id: UUID
    expires_at: Moment


class ErasureConfirmed(DomainEvent):
    summary_template: ClassVar[str] = "Erasure {request_id} confirmed by a second supervisor"
    request_id: UUID
    requested_by: ShortText


class ClientDataErased(RequiresReason):
    """The client's data keys are destroyed, their subjects purged from the streams and their
    rows removed from the read models. No personal data: what, where, who, why, when."""

    summary_template: ClassVar[str] = "Client data erased ({request_id}): keys {keys_destroyed}, stores {stores}"
    client_hash: ClientHash
    request_id: UUID
    requested_by: ShortText
    confirmed_by: ShortText
    keys_destroyed: int = Field(ge=0)
    #: The stores whose events of the client are now unreadable (their key is gone).
    stores: list[ShortText]
    #: The streams the client's subjects were purged from, and how many messages went.
    streams: list[ShortText]
    messages_purged: int = Field(ge=0)
    #: The read models the client's rows were removed from.
    views: list[ShortText]
