"""The one set of retry rules the subscriptions, the escalation's channels and the care
application's conflicting writers share (services/shared/retry.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.shared.retry import backoff, retry_after_seconds, worth_retrying


def test_retry_rules_answers_waits_and_retry_after() -> None:
    assert [worth_retrying(s) for s in (None, 408, 429, 500, 503)] == [True] * 5
    assert [worth_retrying(s) for s in (200, 301, 400, 401, 404, 410)] == [False] * 6
    # equal jitter: the first half fixed, the second random; doubling up to the cap
    assert [backoff(n, 1.0, rng=lambda: 0.0) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert backoff(40, 1.0, 300.0, rng=lambda: 1.0) == 300.0
    assert backoff(3, 1.0, jitter="full", rng=lambda: 0.0) == 0.0
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7", now) == 7.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_seconds("inf", now) is None and retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
