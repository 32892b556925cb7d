"""Errors of the applications (as opposed to the domain's rule errors): shared, so that any
application, the API and the tools can raise and map them without importing another
service."""

from __future__ import annotations

from domain.errors import DomainError


class AggregateMissingError(DomainError):
    code = "not-found"


class ConcurrencyConflictError(DomainError):
    """The aggregate changed since the caller read it; nothing was written."""

    code = "concurrency-conflict"


class NotYetExistingError(DomainError):
    """A point-in-time read asked for a moment before the aggregate was created."""

    code = "did-not-exist-yet"


class CannotCheckCrisisError(DomainError):
    """A person's crisis command cannot be checked against the escalation service here."""

    code = "crisis-not-checkable"


class StoreBehindError(DomainError):
    """The store ends before what was published from it (restored or reset): nothing can be
    recorded until an operator recovers it (docs/operations.md)."""

    code = "store-behind"
