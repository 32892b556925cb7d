"""CareApplication: the eventsourcing Application that runs every care command.

Commands write events to the event store only; publishing is the relay's job, from the
notification log. Each command may carry the version its caller read (optimistic
concurrency); a stale version, or a concurrent writer winning the race, fails with
:class:`ConcurrencyConflictError` and writes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import ProcessRecorder

from domain.base import Actor, AggregateRoot, AggregateSnapshot, DomainEvent, Role, project
from domain.care_plan import CarePlan
from domain.inventory import Inventory
from domain.therapy_course import TherapyCourse
from services.care import policies
from services.shared.clock import Clock, MonotonicClock
from services.shared.commands import CommandHandling, CommandMeta, CommandResult

__all__ = ["CareApplication", "CommandMeta", "CommandResult"]
from services.shared.errors import (
    AggregateMissingError,
    CannotCheckCrisisError,
    NotYetExistingError,
    StoreBehindError,
)
from services.shared.persistence import eventsourcing_env, surviving_catalog_races
from services.shared.settings import Settings
from services.shared.tracking import Tracked

#: How often commands check that the store has not gone back behind what was published.
STORE_CHECK_SECONDS = 5.0


class CareApplication(CommandHandling, Tracked, Application[UUID]):
    name = "care"
    #: The actor of changes the care application makes in reaction to other services.
    actor = Actor(id="care-policies", role=Role.SERVICE)
    snapshot_class = AggregateSnapshot
    risk_signals: ClassVar[frozenset[type[DomainEvent]]] = policies.RISK_SIGNALS
    reactions = policies.REACTIONS
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

    def is_risk_signal(self, subject: str, body: dict[str, Any] | None) -> bool:
        return super().is_risk_signal(subject, body) and policies.is_risk_signal(body)

    # ----------------------------------------------------------------- commands (handle: CommandHandling)

    def before_command(self) -> None:
        self._require_store_in_line()

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

    # ----------------------------------------------------------------- reads

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
