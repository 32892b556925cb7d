"""What an event of an erased client reads as (issue 16).

The stored event keeps, outside its encrypted content, what carries no personal data: the
type (the stored topic), the aggregate id and version (stored columns), and the time, actor
and correlation id (a clear header written with the event, services.shared.privacy.cipher). When its
key has been destroyed it decodes to an ``ErasedEvent`` with those, plus when and why the
content was erased (from the key store's tombstone)."""

from __future__ import annotations

from typing import Any, ClassVar

from domain.base import DomainEvent
from domain.errors import ClientDataErasedError

#: What history, export and the FHIR views show instead of the content.
MARKER = "[erased]"


class ErasedEvent(DomainEvent):
    erased: ClassVar[bool] = True
    summary_template: ClassVar[str] = "[erased] content of this {erased_type} erased on {erased_at} ({erased_why})"

    #: The class name of the event whose content was erased.
    erased_type: str
    erased_at: str
    erased_why: str

    def mutate(self, aggregate: Any) -> Any:
        """The client's own aggregate (its first event erased) cannot be rebuilt; an aggregate
        of no client that held one of the client's events (a subscription feed) goes on
        without that event's content, at its version."""
        if aggregate is not None and hasattr(aggregate, "modified_on"):
            aggregate.version = self.originator_version
            aggregate.modified_on = self.timestamp
            return aggregate
        msg = (f"The record {self.originator_id} was erased on {self.erased_at} ({self.erased_why}); "
               "its content cannot be read or changed any more.")
        raise ClientDataErasedError(msg)


def is_erased(event: object) -> bool:
    return isinstance(event, ErasedEvent)


# Published (if a relay meets one) as care.<context>.v1.erased.<id>.erased_event
CONTEXT = "{context}"
AGGREGATE = "erased"
