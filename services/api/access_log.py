"""The access log: every request, allowed or refused, as one JSON line: who (the token's
actor, or nobody), the method and path, the status, when. The body is not logged (it may
hold health details); the events record what was changed.

Written by :class:`services.api.door.Door` once the answer is sent, a line at a time and
flushed (a line is on disk, as far as the file system goes, before the next request's)."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import Any

from services.api.auth import Principal


class AccessLog:
    """Lines to a text file (``api.access_log``); a lock, for the applications that write
    from more than one thread (the tests' clients)."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self._lock = threading.Lock()

    def write(
        self, principal: Principal | None, method: str, path: str, query: bytes, status: int, started_at: float
    ) -> None:
        """``principal``: None when refused or public; ``path`` as the request named it."""
        line = json.dumps(
            {
                "at": datetime.fromtimestamp(started_at).astimezone().isoformat(),
                "actor": principal.actor_id if principal else None,
                "role": principal.role.value if principal else None,
                "method": method,
                # as Starlette's request.url.path shows it
                "path": path.replace("?", "%3F").replace("#", "%23").replace("\\", "%5C"),
                "query": query.decode("latin-1") or None,
                "status": status,
                "ms": round((time.time() - started_at) * 1000, 1),
            }
        )
        with self._lock:
            self.file.write(line + "\n")
            self.file.flush()
