"""Runs one service as a process: its durable consumer (FastStream) and its own relay."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Callable
from typing import Any
from pathlib import Path

from faststream.nats import NatsBroker

from services.shared.bus import connect, ensure_stream
from services.shared.persistence import OutboxStores
from services.shared.processing import DurableConsumer
from services.shared.relay import Relay
from services.shared.settings import Settings

log = logging.getLogger(__name__)


class RunningService:
    """A service's consumer and relay on one event loop; used by the process and by tests."""

    def __init__(
        self,
        settings: Settings,
        app: Any,
        subjects: list[str],
        *,
        name: str | None = None,
        with_relay: bool = True,
        tick: Callable[[], object] | None = None,
        tick_interval: float = 0.5,
        **consumer_options: object,
    ) -> None:
        """``app`` is a ServiceApplication, or another Tracked application (the care
        application's policies); ``with_relay`` is off where another process relays the
        application's log (the care application's relay runs on its own)."""
        if not settings.nats_url:
            msg = "A service needs a NATS server: set CAREPLAN_NATS_URL (careplan up sets it for its children)."
            raise SystemExit(msg)
        self.settings = settings
        self.app = app
        self.nats_url = settings.nats_url
        # Per-message "Received/Processed" lines at DEBUG: thousands a second would drown the log.
        self.broker = NatsBroker(
            self.nats_url.split(","), logger=logging.getLogger(f"faststream.{app.name}"), log_level=logging.DEBUG
        )
        self.name = name or app.name
        self.stores = OutboxStores(settings, app.name) if with_relay else None
        self.relay = (
            Relay(
                settings, application=app.name, nats_url=self.nats_url,
                recorder=self.stores.recorder, mapper=self.stores.mapper, tracking=self.stores.tracking,
                woken_by_writer=True,
            )
            if self.stores is not None
            else None
        )
        self.consumer = DurableConsumer(
            settings, service=self.name, app=app, subjects=subjects, handle=app.decide,
            on_recorded=self.relay.wake if self.relay is not None else lambda: None,
            **consumer_options,  # type: ignore[arg-type]
        )
        self.consumer.attach(self.broker)
        self.tick = tick
        self.tick_interval = tick_interval
        self._stop = asyncio.Event()
        self._relay_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        nc = await connect(self.nats_url, name=f"{self.name}-setup")
        try:
            await ensure_stream(nc.jetstream(), self.settings)
            await self.consumer.wait_for_previous_instance(nc.jetstream())
        finally:
            await nc.close()
        await self.broker.start()
        if self.relay is not None:
            self._relay_task = asyncio.create_task(self.relay.run(self._stop))
        if self.tick is not None:
            self._tick_task = asyncio.create_task(self._ticking(self.tick))

    async def _ticking(self, tick: Callable[[], object]) -> None:
        """Durable timers: the service's own check of what is due, at a steady interval."""
        while not self._stop.is_set():
            try:
                if await asyncio.to_thread(tick) and self.relay is not None:
                    self.relay.wake()
            except Exception as e:  # noqa: BLE001 - a failed check is tried again at the next tick
                log.warning("%s: timer check failed: %s", self.name, e)
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.tick_interval)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        await self.broker.stop()
        self._stop.set()
        if self._tick_task is not None:
            await self._tick_task
        if self._relay_task is not None:
            await self._relay_task
        if self.stores is not None:
            self.stores.close()
        self.app.close()

    async def __aenter__(self) -> RunningService:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()


def run_service_process(settings: Settings, make: Callable[[Settings], RunningService], *, ready_file: Path | None) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        service = make(settings)
        await service.start()
        log.info("service %s consuming from %s", service.name, service.nats_url)
        if ready_file is not None:
            ready_file.write_text(json.dumps({"service": service.name, "nats": service.nats_url}))
        try:
            await stop.wait()
        finally:
            await service.stop()

    asyncio.run(main())
