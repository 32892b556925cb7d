"""``careplan relay``: the care application's relay as a process of its own."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

from services.care.application import CareApplication
from services.shared import tracing
from services.shared.bus import StreamDriftError
from services.shared.health import StatusReporter, relay_status
from services.shared.persistence import OutboxStores
from services.shared.relay import Relay
from services.shared.settings import Settings

log = logging.getLogger(__name__)


def run_relay_process(settings: Settings, *, ready_file: Path | None = None) -> None:
    if not settings.nats_url:
        msg = "The relay needs a NATS server: set CAREPLAN_NATS_URL (careplan up sets it for its children)."
        raise SystemExit(msg)
    tracing.configure(f"careplan-relay-{CareApplication.name}")
    try:
        asyncio.run(_main(settings, settings.nats_url, ready_file))
    except StreamDriftError as e:
        msg = f"relay {CareApplication.name} refuses to start: {e}"
        raise SystemExit(msg) from e


async def _main(settings: Settings, nats_url: str, ready_file: Path | None) -> None:
    stores = OutboxStores(settings, CareApplication.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    relay = Relay(
        settings,
        application=CareApplication.name,
        nats_url=nats_url,
        recorder=stores.recorder,
        mapper=stores.mapper,
        tracking=stores.tracking,
    )
    task = asyncio.create_task(relay.run(stop))
    # Its status record (relay:care) goes to the status bucket every few seconds, for readiness.
    reporter = StatusReporter(nats_url, [lambda: relay_status(f"relay:{CareApplication.name}", relay.stats)],
                              replicas=settings.stream_replicas)
    reporting = asyncio.create_task(reporter.run(stop))
    try:
        if ready_file is not None:
            while relay.stats.state != "publishing" and not task.done():
                relay.stats.changed.clear()
                await asyncio.wait([asyncio.ensure_future(relay.stats.changed.wait()), task], timeout=0.5,
                                   return_when=asyncio.FIRST_COMPLETED)
            if relay.stats.state == "publishing":
                ready_file.write_text(json.dumps({"relay": CareApplication.name, "nats": nats_url}))
        await task
    finally:
        stop.set()
        await reporting
        stores.close()
