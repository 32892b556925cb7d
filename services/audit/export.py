"""A client's whole care history: every aggregate of the client in every store (the care
record and the services' decisions about it), as JSON and as a self-contained HTML report
a person can read and print."""

from __future__ import annotations

import heapq
import html
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from pydantic import BaseModel

from domain.base import AggregateRoot, project
from services.audit.reading import HistoryEntry, Store, Stores, entry, erased_state
from services.shared.errors import AggregateMissingError
from services.shared.persistence import paged_notifications

#: Notifications read from a store's log at once while a report is written.
PAGE = 100


class ExportedAggregate(BaseModel):
    store: str
    aggregate_type: str
    aggregate_id: UUID
    state: dict[str, Any]
    events: list[HistoryEntry]


class Export(BaseModel):
    client_id: str
    exported_at: datetime
    aggregates: list[ExportedAggregate]

    def timeline(self) -> list[tuple[str, HistoryEntry]]:
        return sorted(((a.aggregate_type, e) for a in self.aggregates for e in a.events), key=lambda pair: pair[1].recorded)

    def totals(self) -> tuple[int, int]:
        """(events, records)."""
        return sum(len(a.events) for a in self.aggregates), len(self.aggregates)

    def of_type(self, aggregate_type: str) -> list[ExportedAggregate]:
        return [a for a in self.aggregates if a.aggregate_type == aggregate_type]


class _First(NamedTuple):
    """What the export needs of an aggregate's first event to decide whether it is the client's."""

    store: Store
    type_name: str
    client_id: Any
    plan_id: Any
    timestamp: datetime
    #: A subscription's feed or deliveries name it.
    subscription_id: Any = None


def members(stores: Stores, client_id: str) -> list[tuple[Store, UUID]]:
    """The client's aggregates in every store, oldest first: one pass over the logs that keeps
    each aggregate's first event's ids only (not every event of every store)."""
    firsts: dict[UUID, _First] = {}
    for store in stores.all:
        for notification in paged_notifications(store.recorder):
            if notification.originator_id in firsts:
                continue
            event = store.mapper.to_domain_event(notification)
            client = getattr(event, "client_id", None)
            if type(event).__name__ == "SubscriptionCreated" and list(event.clients) == [client_id]:
                client = client_id  # a subscription to this client's events only: who received what, when
            firsts[notification.originator_id] = _First(store, type(event).__name__, client,
                                                        getattr(event, "plan_id", None), event.timestamp,
                                                        getattr(event, "subscription_id", None))
    mine = {aid for aid, first in firsts.items() if first.client_id == client_id}
    # an erased client's aggregates (issue 16): their first events no longer say whose they are; the key store's links do
    settings = getattr(stores, "settings", None)
    if settings is not None and settings.client_keys:
        from services.shared.privacy.keys import key_store

        mine |= set(key_store(settings).linked_to_client(client_id)) & set(firsts)
    # the feed and the delivery attempts of the client's subscriptions
    mine |= {aid for aid, first in firsts.items() if first.subscription_id is not None and first.subscription_id in mine}
    plans = {aid for aid in mine if firsts[aid].type_name == "CarePlanDrafted"}
    plans |= {p for aid in mine if (p := firsts[aid].plan_id) is not None}
    # service aggregates that name the plan but not the client (e.g. the scheduling service's PlanStrategy)
    mine |= {aid for aid, first in firsts.items() if first.plan_id in plans}
    if not mine:
        msg = f"No aggregate of client {client_id!r} is recorded in any store."
        raise AggregateMissingError(msg)
    return [(firsts[aid].store, aid) for aid in sorted(mine, key=lambda a: firsts[a].timestamp)]


def exported(found: Iterable[tuple[Store, UUID]]) -> Iterator[ExportedAggregate]:
    """Each aggregate with its state and events, read from its store as it is reached: only
    one aggregate's history is held at a time."""
    for store, aid in found:
        aggregate: AggregateRoot | None = None
        entries, events, erased = [], [], False
        for stored in store.recorder.select_events(aid):
            event = store.mapper.to_domain_event(stored)
            erased = erased or event.erased
            if erased:
                events.append(event)  # an erased client's (issue 16): shown as erased, not replayed
            else:
                aggregate = project(aggregate, (event,))
            entries.append(entry(event))
        if erased:
            kind, _, _, state = erased_state(events)
            yield ExportedAggregate(store=store.name, aggregate_type=kind, aggregate_id=aid, state=state, events=entries)
            continue
        assert aggregate is not None
        yield ExportedAggregate(store=store.name, aggregate_type=type(aggregate).__name__, aggregate_id=aid,
                                state=aggregate.model_dump(mode="json"), events=entries)


