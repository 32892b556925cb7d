"""Retrying by one set of rules: which answers are worth another try, how long to wait
before it (doubling, with jitter), and what a receiver's ``Retry-After`` asks.

Used by the subscriptions' delivery engine (retries for a day), the escalation's channels
(a few quick tries, then the next level) and the care application's conflicting writers
(a few tries within a request): their numbers differ, their rules do not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

#: Answers that may pass on their own: a request timeout, too many requests (honour its
#: ``Retry-After``) and every server error. Any other 4xx (or a redirect) is the receiver's
#: decision, and asking again changes nothing.
RETRYABLE_STATUS = frozenset({408, 429})


def worth_retrying(status: int | None) -> bool:
    """Whether another try may help: no answer at all (timeout, refused connection),
    408, 429 or a 5xx."""
    return status is None or status >= 500 or status in RETRYABLE_STATUS


def backoff(attempt: int, base: float, cap: float = float("inf"), *, jitter: Literal["equal", "full"] = "equal",
            rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempt``-th failure (1 = the first): ``base`` doubled
    per failure up to ``cap``; with ``equal`` jitter the second half random (waits spread
    out, but never near zero), with ``full`` jitter all of it."""
    ceiling = min(cap, base * 2 ** min(max(attempt - 1, 0), 30))
    if jitter == "full":
        return rng() * ceiling
    return ceiling / 2 + rng() * ceiling / 2


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """``Retry-After``: delay-seconds or an HTTP date (None: absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)  # delay-seconds (a fraction accepted)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - (now or datetime.now(UTC))).total_seconds())
