"""A client's whole care history: every aggregate of the client in every store (the care
record and the services' decisions about it), as JSON and as a self-contained HTML report
a person can read and print."""

from __future__ import annotations

import heapq
import html
from array import array
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from pydantic import BaseModel
from pydantic_core import to_json

from domain.base import AggregateRoot, derive_event_id, project
from services.audit.reading import HistoryEntry, Store, Stores, aggregate_type_of, entry, erased_state
from services.shared.errors import AggregateMissingError
from services.shared.indexes import SHARED
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


class Members(list[tuple[Store, UUID]]):
    """The client's aggregates, oldest first; ``portions`` names those of which only some
    versions are the client's (an all-clients subscription's feed and deliveries)."""

    portions: dict[UUID, frozenset[int]]

    def __init__(self, found: Iterable[tuple[Store, UUID]], portions: dict[UUID, frozenset[int]] | None = None) -> None:
        super().__init__(found)
        self.portions = portions or {}


def _portions(found: Iterable[tuple[Store, UUID]]) -> dict[UUID, frozenset[int]]:
    return getattr(found, "portions", {})


def members(stores: Stores, client_id: str) -> Members:
    """The client's aggregates in every store, oldest first (ties: in the order of the stores,
    then of their logs): found through the stores' client indexes (services.shared.indexes) —
    the aggregates that name the client, then those under its plans and subscriptions —
    reading the first event of each and nothing else; plus the client's share of subscriptions
    shared with other clients (:func:`_shared_subscriptions`). Stores not indexed yet (or whose
    indexes cannot be read together) are scanned (:func:`_members_by_scan`)."""
    across = stores.across if stores.indexed else None
    if across is None:
        return _members_by_scan(stores, client_id)
    found = across.members(client_id)  # two statements, whatever the number of stores
    order = {store.name: i for i, store in enumerate(stores.all)}
    keyed = [((stores.store(m.store).mapper.to_domain_event(m.first).timestamp, order[m.store], m.position),
              (stores.store(m.store), m.row.originator_id)) for m in found]
    known = {aid for _, (_, aid) in keyed}
    # an erased client's aggregates (issue 16): erasure drops the client's index rows; the key store's links remain
    for aid in sorted(set(_linked_to_client(stores, client_id)) - known, key=str):
        for store in stores.all:
            if first := store.recorder.select_events(aid, limit=1):
                keyed.append(((store.mapper.to_domain_event(first[0]).timestamp, order[store.name], 0), (store, aid)))
                known.add(aid)
                break
    shared, portions = _shared_subscriptions(stores, client_id)
    keyed += [((first.timestamp, order[first.store.name], 0), (first.store, aid))
              for aid, first in shared.items() if aid not in known]
    if not keyed:
        msg = f"No aggregate of client {client_id!r} is recorded in any store."
        raise AggregateMissingError(msg)
    return Members([pair for _, pair in sorted(keyed, key=lambda item: item[0])], portions)


def _linked_to_client(stores: Stores, client_id: str) -> list[UUID]:
    """The aggregates under any key the client has had (live or destroyed), from the key store."""
    settings = getattr(stores, "settings", None)
    if settings is None or not settings.client_keys:
        return []
    from services.shared.privacy.keys import key_store

    return key_store(settings).linked_to_client(client_id)


def _shared_subscriptions(stores: Stores, client_id: str) -> tuple[dict[UUID, _First], dict[UUID, frozenset[int]]]:
    """The subscriptions shared by this client with others (all clients, or several), with the
    client's share of their feeds and deliveries: the client index keeps them under
    ``SHARED`` (one client per aggregate), so they and the aggregates under them are read
    through it, then the shared feeds' events are read for the client's share."""
    across = stores.across
    assert across is not None
    firsts: dict[UUID, _First] = {}
    everyone: set[UUID] = set()
    for m in across.members(SHARED):
        store = stores.store(m.store)
        event = store.mapper.to_domain_event(m.first)
        name = type(event).__name__
        if name == "SubscriptionCreated" and ("*" in event.clients or client_id in event.clients):
            everyone.add(m.row.originator_id)
        firsts[m.row.originator_id] = _First(store, name, None, getattr(event, "plan_id", None), event.timestamp,
                                             getattr(event, "subscription_id", None))
    portions = _everyones_portions(firsts, everyone, client_id)
    mine = set(portions) | {sid for sid in everyone if any(firsts[aid].subscription_id == sid for aid in portions)}
    return {aid: firsts[aid] for aid in mine}, portions