def _timeline_of(store: Store, rank: dict[UUID, int], kinds: dict[UUID, str]) -> Iterator[tuple[Any, Any]]:
    """The client's events in one store, in the order of its log (by the time recorded: events
    are stamped as they are recorded), events stamped alike ordered as the aggregates are
    listed (``rank``) and by version: (sort key, (aggregate type, entry)). Holds the events of
    one moment at a time."""
    moment: list[tuple[Any, Any]] = []
    for notification in paged_notifications(store.recorder, PAGE):
        aid = notification.originator_id
        if aid not in rank:
            continue
        recorded = entry(store.mapper.to_domain_event(notification))
        if moment and moment[0][0][0] != recorded.recorded:
            yield from sorted(moment, key=lambda item: item[0])
            moment = []
        moment.append(((recorded.recorded, rank[aid], recorded.version), (kinds[aid], recorded)))
    yield from sorted(moment, key=lambda item: item[0])


class StoredExport:
    """An export read from the stores as it is written (:func:`export_html`): each section
    reads again what it shows, one record (or a page of each store's log) at a time."""

    def __init__(self, client_id: str, found: list[tuple[Store, UUID]]) -> None:
        self.client_id, self.exported_at, self._found = client_id, datetime.now(UTC), found
        #: each aggregate's type, from its first event
        self._kinds = {aid: type(AggregateRoot.created_by(store.mapper.to_domain_event(
            store.recorder.select_events(aid, limit=1)[0]))).__name__ for store, aid in found}

    def totals(self) -> tuple[int, int]:
        """(events, records): an aggregate's last version is its number of events."""
        events = sum(store.recorder.select_events(aid, desc=True, limit=1)[0].originator_version
                     for store, aid in self._found)
        return events, len(self._found)

    def of_type(self, aggregate_type: str) -> Iterator[ExportedAggregate]:
        return exported((store, aid) for store, aid in self._found if self._kinds[aid] == aggregate_type)

    def timeline(self) -> Iterator[tuple[str, HistoryEntry]]:
        """Every event of the client by the time recorded, as :meth:`Export.timeline` orders
        them (ties: in the aggregates' order, then by version): the stores' logs, read a page at
        a time, merged. Holds the client's aggregate ids and types, not their events."""
        rank = {aid: i for i, (_, aid) in enumerate(self._found)}
        stores = {store.name: store for store, _ in self._found}
        merged = heapq.merge(*(_timeline_of(store, rank, self._kinds) for store in stores.values()),
                             key=lambda item: item[0])
        return (pair for _, pair in merged)


def export_client(stores: Stores, client_id: str) -> Export:
    return Export(client_id=client_id, exported_at=datetime.now(UTC), aggregates=list(exported(members(stores, client_id))))


def export_json(stores: Stores, client_id: str, *, indent: int | None = None) -> Iterator[str]:
    """:func:`export_client` as JSON text, a piece per aggregate: the same text as
    ``export_client(...).model_dump_json(indent=indent)``, without holding the export. The
    client's aggregates are found first (an unknown client raises here, before any text)."""
    found = members(stores, client_id)
    head = Export(client_id=client_id, exported_at=datetime.now(UTC), aggregates=[]).model_dump_json(indent=indent)
    opening, closing = head.removesuffix("]}" if indent is None else "]\n}"), "]}" if indent is None else "\n" + " " * indent + "]\n}"
    pad = "" if indent is None else "\n" + " " * 2 * indent

    def pieces() -> Iterator[str]:
        yield opening
        for i, aggregate in enumerate(exported(found)):
            text = aggregate.model_dump_json(indent=indent)
            yield ("," if i else "") + (pad + text.replace("\n", pad) if indent is not None else text)
        yield closing

    return pieces()


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1b1b;max-width:1100px}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:2px solid #2b5b84;padding-bottom:.2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0} th,td{border:1px solid #c9d3dc;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#eef3f7} .muted{color:#5a6570} .chain li{margin:.25rem 0} code{font-size:.85em}
@media print{body{margin:0} h2{page-break-after:avoid} tr{page-break-inside:avoid}}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: Iterable[list[Any]]) -> Iterator[str]:
    """A table a row at a time."""
    yield "<table><thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in headers) + "</tr></thead><tbody>"
    for row in rows:
        yield "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
    yield "</tbody></table>"


