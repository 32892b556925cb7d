"""``careplan audit verify``: recompute every store's hash chain and compare it with the
links kept as the events were written (services/shared/chained.py).

A break is reported at the first position where the stored log and the chain disagree,
and named: *edited* (an event's bytes no longer give its link), *deleted* (a link whose
event is gone), *inserted* (an event that has no link), *reordered* (an event whose bytes
give the link of another position: two rows swapped). An anchor (a chain head published
earlier, e.g. on ``care.audit.v1.chain.<store>``) also catches a rewrite of the whole
chain: its link must still be the link at its position.

Side doors (issue 13). Deleting a whole store does not make it disappear from verify: the
registry says which stores exist (:data:`RECORD_STORES`); once any of them exists (the system
has started), each one that is missing is a break (*missing*). A store with an anchor
(a published head) must exist and hold it. With ``--nats`` the anchors are the heads on
``CARE_AUDIT`` themselves, so dropping every store (and the relay files) is caught too;
without NATS, an empty data dir is a fresh install and verifies green. When the heads are
asked for (``--nats``, ``--anchor``), a store of the registry that holds events must have
one (*unanchored* otherwise: the published heads were removed), unless the operator says
this is the first anchoring (``--first-anchoring``: no head was published yet).
"""

from __future__ import annotations

import json
from typing import Literal
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from pydantic import BaseModel

from services.registry import STORES as REGISTERED_STORES
from services.shared.chained import GENESIS, link_of
from services.shared.persistence import OutboxStores, paged_notifications
from services.shared.settings import Settings

#: The applications with a store of their own (as the registry declares them).
RECORD_STORES = REGISTERED_STORES
#: ... and the auditors' access log, chained like the others.
STORES = (*RECORD_STORES, "audit_access")
PAGE = 5000

BreakKind = Literal["edited", "deleted", "inserted", "reordered", "anchor-mismatch", "missing", "unanchored"]


class ChainBreak(BaseModel):
    position: int
    kind: BreakKind
    detail: str


class PositionCheck(BaseModel):
    """A recorded position compared with what the stream holds: a relay's (of its store) or a
    consumer's (of the stream, and of each source it read). A position ahead of the stream was
    moved forward by hand: the events between were silently dropped (never published, or
    never decided)."""

    who: str
    of: str
    recorded: int
    on_stream: int
    ok: bool


class SnapshotProblem(BaseModel):
    """An aggregate's latest snapshot that disagrees with its events."""

    aggregate_id: str
    version: int
    detail: str


class StoreReport(BaseModel):
    store: str
    events: int
    head_position: int
    head_link: str
    ok: bool
    first_break: ChainBreak | None = None
    #: How many snapshots were checked (each aggregate's latest), and those that disagree.
    snapshots_checked: int = 0
    snapshot_problems: list[SnapshotProblem] = []
    #: The positions kept in this store (its relay's, its consumer's) against the stream;
    #: None: not checked (no NATS server named).
    positions: list[PositionCheck] | None = None


class Anchor(BaseModel):
    """A chain head as published: the link at a position of one store."""

    store: str
    position: int
    link: str


def _chain(recorder: object) -> dict[int, bytes]:
    links: dict[int, bytes] = {}
    start = 1
    while batch := recorder.chain(start=start, limit=PAGE):  # type: ignore[attr-defined]
        links.update(batch)
        start = batch[-1][0] + 1
    return links


