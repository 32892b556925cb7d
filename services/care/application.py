"""CareApplication: the eventsourcing Application that runs every care command.

Commands write events to the event store only; publishing is the relay's job, from the
notification log. Each command may carry the version its caller read (optimistic
concurrency); a stale version, or a concurrent writer winning the race, fails with
:class:`ConcurrencyConflictError` and writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, ProcessRecorder
from pydantic import BaseModel, ConfigDict, Field

from domain.base import Actor, AggregateRoot, AggregateSnapshot, CommandContext, DomainEvent, Role, project
from domain.care_plan import CarePlan
from domain.inventory import Inventory
from domain.therapy_course import TherapyCourse
from services.care.commands import Command, CreationCommand
from services.care.errors import (
    AggregateMissingError,
    CannotCheckCrisisError,
    ConcurrencyConflictError,
    NotYetExistingError,
    StoreBehindError,
)
from services.care import policies
from services.shared.clock import Clock, MonotonicClock
from services.shared.persistence import eventsourcing_env, surviving_catalog_races
from services.shared.processing import Inbound, Tracked
from services.shared.settings import Settings

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)
#: How often commands check that the store has not gone back behind what was published.
STORE_CHECK_SECONDS = 5.0


class CommandMeta(BaseModel):
    """Who sends a command, the story it belongs to, and the version the sender read.

    ``causation_id`` names what directly caused the command (an upstream event's id);
    without one, the command itself is the cause: ``command:<command_id>``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    actor: Actor
    command_id: UUID = Field(default_factory=uuid4)
    correlation_id: UUID | None = None
    causation_id: str | None = None
    expected_version: int | None = None


class CommandResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    aggregate_id: UUID
    version: int
    event_ids: list[UUID]
    event_types: list[str]
    correlation_id: UUID


class CareApplication(Tracked, Application[UUID]):
    name = "care"
    #: The actor of changes the care application makes in reaction to other services.
    actor = Actor(id="care-policies", role=Role.SERVICE)
    snapshot_class = AggregateSnapshot
    risk_signals: ClassVar[frozenset[type[DomainEvent]]] = policies.RISK_SIGNALS
    snapshotting_projectors: ClassVar[dict[type[Any], Any]] = {
        CarePlan: project,
        TherapyCourse: project,
        Inventory: project,
    }

    def __init__(
        self, settings: Settings, *, clock: Clock | None = None, crises: Callable[[UUID], UUID | None] | None = None
    ) -> None:
        """``crises``: the plan of a crisis the escalation service holds open (None: not
        open), wired in by whoever runs both (the API); without it, crisis commands from
        people are refused since they cannot be checked."""
        self.settings = settings
        self.crises = crises
        self._next_store_check = 0.0
        self._store_behind: str | None = None
        self._relay_tracking: Any = None
        self.clock = MonotonicClock(clock) if clock is not None else MonotonicClock()
        if settings.snapshot_interval:
            self.snapshotting_intervals = {  # type: ignore[misc]
                CarePlan: settings.snapshot_interval,
                TherapyCourse: settings.snapshot_interval,
                Inventory: settings.snapshot_interval,
            }
        env = eventsourcing_env(settings, self.name)
        surviving_catalog_races(lambda: super(CareApplication, self).__init__(env=env))

    def construct_recorder(self) -> ProcessRecorder:
        # A process recorder: the application's own log, plus tracking of what it consumed.
        return surviving_catalog_races(self.factory.process_recorder)

    def decide(self, inbound: Inbound) -> Sequence[AggregateRoot]:
        return policies.react(self, inbound)

    def is_risk_signal(self, subject: str, body: dict[str, Any] | None) -> bool:
        return super().is_risk_signal(subject, body) and policies.is_risk_signal(body)

    # ----------------------------------------------------------------- commands

    def handle(self, command: Command | CreationCommand, meta: CommandMeta) -> CommandResult:
        """Runs one command: load, check the expected version, decide, save."""
        self._require_store_in_line()
        ctx = CommandContext(
            actor=meta.actor,
            at=self.clock(),
            correlation_id=meta.correlation_id or uuid4(),
            causation_id=meta.causation_id or f"command:{meta.command_id}",
        )
        if isinstance(command, CreationCommand):
            if meta.expected_version not in (None, 0):
                msg = f"A new aggregate has no version yet; expected_version must be 0 or absent, not {meta.expected_version}."
                raise ConcurrencyConflictError(msg)
            aggregate = command.create(ctx, self)
        else:
            aggregate = self._get(command.aggregate_type, command.target_id())
            if meta.expected_version is not None and aggregate.version != meta.expected_version:
                msg = (
                    f"{type(aggregate).__name__} {aggregate.id} is at version {aggregate.version}, "
                    f"not {meta.expected_version}; read it again and retry."
                )
                raise ConcurrencyConflictError(msg)
            command.execute(aggregate, ctx, self)
        return self._save(aggregate, ctx)

    def _require_store_in_line(self) -> None:
        """Refuses commands while the store ends before what its relay published (it was
        restored from a backup, or reset): a new event would take a position, and an event
        id, that subscribers have seen for another event. Checked every few seconds."""
        now = time.monotonic()
        if now >= self._next_store_check:
            self._next_store_check = now + STORE_CHECK_SECONDS
            published = self._relay_position()
            ends = self.recorder.max_notification_id() or 0
            self._store_behind = (
                f"The care store ends at position {ends}, before what was published from it ({published}): it was "
                "restored or reset. Nothing can be recorded until an operator runs `careplan store recover care`."
                if published > ends else None
            )
        if self._store_behind is not None:
            raise StoreBehindError(self._store_behind)

    def _relay_position(self) -> int:
        if self._relay_tracking is None:
            from services.shared.persistence import relay_tracking_factory

            self._relay_factory = relay_tracking_factory(self.settings, self.name)
            self._relay_tracking = surviving_catalog_races(self._relay_factory.tracking_recorder)
        return self._relay_tracking.max_tracking_id(self.name) or 0

    def close(self) -> None:
        if self._relay_tracking is not None:
            self._relay_factory.close()
        super().close()

    def _save(self, aggregate: AggregateRoot, ctx: CommandContext) -> CommandResult:
        events = aggregate.pending_events
        try:
            self.save(aggregate)
        except IntegrityError as e:
            self._forget(aggregate.id)
            msg = (
                f"{type(aggregate).__name__} {aggregate.id} was changed by another writer at the same "
                "time; read it again and retry. Nothing was written."
            )
            raise ConcurrencyConflictError(msg) from e
        except BaseException:
            self._forget(aggregate.id)
            raise
        return CommandResult(
            aggregate_id=aggregate.id,
            version=aggregate.version,
            event_ids=[e.event_id for e in events],
            event_types=[type(e).__name__ for e in events],
            correlation_id=ctx.correlation_id,
        )

    def _forget(self, aggregate_id: UUID) -> None:
        cache = self.repository.cache
        if cache is not None:
            try:
                cache.get(aggregate_id, evict=True)
            except KeyError:
                pass

    # ----------------------------------------------------------------- reads

    def _get(self, cls: type[TAggregate], aggregate_id: UUID, version: int | None = None) -> TAggregate:
        try:
            aggregate = self.load(aggregate_id, version)
        except AggregateNotFoundError:
            at = f" at version {version}" if version is not None else ""
            msg = f"No {cls.__name__} {aggregate_id}{at} is recorded; check the id."
            raise AggregateMissingError(msg) from None
        if not isinstance(aggregate, cls):
            msg = f"{aggregate_id} is a {type(aggregate).__name__}, not a {cls.__name__}."
            raise AggregateMissingError(msg)
        return aggregate

    def crisis_held_open(self, crisis_id: UUID) -> UUID | None:
        if self.crises is None:
            msg = "Crisis commands from people are checked against the escalation service; send them through the API."
            raise CannotCheckCrisisError(msg)
        return self.crises(crisis_id)

    def get_plan(self, plan_id: UUID, *, version: int | None = None) -> CarePlan:
        return self._get(CarePlan, plan_id, version)

    def get_course(self, course_id: UUID, *, version: int | None = None) -> TherapyCourse:
        return self._get(TherapyCourse, course_id, version)

    def get_inventory(self, inventory_id: UUID, *, version: int | None = None) -> Inventory:
        return self._get(Inventory, inventory_id, version)

    def get_aggregate(self, aggregate_id: UUID, *, version: int | None = None) -> AggregateRoot:
        return self._get(AggregateRoot, aggregate_id, version)

    def history(self, aggregate_id: UUID) -> Iterator[DomainEvent]:
        """Every stored event of one aggregate, in version order."""
        return iter(self.events.get(aggregate_id))  # type: ignore[arg-type]

    def as_of(self, aggregate_id: UUID, at: datetime) -> AggregateRoot:
        """The aggregate as it was recorded at ``at``: after every event recorded at or
        before that moment, and none after."""
        aggregate: AggregateRoot | None = None
        for event in self.events.get(aggregate_id):
            if event.timestamp > at:  # type: ignore[attr-defined]
                break
            aggregate = project(aggregate, (event,))
        if aggregate is None:
            if next(iter(self.events.get(aggregate_id, limit=1)), None) is None:
                msg = f"No aggregate {aggregate_id} is recorded; check the id."
                raise AggregateMissingError(msg)
            msg = f"Aggregate {aggregate_id} did not exist yet at {at.isoformat()}."
            raise NotYetExistingError(msg)
        return aggregate
