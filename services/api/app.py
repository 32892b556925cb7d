"""The FastAPI application: an endpoint per command, versioned reads, escalations, dead
letters, FHIR views, the auditors' reads.

The routes live in :mod:`services.api.routes` (one module per concern), what they share
(the applications, who is calling, roles, versions) in :mod:`services.api.dependencies`,
and how a command runs once per ``Idempotency-Key`` in :mod:`services.care.handling`.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.api import docs, ui
from services.api.access_log import AccessLog
from services.api.dependencies import Api, who
from services.api.door import Door
from services.api.problems import install
from services.api.routes import (
    audit,
    clients,
    commands,
    dead_letters,
    escalations,
    fhir,
    fhir_subscriptions,
    health,
    metrics,
    problems,
    reads,
    subscriptions,
    views,
)
from services.api.watchdog import lifespan
from services.shared import tracing

__all__ = ["Api", "create_app"]


def create_app(api: Api) -> FastAPI:
    app = FastAPI(
        title="careplan",
        version="1",
        description="Care plans, therapy courses and interpersonal inventories as commands and versioned reads. "
        "Errors are RFC 9457 problem details; every write is an event with who, when and why.",
        responses={401: {"description": "No valid token"}, 403: {"description": "Role or client not allowed"}},
        lifespan=lifespan(api),  # the risk-signal watchdog (services/api/watchdog.py)
        docs_url=None, redoc_url=None,  # served from the package by services.api.docs (offline)
    )
    install(app)
    app.state.api = api
    Who = who(api)

    # The application's own router, not included APIRouters: FastAPI (0.165) keeps an included
    # router behind one entry of app.routes, and the routes are listed in this order.
    router = app.router
    for collection in commands.COLLECTIONS:
        commands.include(router, api, collection, Who)
        reads.include(router, api, collection, Who)
    escalations.include(router, api, Who)
    if api.dead_letters is not None:
        dead_letters.include(router, api, Who)
    if api.views is not None:
        views.include(router, api, Who)
    if api.subscriptions is not None:
        subscriptions.include(router, api, Who)
    fhir.include(router, api, Who)
    if api.subscriptions is not None:
        fhir_subscriptions.include(router, api, Who)
    audit.include(router, api, Who)
    clients.include(router, api, Who)  # holds and erasure (issue 16)
    problems.include(router)
    health.include(router, api)
    metrics.include(router, api)
    docs.install(app)
    ui.install(app, api)  # the web pages under /ui/ (a mounted application, not in the OpenAPI document)
    tracing.instrument_app(app)  # a server span per request, while tracing is on
    # Outside every other middleware, routing and authentication: the access log (a refused
    # body's 413 is logged like any answer), the body limit, the HTTP figures, as one.
    log = AccessLog(api.access_log) if api.access_log is not None else None
    app.add_middleware(Door, limit=api.care.settings.api_max_body_bytes, log=log)  # type: ignore[arg-type]
    return app