def verify_recorder(store: str, recorder: object, anchors: list[Anchor] = ()) -> StoreReport:  # type: ignore[assignment]
    events = {n.id: n for n in paged_notifications(recorder, PAGE)}
    links = _chain(recorder)
    positions = sorted(set(events) | set(links))
    previous = GENESIS
    problem: ChainBreak | None = None
    for i, position in enumerate(positions):
        event, link = events.get(position), links.get(position)
        if event is None:
            problem = ChainBreak(position=position, kind="deleted", detail="the chain has a link here but the event is gone")
            break
        if link is None:
            problem = ChainBreak(position=position, kind="inserted", detail="an event with no link: it was not written with the log")
            break
        expected = link_of(previous, position, event.originator_id, event.originator_version, event.topic, event.state)  # type: ignore[attr-defined]
        if expected != link:
            moved = _belongs_elsewhere(event, positions, links, i)
            if moved is not None:
                problem = ChainBreak(position=position, kind="reordered",
                                     detail=f"this event's bytes belong at position {moved}")
            else:
                problem = ChainBreak(position=position, kind="edited",
                                     detail=f"{event.topic.rsplit(':', 1)[-1]} of {event.originator_id} v{event.originator_version} "  # type: ignore[attr-defined]
                                     "no longer matches its link")
            break
        previous = link
    head = positions[-1] if positions else 0
    if problem is None:
        for anchor in anchors:
            if anchor.store == store and links.get(anchor.position, b"").hex() != anchor.link:
                detail = ("the chain was rewritten: the published head no longer matches" if head >= anchor.position
                          else f"the store ends at position {head}, before the published head: events were removed")
                problem = ChainBreak(position=anchor.position, kind="anchor-mismatch", detail=detail)
                break
    return StoreReport(store=store, events=len(events), head_position=head, head_link=links.get(head, GENESIS).hex(),
                       ok=problem is None, first_break=problem)


def _belongs_elsewhere(event: object, positions: list[int], links: dict[int, bytes], here: int) -> int | None:
    """The position whose stored link this event's bytes produce, if another."""
    for j, position in enumerate(positions):
        if j == here or position not in links:
            continue
        previous = links.get(positions[j - 1], GENESIS) if j else GENESIS
        if link_of(previous, position, event.originator_id, event.originator_version, event.topic, event.state) == links[position]:  # type: ignore[attr-defined]
            return position
    return None


def verify_store(settings: Settings, store: str, anchors: list[Anchor] = ()) -> StoreReport:  # type: ignore[assignment]
    stores = OutboxStores(settings, store)
    try:
        report = verify_recorder(store, stores.recorder, list(anchors))
        checked, problems = check_snapshots(settings, stores)
        return report.model_copy(update={"snapshots_checked": checked, "snapshot_problems": problems,
                                         "ok": report.ok and not problems})
    finally:
        stores.close()


def check_snapshots(settings: Settings, stores: OutboxStores) -> tuple[int, list[SnapshotProblem]]:
    """Each aggregate's latest snapshot (the one the application reads): its digest must match
    it and the chain, and its state must be what the aggregate's events up to its version
    give (a digest recomputed by someone without the key's secret is caught by the replay)."""
    from domain.base import AggregateSnapshot, project
    from services.shared.snapshots import snapshot_agrees, snapshot_key

    key = snapshot_key(settings.cipher_key.get_secret_value() if settings.cipher_key is not None else None)
    recorder = stores.recorder
    problems = []
    latest = _latest_snapshots(recorder)
    for stored in latest:
        try:
            snapshot = stores.mapper.to_domain_event(stored)
        except Exception as e:  # noqa: BLE001 - an unreadable snapshot is a finding, not a crash
            problems.append(SnapshotProblem(aggregate_id=str(stored.originator_id), version=stored.originator_version,
                                            detail=f"unreadable ({type(e).__name__})"))
            continue
        if snapshot.erased:
            continue  # an erased client's snapshot (issue 16): unreadable by design; its events stay chained
        if not snapshot_agrees(snapshot, recorder, key):
            problems.append(SnapshotProblem(aggregate_id=str(snapshot.originator_id), version=snapshot.originator_version,
                                            detail="its digest does not match it and the hash chain (edited, or taken "
                                            "before digests: not used by the application)"))
            continue
        events = recorder.select_events(snapshot.originator_id, lte=snapshot.originator_version)
        replayed = project(None, (stores.mapper.to_domain_event(e) for e in events))
        if replayed is None or AggregateSnapshot.take(replayed).state != snapshot.state:
            problems.append(SnapshotProblem(aggregate_id=str(snapshot.originator_id), version=snapshot.originator_version,
                                            detail="its state is not what the aggregate's events give"))
    return len(latest), problems


