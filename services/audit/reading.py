"""What auditors read: an aggregate's history, its state at a moment or version, the
difference between two points, and the causation chain of an event across every store.

Reads go straight to each application's notification log and events (the care
application's and the services'), through the same mapper that wrote them; nothing here
writes to those stores. Every read is recorded in the access log (services.audit.access)
by the caller-facing functions in services.audit.api.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment
from pydantic import BaseModel

from domain.assessment.record import AssessmentRecord
from domain.base import AggregateRoot, DomainEvent, project
from domain.care_plan import CarePlan
from domain.errors import ClientDataErasedError
from domain.escalation.crisis import Crisis
from domain.escalation.plan_risk import PlanRisk
from domain.inventory import Inventory
from domain.operations.dead_letter import DeadLetter
from domain.scheduling.plans import PlanStrategy
from domain.scheduling.schedule import CourseSchedule
from domain.therapy_course import TherapyCourse
from services.audit.integrity import RECORD_STORES, store_exists
from services.shared.errors import AggregateMissingError, NotYetExistingError
from services.shared.persistence import eventsourcing_env, paged_notifications
from services.shared.settings import Settings

#: Every aggregate class of every store. A class registers the event that creates it when it
#: is defined, so importing them all lets any store's history be replayed here.
AGGREGATE_CLASSES = (CarePlan, TherapyCourse, Inventory, AssessmentRecord, Crisis, PlanRisk, CourseSchedule, PlanStrategy,
                     DeadLetter)


class Store:
    """One application's log and events, read-only."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self._factory = InfrastructureFactory.construct(Environment(name, eventsourcing_env(settings, name)))
        self.recorder: Any = self._factory.application_recorder()
        self.mapper = self._factory.mapper(transcoder=self._factory.transcoder())

    def all_events(self) -> Iterator[DomainEvent]:
        return map(self.mapper.to_domain_event, paged_notifications(self.recorder))

    def close(self) -> None:
        self._factory.close()


