"""The clock is injected, so tests run in virtual time and the domain never reads one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(tz=UTC)


class MonotonicClock:
    """Wraps a clock so successive readings never go backwards (wall clocks can), which
    keeps recorded timestamps ordered for point-in-time reads."""

    def __init__(self, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._last: datetime | None = None

    def __call__(self) -> datetime:
        now = self._clock()
        if self._last is not None and now <= self._last:
            now = self._last + timedelta(microseconds=1)
        self._last = now
        return now


class ManualClock:
    """A clock for tests and demos: it moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now
