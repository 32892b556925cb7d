"""Compatibility between the nats-py and FastStream versions we install.

nats-py (since its fix of an orphaned lingering pull request, nats.py PR #934) raises a
bare ``asyncio.TimeoutError`` from ``PullSubscription.fetch`` when the deadline is
already spent; FastStream 0.7's pull loop catches only ``nats.errors.TimeoutError`` (a
subclass), so an empty fetch escaped and FastStream's supervisor restarted the consumer
task with growing delays: an idle service could stall for tens of seconds. Here the bare
timeout is converted into the documented one. Remove once either side changes.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import nats.errors
from nats.js.client import JetStreamContext

_PullSubscription = JetStreamContext.PullSubscription
_original_fetch = _PullSubscription.fetch


@functools.wraps(_original_fetch)
async def _fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return await _original_fetch(self, *args, **kwargs)
    except nats.errors.TimeoutError:
        raise
    except asyncio.TimeoutError as e:
        raise nats.errors.TimeoutError from e


def install() -> None:
    if getattr(_PullSubscription.fetch, "__wrapped__", None) is not _original_fetch:
        _PullSubscription.fetch = _fetch  # type: ignore[method-assign]