def forget_client(stores: Stores, client_id: str) -> int:
    """Erasure: drops the client's rows from every store's client index (the aggregates that
    name the client and those under its plans and subscriptions); returns how many."""
    found = members(stores, client_id) if stores.indexed and stores.across is not None else []
    by_store: dict[str, list[UUID]] = {}
    for store, aid in found:
        by_store.setdefault(store.name, []).append(aid)
    for store in stores.all:
        store.recorder.forget_aggregates(by_store.get(store.name, []))
        store.recorder.forget_client(client_id)
    return len(found)


def _firsts(stores: Iterable[Store], client_id: str) -> tuple[dict[UUID, _First], set[UUID]]:
    """Each aggregate's first event's ids, by one pass over the stores' logs; and the
    subscriptions shared by this client with others."""
    firsts: dict[UUID, _First] = {}
    everyone: set[UUID] = set()  # subscriptions of all clients, or of this one and others
    for store in stores:
        for notification in paged_notifications(store.recorder):
            if notification.originator_id in firsts:
                continue
            event = store.mapper.to_domain_event(notification)
            client = getattr(event, "client_id", None)
            if type(event).__name__ == "SubscriptionCreated" and list(event.clients) == [client_id]:
                client = client_id  # a subscription to this client's events only: who received what, when
            elif type(event).__name__ == "SubscriptionCreated" and ("*" in event.clients or client_id in event.clients):
                everyone.add(notification.originator_id)  # shared with other clients: the client's share only
            firsts[notification.originator_id] = _First(store, type(event).__name__, client,
                                                        getattr(event, "plan_id", None), event.timestamp,
                                                        getattr(event, "subscription_id", None))
    return firsts, everyone


def _members_by_scan(stores: Stores, client_id: str) -> Members:
    """:func:`members` by one pass over every store's log that keeps each aggregate's first
    event's ids only (not every event of every store)."""
    firsts, everyone = _firsts(stores.all, client_id)
    mine = {aid for aid, first in firsts.items() if first.client_id == client_id}
    # an erased client's aggregates (issue 16): their first events no longer say whose they are; the key store's links do
    mine |= set(_linked_to_client(stores, client_id)) & set(firsts)
    # the feed and the delivery attempts of the client's subscriptions
    mine |= {aid for aid, first in firsts.items() if first.subscription_id is not None and first.subscription_id in mine}
    plans = {aid for aid in mine if firsts[aid].type_name == "CarePlanDrafted"}
    plans |= {p for aid in mine if (p := firsts[aid].plan_id) is not None}
    # service aggregates that name the plan but not the client (e.g. the scheduling service's PlanStrategy)
    mine |= {aid for aid, first in firsts.items() if first.plan_id in plans}
    # shared subscriptions: the client's events in their feeds and the attempts that sent them
    portions = _everyones_portions(firsts, everyone, client_id)
    mine |= set(portions) | {sid for sid in everyone if any(firsts[aid].subscription_id == sid for aid in portions)}
    if not mine:
        msg = f"No aggregate of client {client_id!r} is recorded in any store."
        raise AggregateMissingError(msg)
    return Members([(firsts[aid].store, aid) for aid in sorted(mine, key=lambda a: firsts[a].timestamp)], portions)


