"""An empty pull fetch raises nats-py's own TimeoutError, which FastStream's pull loop expects."""

from __future__ import annotations

from pathlib import Path

import nats
import nats.errors

from services.shared import compat
from services.shared.bus import EmbeddedNats
from tests.support.bus import with_streams


async def test_empty_fetches_raise_the_documented_timeout(tmp_path: Path) -> None:
    compat.install()
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        nc = await nats.connect(server.url)
        try:
            js = nc.jetstream()
            sub = await js.pull_subscribe("care.nothing.>", durable="empty", stream="CARE")
            # FastStream's loop passes what is left of its deadline, which can be almost
            # nothing; that is where nats-py raised the bare asyncio.TimeoutError.
            for _ in range(10):
                try:
                    await sub.fetch(batch=5, timeout=0.0001)
                except Exception as e:  # noqa: BLE001 - the type is what is checked
                    assert isinstance(e, nats.errors.TimeoutError), type(e)
        finally:
            await nc.close()
