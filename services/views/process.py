"""``careplan views run``: the projection as a process of `careplan up`, catching up with the
stores every ``CAREPLAN_VIEWS_POLL_INTERVAL`` seconds until SIGTERM or SIGINT."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path

from services.shared.settings import Settings
from services.views.projection import Projection

log = logging.getLogger(__name__)


def run_views_process(settings: Settings, *, ready_file: Path | None = None, stop: threading.Event | None = None) -> None:
    stop = stop if stop is not None else threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    projection = Projection(settings)
    try:
        applied = projection.catch_up()
        log.info("views caught up: %d events applied", applied)
        if ready_file is not None:
            ready_file.write_text(json.dumps({"views": str(settings.data_dir), "positions": projection.store.positions()}))
        while not stop.wait(settings.views_poll_interval):
            try:
                projection.catch_up()
            except Exception:  # a store briefly unavailable: the next round reads from the recorded positions
                log.exception("views catch-up failed; trying again")
    finally:
        projection.close()