def _everyones_portions(firsts: dict[UUID, _First], everyone: set[UUID], client_id: str) -> dict[UUID, frozenset[int]]:
    """Of each shared subscription (all clients, or several): the versions of its feed that matched the client's
    events, and those of its deliveries whose numbers include one of them (attempts,
    sendings started or interrupted). Other clients' events are not in the export."""
    portions: dict[UUID, frozenset[int]] = {}
    feeds = {aid: f for aid, f in firsts.items() if f.subscription_id in everyone and f.type_name == "SubscriptionFeedOpened"}
    for feed, first in feeds.items():
        numbers: set[int] = set()
        versions: set[int] = set()
        for stored in first.store.recorder.select_events(feed):
            event = first.store.mapper.to_domain_event(stored)
            if getattr(event, "client_id", None) == client_id and hasattr(event, "number"):
                numbers.add(event.number)
                versions.add(stored.originator_version)
        if not numbers:
            continue
        portions[feed] = frozenset(versions)
        for aid, other in firsts.items():
            if other.subscription_id != first.subscription_id or aid == feed:
                continue
            sent: set[int] = set()
            for stored in other.store.recorder.select_events(aid):
                event = other.store.mapper.to_domain_event(stored)
                low, high = getattr(event, "first_number", None), getattr(event, "last_number", None)
                if low is not None and high is not None and any(low <= n <= high for n in numbers):
                    sent.add(stored.originator_version)
            if sent:
                portions[aid] = frozenset(sent)
    return portions


def exported(found: Iterable[tuple[Store, UUID]]) -> Iterator[ExportedAggregate]:
    """Each aggregate with its state and events, read from its store as it is reached: only
    one aggregate's history is held at a time. Of an aggregate shared with other clients
    (``Members.portions``) only the client's events are shown, and no state."""
    portions = _portions(found)
    for store, aid in found:
        aggregate: AggregateRoot | None = None
        entries, events, erased = [], [], False
        portion = portions.get(aid)
        for stored in store.recorder.select_events(aid):
            event = store.mapper.to_domain_event(stored)
            erased = erased or event.erased
            if erased:
                events.append(event)  # an erased client's (issue 16): shown as erased, not replayed
            else:
                aggregate = project(aggregate, (event,))
            if portion is None or stored.originator_version in portion:
                entries.append(entry(event))
        if erased:
            kind, _, _, state = erased_state(events)
            yield ExportedAggregate(store=store.name, aggregate_type=kind, aggregate_id=aid, state=state, events=entries)
            continue
        assert aggregate is not None
        state = aggregate.model_dump(mode="json") if portion is None else {
            "shown": "this client's events only: the aggregate is shared with other clients",
            "subscription_id": str(getattr(aggregate, "subscription_id", "")),
        }
        yield ExportedAggregate(store=store.name, aggregate_type=type(aggregate).__name__, aggregate_id=aid,
                                state=state, events=entries)


def _entry_fields(event: Any, aggregate_id: str) -> dict[str, Any]:
    """:func:`services.audit.reading.entry` as the plain fields its JSON is made of (the same
    text, without validating a model per event: the export writes one per event). The event
    id as text, derived from the aggregate's id as text (``aggregate_id``, printed once per
    aggregate, not per event), never made a UUID to be printed again."""
    return {
        "version": event.originator_version, "recorded": event.timestamp,
        "event_type": event.erased_type if event.erased else type(event).__name__,
        "event_id": derive_event_id(aggregate_id, event.originator_version), "actor": event.actor.id,
        "role": event.actor.role.value, "reason": event.reason, "summary": event.describe(),
        "causation_id": event.causation_id, "correlation_id": event.correlation_id,
    }


