"""``careplan audit verify``: recompute every store's hash chain and compare it with the
links kept as the events were written (services/shared/chained.py).

A break is reported at the first position where the stored log and the chain disagree,
and named: *edited* (an event's bytes no longer give its link), *deleted* (a link whose
event is gone), *inserted* (an event that has no link), *reordered* (an event whose bytes
give the link of another position: two rows swapped). An anchor (a chain head published
earlier, e.g. on ``care.audit.v1.chain.<store>``) also catches a rewrite of the whole
chain: its link must still be the link at its position.
"""

from __future__ import annotations

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

BreakKind = Literal["edited", "deleted", "inserted", "reordered", "anchor-mismatch"]


class ChainBreak(BaseModel):
    position: int
    kind: BreakKind
    detail: str


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
    if problem is None:
        for anchor in anchors:
            if anchor.store == store and links.get(anchor.position, b"").hex() != anchor.link:
                problem = ChainBreak(position=anchor.position, kind="anchor-mismatch",
                                     detail="the chain was rewritten: the published head no longer matches")
                break
    head = positions[-1] if positions else 0
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


def verify_all(settings: Settings, anchors: list[Anchor] = ()) -> list[StoreReport]:  # type: ignore[assignment]
    """Every store that exists (a SQLite file, or a PostgreSQL schema with events)."""
    return [verify_store(settings, store, anchors) for store in STORES if store_exists(settings, store)]


def store_exists(settings: Settings, store: str) -> bool:
    if settings.database == "sqlite":
        return settings.sqlite_path(store).exists()
    from services.shared.persistence import _admin_connection

    with _admin_connection(settings) as conn:
        found = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = %s",
                             (settings.postgres_schema(store), f"{store}_events")).fetchone()
    return found is not None