class Exported(Protocol):
    """What the HTML report reads: an :class:`Export` held whole, or a :class:`StoredExport`."""

    client_id: str
    exported_at: datetime

    def totals(self) -> tuple[int, int]: ...
    def of_type(self, aggregate_type: str) -> Iterable[ExportedAggregate]: ...
    def timeline(self) -> Iterable[tuple[str, HistoryEntry]]: ...


def to_html(export: Export) -> str:
    return "".join(html_pieces(export))


def export_html(stores: Stores, client_id: str) -> Iterator[str]:
    """The HTML report of a client, a piece at a time, read from the stores as it is written
    (the same text as ``to_html(export_client(...))``). The client's records are found first
    (an unknown client raises here, before any text)."""
    return html_pieces(StoredExport(client_id, members(stores, client_id)))


def html_pieces(export: Exported) -> Iterator[str]:
    events, records = export.totals()
    yield (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Care history of {_e(export.client_id)}</title>"
           f"<style>{_CSS}</style></head><body>")
    yield f"<h1>Care history of client {_e(export.client_id)}</h1>"
    yield (f"<p class='muted'>Exported {_e(export.exported_at.isoformat())} from the careplan event stores; "
           f"{events} recorded events in {records} records.</p>")

    yield "<h2>Expectation adjustments</h2>"
    chains = 0
    for plan in export.of_type("CarePlan"):
        for expectation in plan.state.get("expectations", {}).values():
            links = "".join(
                f"<li>&rarr; “{_e(a.get('adjusted_statement'))}” <span class='muted'>(v{_e(a.get('version'))}, "
                f"{_e((a.get('actor') or {}).get('id'))}: {_e(a.get('reason'))})</span></li>"
                for a in expectation.get("adjustments", [])
            )
            chains += 1
            yield f"<p>“{_e(expectation.get('original_statement'))}”</p><ul class='chain'>{links}</ul>"
    if not chains:
        yield "<p class='muted'>None recorded.</p>"

    strategy_events = ("StrategyChanged", "EmergencySupportActivated", "EmergencySupportEnded", "CarePlanDrafted")
    yield "<h2>Strategy changes</h2>"
    yield from _table(["recorded", "change", "who", "why"], (
        [e.recorded.isoformat(timespec="seconds"), e.summary, f"{e.actor} ({e.role})", e.reason]
        for _, e in export.timeline() if e.event_type in strategy_events
    ))

    yield "<h2>Assessments</h2>"
    yield from _table(["recorded", "result", "by"], (
        [e.recorded.isoformat(timespec="seconds"), e.summary, e.actor]
        for _, e in export.timeline() if e.event_type in ("AssessmentScored", "AssessmentRejected")
    ))

    yield "<h2>Escalations</h2>"
    crises = 0
    for crisis in export.of_type("Crisis"):
        crises += 1
        yield f"<p><b>Crisis {_e(crisis.aggregate_id)}</b> — {_e(crisis.state.get('status'))}</p>"
        yield from _table(["recorded", "step", "who", "why"], (
            [e.recorded.isoformat(timespec="seconds"), e.summary, f"{e.actor} ({e.role})", e.reason] for e in crisis.events
        ))
    if not crises:
        yield "<p class='muted'>None recorded.</p>"

    yield "<h2>Timeline</h2>"
    yield from _table(["recorded", "record", "v", "what", "who", "why"], (
        [e.recorded.isoformat(timespec="seconds"), kind, e.version, e.summary, f"{e.actor} ({e.role})", e.reason]
        for kind, e in export.timeline()
    ))
    yield "</body></html>"
