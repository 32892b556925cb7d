"""Real NATS for tests: servers on free ports, reading a whole stream back, running the
relay in-process or as a process that can be killed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.shared.bus import EmbeddedNats, apply_streams_at
from services.shared.persistence import OutboxStores
from services.shared.relay import Relay
from services.shared.settings import Settings


def create_streams(url: str, settings: Settings | None = None) -> None:
    """What `careplan up` does before it starts its processes: the streams, created with the
    test's stream settings (relays and services only check them, and wait while they are
    missing). ``url`` with the admin user's credentials when the server has users."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:  # works from inside a running event loop too
        pool.submit(asyncio.run, apply_streams_at(url, settings or Settings())).result()


def with_streams(server: EmbeddedNats, settings: Settings | None = None) -> EmbeddedNats:
    """``server``, with the streams created (:func:`create_streams`)."""
    create_streams(server.url, settings)
    return server


@dataclass(frozen=True)
class StreamMessage:
    seq: int
    subject: str
    headers: dict[str, str]
    body: bytes


async def read_stream(url: str, stream: str = "CARE", subject: str = "care.>") -> list[StreamMessage]:
    """Every message of the stream, in stream order, through an ephemeral pull consumer."""
    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        if info.state.messages == 0:
            return []
        sub = await js.pull_subscribe(
            subject, durable=None, stream=stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=30),
        )
        # The stream also holds the relays' watermarks (outside care.>): count what matches.
        total = (await sub.consumer_info()).num_pending
        out: list[StreamMessage] = []
        while len(out) < total:
            for msg in await sub.fetch(batch=min(1000, total - len(out)), timeout=10):
                out.append(StreamMessage(msg.metadata.sequence.stream, msg.subject, dict(msg.headers or {}), msg.data))
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


def settings_env(settings: Settings, nats_url: str) -> dict[str, str]:
    """The environment that gives a child process these settings."""
    return {**os.environ, **settings.as_environment(), "CAREPLAN_NATS_URL": nats_url}


def start_relay_process(settings: Settings, nats_url: str, log: Path, ready_file: Path | None = None) -> subprocess.Popen[bytes]:
    extra = ["--ready-file", str(ready_file)] if ready_file is not None else []
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "relay", *extra], env=settings_env(settings, nats_url), stdout=out, stderr=out
        )


class InProcessRelay:
    """The relay as a task of the test's own event loop."""

    def __init__(self, settings: Settings, nats_url: str) -> None:
        self.stores = OutboxStores(settings, "care")
        self.relay = Relay(
            settings, application="care", nats_url=nats_url,
            recorder=self.stores.recorder, mapper=self.stores.mapper, tracking=self.stores.tracking,
        )
        self.stop = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> InProcessRelay:
        self.task = asyncio.create_task(self.relay.run(self.stop))
        return self

    async def wait_position(self, notification_id: int, timeout: float = 60) -> None:
        async def reached() -> None:
            while self.relay.stats.position < notification_id:
                assert self.task is not None and not self.task.done(), "relay task ended"
                await asyncio.sleep(0.02)

        await asyncio.wait_for(reached(), timeout)

    async def __aexit__(self, *_: object) -> None:
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
        self.stores.close()


class TrackedPosition:
    """Reads the relay's recorded position, as another process sees it."""

    def __init__(self, settings: Settings) -> None:
        self.stores = OutboxStores(settings, "care")

    def __call__(self) -> int:
        return self.stores.tracking.max_tracking_id("care") or 0

    def close(self) -> None:
        self.stores.close()
