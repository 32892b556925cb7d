"""Durable timers, as escalation (acknowledgement deadlines) and scheduling (missed slots)
use them.

The durable part is the events: each service rebuilds its due times from its own store at
start (and after a recovery), arms one whenever a decision sets a deadline, and checks
them every ``timer_tick_seconds`` (the runner's tick). Firing a timer is a decision on the
aggregate it names, recorded like any other; the aggregate then says when it is next due
(or that it is not), so a timer that fires after a crash, or twice, changes nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import NamedTuple
from uuid import UUID


class Fired(NamedTuple):
    """What firing one timer did: whether it recorded anything, and when the timer is next
    due (None: disarmed)."""

    recorded: bool
    next_due: datetime | None


class Timers:
    """Aggregate id → when it is next due."""

    def __init__(self) -> None:
        self._due: dict[UUID, datetime] = {}

    def arm(self, key: UUID, due: datetime | None) -> None:
        """Sets (or, with None, clears) the timer of ``key``."""
        if due is None:
            self._due.pop(key, None)
        else:
            self._due[key] = due

    def disarm(self, key: UUID) -> None:
        self._due.pop(key, None)

    def clear(self) -> None:
        self._due.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._due

    def __len__(self) -> int:
        return len(self._due)

    def __iter__(self) -> Iterator[UUID]:
        return iter(self._due)

    def due(self, key: UUID) -> datetime | None:
        return self._due.get(key)

    def fire(self, until: datetime, fire_one: Callable[[UUID], Fired]) -> int:
        """Fires every timer due at or before ``until``, earliest first; returns how many
        recorded something. ``fire_one`` decides (and records) one and says what's next."""
        recorded = 0
        for key, due in sorted(self._due.items(), key=lambda item: item[1]):
            if due > until:
                break
            outcome = fire_one(key)
            recorded += outcome.recorded
            self.arm(key, outcome.next_due)
        return recorded
