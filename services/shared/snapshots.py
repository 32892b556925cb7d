"""Snapshots that must agree with the hash chain (issue 13, finding 7).

A snapshot shortens a replay, so the application decides on it: an edited snapshot (a plan's
``open_crises`` emptied) would change decisions while the chain stays whole. Each snapshot is
therefore put with a digest over itself and the chain link of the event at its version
(keyed by ``CAREPLAN_CIPHER_KEY`` when there is one). On load, a snapshot whose digest does
not match, or that has none, is not used: the aggregate is rebuilt from its events and the
mismatch is logged at ERROR (``careplan.snapshots``). Someone who can write the database and
knows there is no key can recompute a digest; ``careplan audit verify`` replays the events
under each aggregate's latest snapshot and names any that disagree
(services.audit.integrity).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any
from uuid import UUID

log = logging.getLogger("careplan.snapshots")


def snapshot_key(cipher_key: str | None) -> bytes:
    return hashlib.sha256(b"careplan-snapshot:" + (cipher_key or "").encode()).digest()


def snapshot_digest(snapshot: Any, link: bytes, key: bytes) -> str:
    body = json.dumps({
        "originator_id": str(snapshot.originator_id), "originator_version": snapshot.originator_version,
        "timestamp": snapshot.timestamp.isoformat(), "aggregate_type": snapshot.aggregate_type,
        "state": snapshot.state,
    }, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hmac.new(key, link + body, hashlib.sha256).hexdigest()


def snapshot_agrees(snapshot: Any, recorder: Any, key: bytes) -> bool:
    """The snapshot's digest matches it and the chain link of the event at its version."""
    link = recorder.event_link(snapshot.originator_id, snapshot.originator_version)
    digest = getattr(snapshot, "chain_digest", None)
    return link is not None and digest is not None and hmac.compare_digest(digest, snapshot_digest(snapshot, link, key))


class CheckedSnapshots:
    """The application's snapshot store: puts snapshots with their digest, and hands out
    only snapshots that still agree with the chain."""

    def __init__(self, store: Any, recorder: Any, key: bytes) -> None:
        self.store, self.recorder, self.key = store, recorder, key

    def put(self, snapshots: Sequence[Any], **kwargs: Any) -> Any:
        signed = []
        for snapshot in snapshots:
            link = self.recorder.event_link(snapshot.originator_id, snapshot.originator_version)
            signed.append(snapshot if link is None else
                          snapshot.model_copy(update={"chain_digest": snapshot_digest(snapshot, link, self.key)}))
        return self.store.put(signed, **kwargs)

    def get(self, originator_id: UUID, **kwargs: Any) -> Iterator[Any]:
        for snapshot in self.store.get(originator_id, **kwargs):
            if snapshot_agrees(snapshot, self.recorder, self.key):
                yield snapshot
            else:
                log.error("snapshot of %s at version %d disagrees with the hash chain: not used, the aggregate is "
                          "rebuilt from its events (run `careplan audit verify`)", originator_id,
                          snapshot.originator_version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)