class Stores:
    """Every store that exists under these settings; closes them all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.all = [Store(settings, name) for name in RECORD_STORES if store_exists(settings, name)]

    def events_of(self, aggregate_id: UUID) -> tuple[str, list[DomainEvent]]:
        store, events = self.stream_of(aggregate_id)
        return store, list(events)

    def stream_of(self, aggregate_id: UUID) -> tuple[str, Iterator[DomainEvent]]:
        """Like ``events_of``, decoding each event only as it is consumed."""
        for store in self.all:
            stored = store.recorder.select_events(aggregate_id)
            if stored:
                return store.name, map(store.mapper.to_domain_event, stored)
        msg = f"No aggregate {aggregate_id} is recorded in any store; check the id."
        raise AggregateMissingError(msg)

    def close(self) -> None:
        for store in self.all:
            store.close()

    def __enter__(self) -> Stores:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def client_of(stores: Stores, aggregate_id: UUID) -> str | None:
    """The client an aggregate belongs to, from its first event: its ``client_id``, else the
    client of the plan it names (e.g. a PlanRisk or PlanStrategy); None if neither is known
    (a dead letter, a fail-safe crisis). No such aggregate raises AggregateMissingError."""
    first = _first_event(stores, aggregate_id)
    if (client := getattr(first, "client_id", None)) is not None:
        return str(client)
    if (plan_id := getattr(first, "plan_id", None)) is not None:
        try:
            plan_first = _first_event(stores, plan_id)
        except AggregateMissingError:
            return None
        if (client := getattr(plan_first, "client_id", None)) is not None:
            return str(client)
    return None


def _first_event(stores: Stores, aggregate_id: UUID) -> DomainEvent:
    for store in stores.all:
        stored = store.recorder.select_events(aggregate_id, limit=1)
        if stored:
            return store.mapper.to_domain_event(stored[0])
    msg = f"No aggregate {aggregate_id} is recorded in any store; check the id."
    raise AggregateMissingError(msg)


class HistoryEntry(BaseModel):
    version: int
    recorded: datetime
    event_type: str
    event_id: UUID
    actor: str
    role: str
    reason: str | None
    summary: str
    causation_id: str | None
    correlation_id: UUID


def entry(event: DomainEvent) -> HistoryEntry:
    return HistoryEntry(
        version=event.originator_version, recorded=event.timestamp,
        event_type=event.erased_type if event.erased else type(event).__name__,  # type: ignore[attr-defined]
        event_id=event.event_id, actor=event.actor.id, role=event.actor.role.value, reason=event.reason,
        summary=event.describe(), causation_id=event.causation_id, correlation_id=event.correlation_id,
    )


def history(stores: Stores, aggregate_id: UUID) -> tuple[str, list[HistoryEntry]]:
    store, events = stores.events_of(aggregate_id)
    return store, [entry(e) for e in events]


class Replayed(BaseModel):
    store: str
    aggregate_type: str
    version: int
    as_recorded_at: datetime
    state: dict[str, Any]


def state_at(events: Iterable[DomainEvent], *, at: datetime | None = None, version: int | None = None) -> AggregateRoot:
    """The aggregate after exactly the events recorded at or before ``at`` (or up to
    ``version``); before its first event it did not exist yet. The events are folded as
    they are decoded, never all held at once (as the library's own replay does)."""
    first: DomainEvent | None = None
    aggregate: AggregateRoot | None = None
    for event in events:
        if (at is not None and event.timestamp > at) or (version is not None and event.originator_version > version):
            first = first or event
            break
        if aggregate is None:
            first, aggregate = event, project(None, (event,))
        else:
            aggregate.apply(event)
    if aggregate is None:
        when = at.isoformat() if at is not None else f"version {version}"
        created = f" (created {first.timestamp.isoformat()})" if first else ""
        msg = f"Aggregate {first.originator_id if first else ''} did not exist yet at {when}{created}."
        raise NotYetExistingError(msg)
    return aggregate


def aggregate_at(stores: Stores, aggregate_id: UUID, *, at: datetime | None = None,
                 version: int | None = None) -> tuple[str, AggregateRoot]:
    store, events = stores.stream_of(aggregate_id)
    return store, state_at(events, at=at, version=version)


def replay(stores: Stores, aggregate_id: UUID, *, at: datetime | None = None, version: int | None = None) -> Replayed:
    try:
        store, aggregate = aggregate_at(stores, aggregate_id, at=at, version=version)
    except ClientDataErasedError:
        return erased_replay(stores, aggregate_id, at=at, version=version)
    return Replayed(store=store, aggregate_type=type(aggregate).__name__, version=aggregate.version,
                    as_recorded_at=aggregate.modified_on, state=aggregate.model_dump(mode="json"))


def erased_state(events: Iterable[DomainEvent]) -> tuple[str, int, datetime, dict[str, Any]]:
    """What replay and export show of an erased client's aggregate (issue 16): its type (from
    its first event's), version and time, and a marker with when and why it was erased."""
    from services.shared.privacy.erased import MARKER

    creators = {cls.__name__: agg.__name__ for cls, agg in AggregateRoot._creators.items()}
    first = last = None
    for event in events:
        first, last = first or event, event
    assert first is not None and last is not None
    kind = creators.get(getattr(first, "erased_type", None) or type(first).__name__, "erased")
    erased = next((e for e in (last, first) if getattr(e, "erased_type", None)), last)
    return kind, last.originator_version, last.timestamp, {
        "erased": MARKER, "erased_at": getattr(erased, "erased_at", None), "why": getattr(erased, "erased_why", None)}


def erased_replay(stores: Stores, aggregate_id: UUID, *, at: datetime | None = None,
                  version: int | None = None) -> Replayed:
    store, events = stores.stream_of(aggregate_id)
    kept = [e for e in events if (at is None or e.timestamp <= at) and (version is None or e.originator_version <= version)]
    if not kept:
        msg = f"Aggregate {aggregate_id} did not exist yet then."
        raise NotYetExistingError(msg)
    kind, last_version, recorded, state = erased_state(kept)
    return Replayed(store=store, aggregate_type=kind, version=last_version, as_recorded_at=recorded, state=state)


class FieldChange(BaseModel):
    path: str
    before: Any = None
    after: Any = None
    change: str  # added, removed, changed


def _flatten(value: Any, path: str, into: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{path}.{key}" if path else str(key), into)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            _flatten(item, f"{path}[{i}]", into)
    else:
        into[path] = value


def diff_states(before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    """Field by field, nested fields by path (``goals.<id>.status``), lists of records by index."""
    flat_before: dict[str, Any] = {}
    flat_after: dict[str, Any] = {}
    _flatten(before, "", flat_before)
    _flatten(after, "", flat_after)
    changes = []
    for path in sorted(set(flat_before) | set(flat_after)):
        if path not in flat_before:
            changes.append(FieldChange(path=path, after=flat_after[path], change="added"))
        elif path not in flat_after:
            changes.append(FieldChange(path=path, before=flat_before[path], change="removed"))
        elif flat_before[path] != flat_after[path]:
            changes.append(FieldChange(path=path, before=flat_before[path], after=flat_after[path], change="changed"))
    return changes


class Diff(BaseModel):
    aggregate_id: UUID
    from_version: int
    to_version: int
    changes: list[FieldChange]
    events_between: list[HistoryEntry]


def diff(stores: Stores, aggregate_id: UUID, start: datetime | int, end: datetime | int) -> Diff:
    _, events = stores.events_of(aggregate_id)

    def at(point: datetime | int) -> AggregateRoot:
        return state_at(events, version=point) if isinstance(point, int) else state_at(events, at=point)

    before, after = at(start), at(end)
    ignored = {"version", "modified_on"}
    return Diff(
        aggregate_id=aggregate_id, from_version=before.version, to_version=after.version,
        changes=[c for c in diff_states(before.model_dump(mode="json"), after.model_dump(mode="json")) if c.path not in ignored],
        events_between=[entry(e) for e in events if before.version < e.originator_version <= after.version],
    )


class Hop(BaseModel):
    store: str
    event_type: str
    event_id: UUID
    aggregate_id: UUID
    version: int
    recorded: datetime
    actor: str
    role: str
    summary: str
    reason: str | None
    causation_id: str | None


class Trace(BaseModel):
    event: Hop
    #: From the origin (a command, usually) to the event's direct cause.
    causes: list[Hop]
    #: Everything the event led to, in recorded order (breadth first by causation).
    effects: list[Hop]


def trace(stores: Stores, event_id: UUID) -> Trace:
    """The causation chain of one event across every store, both ways."""
    by_id: dict[str, Hop] = {}
    by_cause: dict[str, list[Hop]] = {}
    for store in stores.all:
        for event in store.all_events():
            hop = Hop(store=store.name, event_type=type(event).__name__, event_id=event.event_id,
                      aggregate_id=event.originator_id, version=event.originator_version, recorded=event.timestamp,
                      actor=event.actor.id, role=event.actor.role.value, summary=event.describe(), reason=event.reason,
                      causation_id=event.causation_id)
            by_id[str(event.event_id)] = hop
            if event.causation_id:
                by_cause.setdefault(event.causation_id, []).append(hop)
    key = str(event_id)
    if key not in by_id:
        msg = f"No event {event_id} is recorded in any store; check the id."
        raise AggregateMissingError(msg)
    causes: list[Hop] = []
    cause = by_id[key].causation_id
    while cause is not None and cause in by_id and len(causes) < 1000:
        causes.append(by_id[cause])
        cause = by_id[cause].causation_id
    effects: list[Hop] = []
    frontier = [key]
    while frontier:
        next_frontier = []
        for cause_id in frontier:
            for hop in sorted(by_cause.get(cause_id, []), key=lambda h: h.recorded):
                effects.append(hop)
                next_frontier.append(str(hop.event_id))
        frontier = next_frontier
    return Trace(event=by_id[key], causes=list(reversed(causes)), effects=sorted(effects, key=lambda h: h.recorded))
