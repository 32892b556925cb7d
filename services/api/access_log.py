"""The access log: every request, allowed or refused, as one JSON line: who (the token's
actor, or nobody), the method and path, the status, when. The body is not logged (it may
hold health details); the events record what was changed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request

from services.api.auth import Principal
from services.api.dependencies import Api


def install(app: FastAPI, api: Api) -> None:
    """Log every request of ``app`` to ``api.access_log`` (a text file, flushed line by line)."""
    lock = threading.Lock()

    @app.middleware("http")
    async def log_access(request: Request, call_next: Callable[..., Any]) -> Any:
        started = time.time()
        response = await call_next(request)
        principal: Principal | None = getattr(request.state, "principal", None)  # None: refused or public
        line = json.dumps({
            "at": datetime.fromtimestamp(started).astimezone().isoformat(),
            "actor": principal.actor_id if principal else None,
            "role": principal.role.value if principal else None,
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query or None,
            "status": response.status_code,
            "ms": round((time.time() - started) * 1000, 1),
        })
        with lock:
            api.access_log.write(line + "\n")
            api.access_log.flush()
        return response