def _latest_snapshots(recorder: object) -> list[StoredEvent]:
    """Each aggregate's latest snapshot, as stored (none if the store keeps no snapshots)."""
    from services.shared.chained import _snapshots_table

    table = _snapshots_table(recorder.events_table_name)  # type: ignore[attr-defined]
    query = ("SELECT s.originator_id, s.originator_version, s.topic, s.state FROM {0} s WHERE s.originator_version = "
             "(SELECT MAX(t.originator_version) FROM {0} t WHERE t.originator_id = s.originator_id)")
    datastore = recorder.datastore  # type: ignore[attr-defined]
    if not hasattr(datastore, "schema"):  # SQLite
        with datastore.transaction(commit=False) as c:
            c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
            if not c.fetchone():
                return []
            c.execute(query.format(table))
            return [StoredEvent(originator_id=UUID(r[0]), originator_version=r[1], topic=r[2], state=bytes(r[3]))
                    for r in c.fetchall()]
    from psycopg.sql import SQL, Identifier

    with datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute("SELECT to_regclass(%s) AS found", (f'"{datastore.schema}"."{table}"',))
        if not curs.fetchone()["found"]:
            return []
        curs.execute(SQL(query).format(Identifier(datastore.schema, table)))
        return [StoredEvent(originator_id=r["originator_id"], originator_version=r["originator_version"], topic=r["topic"],
                            state=bytes(r["state"])) for r in curs.fetchall()]


def verify_all(settings: Settings, anchors: list[Anchor] = (), *,  # type: ignore[assignment]
               anchored: bool = False) -> list[StoreReport]:
    """Every store that exists (a SQLite file, or a PostgreSQL schema with events), and a
    *missing* report for each store that must exist and does not: a store of the registry
    once the system has started (:func:`system_started`), or a store with an anchor.

    ``anchored``: ``anchors`` are the heads read from outside (NATS, a file), so every store
    of the registry that holds events must have one; one without is *unanchored*."""
    existing = {store for store in STORES if store_exists(settings, store)}
    started = system_started(settings, existing)
    reports = []
    for store in STORES:
        if store in existing:
            report = verify_store(settings, store, anchors)
            if anchored and store in RECORD_STORES:
                report = unanchored(report, anchors)
            reports.append(report)
            continue
        anchored = [a for a in anchors if a.store == store]
        if anchored:
            reports.append(missing(store, max(a.position for a in anchored),
                                   "a head of this store was published, but the store is gone"))
        elif started and store in RECORD_STORES:
            reports.append(missing(store, 0, "the registry names this store and the system has started "
                                   f"({', '.join(sorted(started))} exist), but it is gone"))
    return reports


def unanchored(report: StoreReport, anchors: list[Anchor]) -> StoreReport:
    """A store that holds events, whose chain is whole, and of which no head is among the
    anchors: they were removed (a purged ``CARE_AUDIT``, an edited anchor file), or none was
    published yet. A rewritten chain with its heads gone would otherwise verify green."""
    if not report.ok or report.head_position == 0 or any(a.store == report.store for a in anchors):
        return report
    return report.model_copy(update={"ok": False, "first_break": ChainBreak(
        position=report.head_position, kind="unanchored",
        detail=f"the store holds {report.events} events but no published chain head of it was found: the heads were "
               "removed, or none was published yet (only on the first anchoring, pass --first-anchoring)")})


def missing(store: str, position: int, detail: str) -> StoreReport:
    return StoreReport(store=store, events=0, head_position=0, head_link=GENESIS.hex(), ok=False,
                       first_break=ChainBreak(position=position, kind="missing", detail=detail))


