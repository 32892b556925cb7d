"""``careplan api serve``: the HTTP API as a process of its own (uvicorn)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import uvicorn

from services.api.app import Api, create_app
from services.api.auth import TokenRegistry
from services.api.health import Readiness
from services.api.metrics import ScrapedFigures
from services.assessment.service import AssessmentApplication
from services.care.application import CareApplication
from services.escalation.service import EscalationApplication
from services.operations.dead_letters import DeadLetterDesk
from services.shared import tracing
from services.shared.bus import free_port
from services.shared.settings import Settings
from services.subscriptions.service import SubscriptionsApplication
from services.views.queries import Views

log = logging.getLogger(__name__)


def build(settings: Settings) -> tuple[Api, object]:
    tracing.configure("careplan-api")  # before create_app, which instruments the app when tracing is on
    escalation = EscalationApplication(settings)
    care = CareApplication(settings, crises=escalation.crisis_held_open)
    api = Api(care, TokenRegistry.load(settings.tokens_path()), escalation, AssessmentApplication(settings))
    api.dead_letters = DeadLetterDesk(settings)
    api.readiness = Readiness(settings)
    api.metrics = ScrapedFigures(settings, api)
    api.views = Views(settings)
    api.subscriptions = SubscriptionsApplication(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    api.access_log = (settings.data_dir / "api-access.log").open("a", encoding="utf-8")
    return api, create_app(api)


def app_from_environment() -> object:
    """For uvicorn's worker processes: each builds its own application from CAREPLAN_*."""
    return build(Settings())[1]


def serve(settings: Settings, *, ready_file: Path | None = None) -> None:
    if settings.api_workers > 1:
        _serve_with_workers(settings, ready_file)
        return
    api, app = build(settings)
    if not len(api.tokens):
        log.warning("no API tokens in %s: every request will be refused; make one with `careplan api add-token`",
                    settings.tokens_path())
    port = settings.api_port or free_port()
    url = f"http://{settings.api_host}:{port}"
    config = uvicorn.Config(app, host=settings.api_host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    if ready_file is not None:
        startup = server.startup

        async def startup_then_ready(*args: object, **kwargs: object) -> None:
            await startup(*args, **kwargs)  # type: ignore[arg-type]
            ready_file.write_text(json.dumps({"api": url}))

        server.startup = startup_then_ready  # type: ignore[method-assign]
    try:
        server.run()
    finally:
        api.care.close()
        if api.access_log is not None:
            api.access_log.close()
        for service in (api.escalation, api.assessment, api.dead_letters, api.readiness, api.subscriptions):
            if service is not None:
                service.close()


def _serve_with_workers(settings: Settings, ready_file: Path | None) -> None:
    """Several processes on one port (uvicorn's workers): each has its own applications and
    caches; they meet in the event store, whose optimistic concurrency keeps them honest."""
    import socket
    import threading
    import time

    port = settings.api_port or free_port()
    url = f"http://{settings.api_host}:{port}"

    def announce() -> None:
        while True:
            try:
                with socket.create_connection((settings.api_host, port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.1)
        assert ready_file is not None
        ready_file.write_text(json.dumps({"api": url}))

    if ready_file is not None:
        threading.Thread(target=announce, daemon=True).start()
    uvicorn.run("services.api.server:app_from_environment", factory=True, host=settings.api_host, port=port,
                workers=settings.api_workers, log_level="warning", access_log=False)
