"""The operators' desk for dead letters: every store's, listed, shown, and redriven.

A dead letter lives in the store of the service that gave up on its message. Asking for a
redrive records that request (who, why) on the dead letter; the service, in its own
process, then decides the message again and records the outcome there, so whatever the
decision changes (timers, caches) is the running service's own.
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import ProcessRecorder
from eventsourcing.utils import get_topic

from contracts.subjects import APPLICATION_CONTEXTS
from domain.base import Actor, AggregateSnapshot, CommandContext, DomainEvent, Role, project
from domain.errors import ClientDataErasedError
from domain.events.dead_letters import MessageDeadLettered
from domain.operations.dead_letter import DeadLetter, DeadLetterStatus
from services.shared.clock import system_clock
from services.shared.errors import AggregateMissingError
from services.shared.persistence import eventsourcing_env, surviving_catalog_races
from services.shared.settings import Settings
from services.shared.tracking import Tracked


def operator() -> Actor:
    """The person at this machine, as the operating system knows them."""
    return Actor(id=f"operator:{getpass.getuser()}@{socket.gethostname()}"[:200], role=Role.OPERATOR)


class StoreDesk(Tracked, Application[UUID]):
    """One application's store, opened by an operator's tool (not the service itself)."""

    snapshot_class = AggregateSnapshot
    actor = Actor(id="operator", role=Role.OPERATOR)

    def __init__(self, settings: Settings, name: str) -> None:
        self.name = name
        self.clock = system_clock
        env = eventsourcing_env(settings, name)
        surviving_catalog_races(lambda: super(StoreDesk, self).__init__(env=env))

    def construct_recorder(self) -> ProcessRecorder:
        return surviving_catalog_races(self.factory.process_recorder)


class DeadLetterDesk:
    """Dead letters of every store under these settings."""

    def __init__(self, settings: Settings) -> None:
        self.desks = {name: StoreDesk(settings, name) for name in APPLICATION_CONTEXTS}

    def list(self, status: DeadLetterStatus | None = None) -> list[DeadLetter]:
        """Every dead letter (or those in ``status``), oldest first."""
        found = [letter for desk in self.desks.values() for letter in self._letters(desk)]
        found.sort(key=lambda letter: letter.created_on)
        return [letter for letter in found if status is None or letter.status is status]

    def _letters(self, desk: StoreDesk) -> Iterator[DeadLetter]:
        topic = get_topic(MessageDeadLettered)
        start = 1
        while batch := desk.recorder.select_notifications(start=start, limit=500, topics=[topic]):
            for notification in batch:
                try:
                    yield desk.repository.get(notification.originator_id, projector_func=project)
                except ClientDataErasedError:
                    continue  # an erased client's (issue 16): nothing left to redrive or show
            start = batch[-1].id + 1

    def find(self, dead_letter_id: UUID) -> tuple[StoreDesk, DeadLetter]:
        for desk in self.desks.values():
            try:
                letter = desk.repository.get(dead_letter_id, projector_func=project)
            except AggregateNotFoundError:
                continue
            if isinstance(letter, DeadLetter):
                return desk, letter
        msg = f"No dead letter {dead_letter_id} is recorded in any store; `careplan deadletter list` shows them."
        raise AggregateMissingError(msg)

    def show(self, dead_letter_id: UUID) -> tuple[DeadLetter, list[DomainEvent]]:
        desk, letter = self.find(dead_letter_id)
        return letter, list(desk.events.get(dead_letter_id))  # type: ignore[arg-type]

    def request_redrive(self, dead_letter_id: UUID, *, actor: Actor, reason: str | None) -> DeadLetter:
        desk, letter = self.find(dead_letter_id)
        ctx = CommandContext(actor=actor, at=system_clock(), correlation_id=letter.correlation_id, causation_id=str(letter.id))
        letter.request_redrive(reason=reason, ctx=ctx)
        desk.save(letter)
        return letter

    def wait_for_outcome(self, dead_letter_id: UUID, timeout: float) -> DeadLetter:
        """The dead letter once its service has redriven it (or as it is after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            _, letter = self.find(dead_letter_id)
            if letter.status is not DeadLetterStatus.REDRIVE_REQUESTED or time.monotonic() > deadline:
                return letter
            time.sleep(0.2)

    def close(self) -> None:
        for desk in self.desks.values():
            desk.close()


def summary(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as the CLI and the API show it (ids, kinds and classes: no content)."""
    return {
        "id": str(letter.id), "service": letter.service, "status": letter.status.value,
        "dead_lettered_at": letter.created_on.isoformat(), "failed_event_type": letter.failed_event_type,
        "failed_event_id": letter.failed_event_id, "source": letter.source, "position": letter.position,
        "stream_sequence": letter.stream_sequence, "subject": letter.subject, "error_class": letter.error_class,
        "error_code": letter.error_code, "field_paths": letter.field_paths, "attempts": letter.attempts,
        "risk_signal": letter.risk_signal, "plan_id": str(letter.plan_id) if letter.plan_id else None,
        "client_id": letter.client_id, "redrives": letter.redrives, "version": letter.version,
    }
