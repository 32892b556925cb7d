"""The auditors' Python API: every read names who reads and why, and is recorded first.

    auditor = Auditor(settings, Actor(id="governance-2", role=Role.AUDITOR), purpose="Complaint 2026-114")
    auditor.history(plan_id); auditor.replay(plan_id, at=...); auditor.diff(plan_id, 3, 9)
    auditor.trace(event_id); auditor.export(client_id="client-0042")
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from domain.base import Actor
from services.audit import reading
from services.audit.access import AccessLog
from services.audit.export import Export, export_client, export_html, export_json
from services.audit.integrity import Anchor, StoreReport, verify_all
from services.shared.errors import AggregateMissingError
from services.shared.settings import Settings


def _every_client(_: str | None) -> bool:
    return True


class Auditor:
    """``may_read`` says whether the auditor may read a client's records (the API passes its
    token's ``Principal.may_act_for``; None, a record whose client is unknown). A record out
    of scope is answered like a missing one: the same error, nothing of it read."""

    def __init__(self, settings: Settings, actor: Actor, purpose: str | None,
                 may_read: Callable[[str | None], bool] = _every_client) -> None:
        self.settings = settings
        self.actor = actor
        self.purpose = purpose
        self.may_read = may_read

    def _in_scope(self, stores: reading.Stores, aggregate_id: UUID) -> None:
        if self.may_read is _every_client:
            return
        if not self.may_read(reading.client_of(stores, aggregate_id)):
            msg = f"No aggregate {aggregate_id} is recorded in any store; check the id."
            raise AggregateMissingError(msg)

    def _scoped(self, aggregate_id: UUID, read: Callable[[reading.Stores], Any]) -> Callable[[reading.Stores], Any]:
        def run(stores: reading.Stores) -> Any:
            self._in_scope(stores, aggregate_id)
            return read(stores)

        return run

    def _client_in_scope(self, client_id: str) -> None:
        if not self.may_read(client_id):
            msg = f"No aggregate of client {client_id!r} is recorded in any store."
            raise AggregateMissingError(msg)

    def _read(self, function: str, subject: str, read: Any) -> Any:
        log = AccessLog(self.settings)
        try:
            log.record(self.actor, function, subject, self.purpose)  # refuses a read without a purpose
        finally:
            log.close()
        with reading.Stores(self.settings) as stores:
            return read(stores)

    def history(self, aggregate_id: UUID) -> tuple[str, list[reading.HistoryEntry]]:
        return self._read("history", f"aggregate {aggregate_id}",
                          self._scoped(aggregate_id, lambda s: reading.history(s, aggregate_id)))

    def replay(self, aggregate_id: UUID, *, at: datetime | None = None, version: int | None = None) -> reading.Replayed:
        point = f" at {at.isoformat()}" if at else f" at version {version}" if version else ""
        return self._read("replay", f"aggregate {aggregate_id}{point}",
                          self._scoped(aggregate_id, lambda s: reading.replay(s, aggregate_id, at=at, version=version)))

    def diff(self, aggregate_id: UUID, start: datetime | int, end: datetime | int) -> reading.Diff:
        return self._read("diff", f"aggregate {aggregate_id} from {start} to {end}",
                          self._scoped(aggregate_id, lambda s: reading.diff(s, aggregate_id, start, end)))

    def trace(self, event_id: UUID) -> reading.Trace:
        def run(stores: reading.Stores) -> reading.Trace:
            traced = reading.trace(stores, event_id)
            if self.may_read is not _every_client and not self.may_read(
                    reading.client_of(stores, traced.event.aggregate_id)):
                msg = f"No event {event_id} is recorded in any store; check the id."
                raise AggregateMissingError(msg)
            return traced

        return self._read("trace", f"event {event_id}", run)

    def export(self, *, client_id: str | None = None, aggregate_id: UUID | None = None) -> Export:
        def run(stores: reading.Stores) -> Export:
            client = client_id if client_id is not None else self._client_of(stores, aggregate_id)
            self._client_in_scope(client)
            return export_client(stores, client)

        subject = f"client {client_id}" if client_id else f"the client of aggregate {aggregate_id}"
        return self._read("export", subject, run)

    def export_json(self, *, client_id: str, indent: int | None = None) -> Iterator[str]:
        """:meth:`export` of a client as JSON text, streamed a record at a time (issue 13)."""
        return self.export_text(client_id=client_id, output_format="json", indent=indent)

    def export_text(self, *, client_id: str | None = None, aggregate_id: UUID | None = None,
                    output_format: str = "json", indent: int | None = None) -> Iterator[str]:
        """:meth:`export` as JSON or the HTML report, streamed a piece at a time (issue 13): the
        read is logged, the client found (from ``aggregate_id`` if not named) and checked, and
        its records found at once (an unknown client raises here); the stores stay open until
        the text is consumed or closed. The same text as ``export`` rendered whole."""
        subject = f"client {client_id}" if client_id else f"the client of aggregate {aggregate_id}"
        log = AccessLog(self.settings)
        try:
            log.record(self.actor, "export", subject, self.purpose)
        finally:
            log.close()
        stores = reading.Stores(self.settings)
        try:
            client = client_id if client_id is not None else self._client_of(stores, aggregate_id)
            self._client_in_scope(client)
            pieces = export_json(stores, client, indent=indent) if output_format == "json" else export_html(stores, client)
        except BaseException:
            stores.close()
            raise

        def streamed() -> Iterator[str]:
            try:
                yield from pieces
            finally:
                stores.close()

        return streamed()

    @staticmethod
    def _client_of(stores: reading.Stores, aggregate_id: UUID | None) -> str:
        assert aggregate_id is not None
        _, events = stores.events_of(aggregate_id)
        return str(getattr(events[0], "client_id", ""))

    def access_report(self, client_id: str, *, start: datetime | None = None,
                      end: datetime | None = None) -> Any:
        """Every read of the client's data in the period (services.audit.access_report); the
        request is recorded first, like every audit read, and so is listed in its own report."""
        from services.audit.access_report import access_report

        self._client_in_scope(client_id)
        log = AccessLog(self.settings)
        try:
            log.record(self.actor, "access-report", f"client {client_id}", self.purpose)
        finally:
            log.close()
        return access_report(self.settings, client_id, start=start, end=end)

    def verify(self, anchors: list[Anchor] = ()) -> list[StoreReport]:  # type: ignore[assignment]
        return self._read("verify", "every store", lambda _: verify_all(self.settings, list(anchors)))
