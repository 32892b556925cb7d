"""Running a command once, however often it is sent, while other writers move its aggregate on.

Without an idempotency key a command applies to the record as it is now: when another
writer gets in first (another worker, say) it is decided again on the new version, unless
the caller named the version it read (``expected_version``), in which case the conflict is
the caller's to resolve.

An idempotency key names the command: its ``command_id`` is the uuid5 of the actor and the
key, so its events' ``causation_id`` is ``command:<command_id>`` and a first run is found
in the aggregate's own history — no second table that a crash could leave out of step.
The version is read before the history is searched for a first run and then required of
the write, so a first run committed after the search makes this write conflict and is
found on the next look.

Within one process, writers of one aggregate take turns (a striped lock), so they never
conflict with each other; conflicts with other processes (several API workers) are decided
again after a short random pause that doubles with each try, so that the writers spread out
instead of meeting again at once.

Nothing here knows about HTTP: callers turn an :class:`Outcome` (or a raised
:class:`ConcurrencyConflictError`) into whatever answer their transport gives.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID, uuid5

from services.care.application import CareApplication
from services.care.commands import Command, CreationCommand
from services.shared.commands import CommandMeta, CommandResult, count_command
from services.shared.errors import AggregateMissingError, ConcurrencyConflictError
from services.shared.retry import backoff

IDEMPOTENCY_NAMESPACE = UUID("8c7d6f3e-2b1a-4c5d-9e8f-7a6b5c4d3e2f")
#: Tries of a command (without an expected version) while other writers keep moving its aggregate on.
IDEMPOTENT_ATTEMPTS = 8
#: The first pause after a conflict with another process (seconds); doubled on each further try.
CONFLICT_PAUSE = 0.002
#: One process's writers of one aggregate take turns: a lock per stripe of aggregate ids.
_TURNS = tuple(threading.Lock() for _ in range(64))


@dataclass(frozen=True)
class Outcome:
    """What a command did: ``replayed`` when its key's first run was found (nothing was written now)."""

    result: CommandResult
    replayed: bool


def command_id_for(actor_id: str, key: str) -> UUID:
    """The id of the command an actor sends with an idempotency key (the same for every retry)."""
    return uuid5(IDEMPOTENCY_NAMESPACE, f"{actor_id}\n{key}")


def new_id_for(actor_id: str, key: str, field: str) -> UUID:
    """The id of the aggregate a creation command sent with an idempotency key makes (``field``:
    the command's field for it), so that a retry finds what the first run made."""
    return uuid5(IDEMPOTENCY_NAMESPACE, f"{actor_id}\n{key}\n{field}")


def handle(
    care: CareApplication,
    make: Callable[[], Command | CreationCommand],
    meta: CommandMeta,
    key: str | None,
    *,
    aggregate_id: UUID,
) -> Outcome:
    """Run the command ``make`` builds (it is built again for every try) on ``aggregate_id``.

    ``meta.expected_version``: the version the caller read (a conflict is then raised, not
    retried), or None for the record as it is now. With ``key`` the command id follows from
    ``meta.actor`` and the key (``meta`` must name no ``causation_id`` of its own, or the
    first run could not be found). Raises :class:`ConcurrencyConflictError` when the
    aggregate kept changing through every try; nothing was written then.
    """
    made: list[Command | CreationCommand] = []

    def build() -> Command | CreationCommand:
        made.append(make())
        return made[-1]

    try:
        with _TURNS[aggregate_id.int % len(_TURNS)]:
            outcome = _handle(care, build, meta, key, aggregate_id=aggregate_id)
    except Exception as e:
        if made:  # counted once, whatever the tries (a command that could not even be built is the API's 422)
            count_command(care, made[-1], e)
        raise
    if made and not outcome.replayed:
        count_command(care, made[-1], None)
    return outcome


def _handle(
    care: CareApplication,
    make: Callable[[], Command | CreationCommand],
    meta: CommandMeta,
    key: str | None,
    *,
    aggregate_id: UUID,
) -> Outcome:
    named = meta.expected_version
    command_id = command_id_for(meta.actor.id, key) if key else None
    if command_id is not None:
        meta = meta.model_copy(update={"command_id": command_id})
    for attempt in range(IDEMPOTENT_ATTEMPTS):
        if attempt:  # another process wrote first: spread out before deciding again
            time.sleep(backoff(attempt, CONFLICT_PAUSE * 2, jitter="full"))
        expected = named
        if command_id is not None:
            seen = _version(care, aggregate_id)
            if (earlier := earlier_result(care, aggregate_id, command_id)) is not None:
                return Outcome(earlier, replayed=True)
            expected = named if named is not None else seen
        try:
            result = care.handle_uncounted(make(), meta.model_copy(update={"expected_version": expected}))
        except ConcurrencyConflictError:
            if command_id is not None and (earlier := earlier_result(care, aggregate_id, command_id)) is not None:
                return Outcome(earlier, replayed=True)
            if named is not None:
                raise
            continue
        return Outcome(result, replayed=False)
    msg = f"{aggregate_id} kept changing under this command; nothing was written. Send it again."
    raise ConcurrencyConflictError(msg)


def earlier_result(care: CareApplication, aggregate_id: UUID, command_id: UUID) -> CommandResult | None:
    """What the command ``command_id`` recorded on the aggregate, or None if it has not run."""
    cause = f"command:{command_id}"
    events = [e for e in care.history(aggregate_id) if e.causation_id == cause]  # none yet: empty
    if not events:
        return None
    return CommandResult(
        aggregate_id=aggregate_id,
        version=events[-1].originator_version,
        event_ids=[e.event_id for e in events],
        event_types=[type(e).__name__ for e in events],
        correlation_id=events[0].correlation_id,
    )


def _version(care: CareApplication, aggregate_id: UUID) -> int:
    try:
        return care.get_aggregate(aggregate_id).version
    except AggregateMissingError:
        return 0