def system_started(settings: Settings, existing: set[str]) -> set[str]:
    """What shows that the system has run here: the registry's stores that exist and (on
    SQLite) the relays' position files. `careplan up` creates every store of the registry
    as its processes start, so a started system has all of them; nothing of it is a fresh
    install."""
    found = {store for store in existing if store in RECORD_STORES}
    if settings.database == "sqlite":
        found |= {f"relay-{store}.sqlite" for store in RECORD_STORES
                  if (settings.data_dir / f"relay-{store}.sqlite").exists()}
    return found


def store_exists(settings: Settings, store: str) -> bool:
    if settings.database == "sqlite":
        return settings.sqlite_path(store).exists()
    from services.shared.persistence import _admin_connection

    with _admin_connection(settings) as conn:
        found = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                             (settings.postgres_schema(store), f"{store}_events")).fetchone()
    return found is not None


async def published_heads(js: object, stores: tuple[str, ...] = STORES) -> list[Anchor]:
    """The last chain head each store's relay published on ``CARE_AUDIT``: anchors held
    outside the database (a store with one must still exist and hold it)."""
    from nats.js.errors import NotFoundError

    from contracts.subjects import chain_subject
    from services.shared.bus import AUDIT_STREAM

    heads = []
    for store in stores:
        try:
            message = await js.get_last_msg(AUDIT_STREAM, chain_subject(store))  # type: ignore[attr-defined]
        except NotFoundError:
            continue
        head = json.loads(message.data)
        heads.append(Anchor(store=store, position=int(head["position"]), link=str(head["link"])))
    return heads


async def check_positions(settings: Settings, js: object) -> list[PositionCheck]:
    """Every relay's position against the stream's last message of its store, and every
    consumer's tracking against the stream's last sequence and each source's last position."""
    from eventsourcing.persistence import InfrastructureFactory
    from eventsourcing.utils import Environment

    from services.registry import SERVICES
    from services.shared.persistence import eventsourcing_env, surviving_catalog_races
    from services.shared.relay import SourceOnStream
    from services.shared.tracking import stream_tracking_name

    stream = settings.stream_name
    existing = [store for store in RECORD_STORES if store_exists(settings, store)]
    last_of: dict[str, int] = {}
    for source in RECORD_STORES:
        last = await SourceOnStream(js, stream, source).last()
        last_of[source] = last.position if last is not None else 0
    last_seq = (await js.stream_info(stream)).state.last_seq  # type: ignore[attr-defined]
    checks = []
    for store in existing:
        stores = OutboxStores(settings, store)
        try:
            recorded = stores.tracking.max_tracking_id(store) or 0
        finally:
            stores.close()
        checks.append(PositionCheck(who=f"relay:{store}", of=store, recorded=recorded, on_stream=last_of[store],
                                    ok=recorded <= last_of[store]))
    for service in SERVICES:
        if service.store not in existing:
            continue
        factory = InfrastructureFactory.construct(Environment(service.store, eventsourcing_env(settings, service.store)))
        try:
            recorder = surviving_catalog_races(factory.process_recorder)
            recorded = recorder.max_tracking_id(stream_tracking_name(stream, service.name)) or 0
            checks.append(PositionCheck(who=f"consumer:{service.name}", of=f"stream {stream}", recorded=recorded,
                                        on_stream=last_seq, ok=recorded <= last_seq))
            for source in RECORD_STORES:
                recorded = recorder.max_tracking_id(source) or 0
                if recorded:
                    checks.append(PositionCheck(who=f"consumer:{service.name}", of=source, recorded=recorded,
                                                on_stream=last_of[source], ok=recorded <= last_of[source]))
        finally:
            factory.close()
    return checks


def with_positions(reports: list[StoreReport], checks: list[PositionCheck]) -> list[StoreReport]:
    """Each store's report with the positions it keeps (its relay's, its consumer's)."""
    from services.registry import SERVICES

    store_of = {f"relay:{store}": store for store in RECORD_STORES} | {f"consumer:{s.name}": s.store for s in SERVICES}
    result = []
    for report in reports:
        mine = [c for c in checks if store_of.get(c.who) == report.store]
        result.append(report.model_copy(update={"positions": mine, "ok": report.ok and all(c.ok for c in mine)}))
    return result