def _exported_json(found: Iterable[tuple[Store, UUID]]) -> Iterator[bytes]:
    """:func:`exported` as each aggregate's JSON (compact), the same text as
    ``ExportedAggregate.model_dump_json()``: the state serialised from the aggregate itself and
    the events from their fields, in one call per aggregate, with no model built in between
    (tests/integration/test_api_bounded.py compares the texts)."""
    portions = _portions(found)
    for store, aid in found:
        aggregate: AggregateRoot | None = None
        entries, events, erased = [], [], False
        portion = portions.get(aid)
        decode, key = store.mapper.to_domain_event, str(aid)
        for stored in store.recorder.select_events(aid):
            event = decode(stored)
            erased = erased or event.erased
            if erased:
                events.append(event)  # an erased client's (issue 16): shown as erased, not replayed
            else:
                aggregate = project(aggregate, (event,))
            if portion is None or stored.originator_version in portion:
                entries.append(_entry_fields(event, key))
        state: Any
        if erased:
            kind, _, _, state = erased_state(events)
        else:
            assert aggregate is not None
            kind = type(aggregate).__name__
            state = aggregate if portion is None else {
                "shown": "this client's events only: the aggregate is shared with other clients",
                "subscription_id": str(getattr(aggregate, "subscription_id", "")),
            }
        yield to_json({"store": store.name, "aggregate_type": kind, "aggregate_id": aid, "state": state,
                       "events": entries})


def _timeline_of(store: Store, aids: list[UUID], rank: dict[UUID, int], kinds: dict[UUID, str],
                 portions: dict[UUID, frozenset[int]] | None = None) -> Iterator[tuple[Any, Any]]:
    """The client's events in one store, in the order of its log (by the time recorded: events
    are stamped as they are recorded), events stamped alike ordered as the aggregates are
    listed (``rank``) and by version: (sort key, (aggregate type, entry)). Reads the client's
    aggregates' events only (their log positions first, through the events' index by
    aggregate, then a page of them at a time), and of those shared with other clients
    (``portions``) shows the client's versions only; holds their positions and the events of
    one moment."""
    positions = array("q", store.recorder.positions_of(aids))
    moment: list[tuple[Any, Any]] = []
    for i in range(0, len(positions), PAGE):
        for notification in store.recorder.notifications_at(positions[i:i + PAGE].tolist()):
            aid = notification.originator_id
            if portions and aid in portions and notification.originator_version not in portions[aid]:
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
        self._kinds = {aid: aggregate_type_of(store.mapper.to_domain_event(
            store.recorder.select_events(aid, limit=1)[0])) for store, aid in found}

    def totals(self) -> tuple[int, int]:
        """(events, records): an aggregate's last version is its number of events (of a
        shared one, the client's portion)."""
        portions = _portions(self._found)
        events = sum(len(portions[aid]) if aid in portions else
                     store.recorder.select_events(aid, desc=True, limit=1)[0].originator_version
                     for store, aid in self._found)
        return events, len(self._found)

    def of_type(self, aggregate_type: str) -> Iterator[ExportedAggregate]:
        return exported((store, aid) for store, aid in self._found if self._kinds[aid] == aggregate_type)

    def timeline(self) -> Iterator[tuple[str, HistoryEntry]]:
        """Every event of the client by the time recorded, as :meth:`Export.timeline` orders
        them (ties: in the aggregates' order, then by version): each store's events of the
        client in log order, read a page at a time, merged. Reads the client's events only."""
        rank = {aid: i for i, (_, aid) in enumerate(self._found)}
        portions = _portions(self._found)
        by_store: dict[str, tuple[Store, list[UUID]]] = {}
        for store, aid in self._found:
            by_store.setdefault(store.name, (store, []))[1].append(aid)
        merged = heapq.merge(*(_timeline_of(store, aids, rank, self._kinds, portions)
                               for store, aids in by_store.values()),
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
        if indent is None:
            for i, text in enumerate(_exported_json(found)):
                yield ("," if i else "") + text.decode()
        else:
            for i, aggregate in enumerate(exported(found)):
                text = aggregate.model_dump_json(indent=indent)
                yield ("," if i else "") + pad + text.replace("\n", pad)
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
