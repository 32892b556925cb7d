"""One command style for every application that takes commands from people.

A command is a small frozen class: it names its target aggregate and says what to ask of
it; :meth:`CommandHandling.handle` does the rest — load, check the version the sender
read, decide, save — and answers with a :class:`CommandResult`. The same classes are the
request bodies of the HTTP API and the CLI. The care application's commands live in
``services/care/commands/``, the escalation service's in ``services/escalation/commands.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from domain.base import Actor, AggregateRoot, CommandContext
from domain.errors import DomainError
from services.shared import metrics, tracing
from services.shared.errors import AggregateMissingError, ConcurrencyConflictError

TAggregate = TypeVar("TAggregate", bound=AggregateRoot)


#: No string in a command is parsed beyond this (issue 13): a door well above the domain's own
#: limits (``TEXT_MAX`` after stripping), which still decide and word the refusal.
DOOR_TEXT_MAX = 4 * 4000


class Command(BaseModel):
    """A command on an existing aggregate."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=DOOR_TEXT_MAX)

    aggregate_type: ClassVar[type[AggregateRoot]]

    def target_id(self) -> UUID:
        raise NotImplementedError

    def execute(self, aggregate: Any, ctx: CommandContext, lookup: Any) -> None:
        """Asks ``aggregate`` for the change; ``lookup`` is the application (read access to
        other aggregates, for rules that span two)."""
        raise NotImplementedError


class CreationCommand(BaseModel):
    """A command that makes a new aggregate."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=DOOR_TEXT_MAX)

    aggregate_type: ClassVar[type[AggregateRoot]]

    def create(self, ctx: CommandContext, lookup: Any) -> AggregateRoot:
        raise NotImplementedError


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


_counted: dict[tuple[str, type[Any], str], Any] = {}


def outcome_of(error: BaseException | None) -> str:
    """accepted; refused (a rule, a conflict, an invalid value: the caller's to mend); failed (the system's)."""
    if error is None:
        return "accepted"
    return "refused" if isinstance(error, DomainError | ValidationError) else "failed"


def count_command(app: Any, command: BaseModel, error: BaseException | None) -> None:
    """``careplan_commands_total{application, command, outcome}`` + 1 (never raises)."""
    def inc() -> None:
        key = (str(app.name), type(command), outcome_of(error))
        child = _counted.get(key)
        if child is None:
            child = _counted[key] = metrics.COMMANDS.labels(key[0], type(command).__name__, key[2])
        child.inc()

    metrics.guarded("commands", inc)


class CommandHandling:
    """``handle(command, meta)`` for an eventsourcing Application (mixed in before it)."""

    clock: Any
    repository: Any

    def handle(self, command: Command | CreationCommand, meta: CommandMeta) -> CommandResult:
        """Runs one command: load, check the expected version, decide, save (and counts it:
        ``careplan_commands_total``)."""
        try:
            result = self.handle_uncounted(command, meta)
        except Exception as e:
            count_command(self, command, e)
            raise
        count_command(self, command, None)
        return result

    @tracing.traced_command
    def handle_uncounted(self, command: Command | CreationCommand, meta: CommandMeta) -> CommandResult:
        """:meth:`handle` without counting: for callers that try a command several times and
        count what the tries came to once (``services/care/handling.py``)."""
        self.before_command()
        if isinstance(command, CreationCommand):
            if meta.expected_version not in (None, 0):
                msg = f"A new aggregate has no version yet; expected_version must be 0 or absent, not {meta.expected_version}."
                raise ConcurrencyConflictError(msg)
            ctx = self.command_context(meta, None)
            aggregate = command.create(ctx, self)
        else:
            aggregate = self._get(command.aggregate_type, command.target_id())
            if meta.expected_version is not None and aggregate.version != meta.expected_version:
                msg = (
                    f"{type(aggregate).__name__} {aggregate.id} is at version {aggregate.version}, "
                    f"not {meta.expected_version}; read it again and retry."
                )
                raise ConcurrencyConflictError(msg)
            ctx = self.command_context(meta, aggregate)
            command.execute(aggregate, ctx, self)
        result = self._save(aggregate, ctx)
        self.after_command(aggregate)
        return result

    # ----------------------------------------------------------------- hooks

    def before_command(self) -> None:
        """Refuses every command while the application cannot take one (raise)."""

    def command_context(self, meta: CommandMeta, aggregate: AggregateRoot | None) -> CommandContext:
        """Who, when and in which story the command's events are recorded."""
        return CommandContext(
            actor=meta.actor,
            at=self.clock(),
            # With tracing on, the story is the request's trace (the caller's, when it sent a traceparent).
            correlation_id=meta.correlation_id or tracing.trace_uuid() or uuid4(),
            causation_id=meta.causation_id or f"command:{meta.command_id}",
        )

    def after_command(self, aggregate: AggregateRoot) -> None:
        """After the command's events were saved (timers follow them, say)."""

    # ----------------------------------------------------------------- load and save

    def _get(self, cls: type[TAggregate], aggregate_id: UUID, version: int | None = None) -> TAggregate:
        try:
            aggregate = self.load(aggregate_id, version)  # type: ignore[attr-defined]
        except AggregateNotFoundError:
            at = f" at version {version}" if version is not None else ""
            msg = f"No {cls.__name__} {aggregate_id}{at} is recorded; check the id."
            raise AggregateMissingError(msg) from None
        if not isinstance(aggregate, cls):
            msg = f"{aggregate_id} is a {type(aggregate).__name__}, not a {cls.__name__}."
            raise AggregateMissingError(msg)
        return aggregate

    def _save(self, aggregate: AggregateRoot, ctx: CommandContext) -> CommandResult:
        events = aggregate.pending_events
        try:
            self.save(aggregate)  # type: ignore[attr-defined]
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
