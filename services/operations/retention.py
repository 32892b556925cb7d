"""Retention (issue 16): a client's records go once the retention period has passed since
their care ended — every plan of the client completed or revoked more than
``retention_days`` ago, no plan open (draft, active, on hold) — unless a legal hold is set.

``select`` judges every client of the care store at a moment (``now``: the clock, or a
virtual time for a dry run or a test); ``run`` erases the eligible ones through the erasure
flow (services.privacy), as the actor ``retention`` in the role ``operator``, with the rule
as the reason. A client whose erasure is refused (an open crisis, a hold set meanwhile) is
reported and left for the next run. ``careplan retention run [--dry-run] [--now ISO]`` and
the daily run of ``careplan up`` call it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Literal
from uuid import UUID

from pydantic import BaseModel

from domain.base import Actor, Role
from domain.errors import DomainError
from services.shared.persistence import paged_notifications
from services.shared.settings import Settings

Verdict = Literal["eligible", "open plan", "within period", "held", "erased", "erased now", "refused"]
#: The care plan events that open and end a plan (by class name: read from the log's topics).
DRAFTED, ENDED = "CarePlanDrafted", ("CarePlanCompleted", "CarePlanRevoked")


class Judged(BaseModel):
    client_id: str
    plans: int
    #: When the client's last plan ended (None: a plan is open).
    ended_at: datetime | None
    #: When the retention period passes (None: a plan is open, or no period is set).
    due_at: datetime | None
    verdict: Verdict
    #: Why an erasure was refused (its error class and message: ids and rules only).
    detail: str | None = None


def _class_name(topic: str) -> str:
    return topic.rsplit(":", 1)[-1].rsplit(".", 1)[-1]


def plans_by_client(settings: Settings) -> dict[str, dict[UUID, datetime | None]]:
    """client → plan → when it ended (None: open), from the care store's log."""
    from services.audit.reading import Store

    store = Store(settings, "care")
    clients: dict[str, dict[UUID, datetime | None]] = {}
    plan_client: dict[UUID, str] = {}
    try:
        for notification in paged_notifications(store.recorder):
            name = _class_name(notification.topic)
            if name != DRAFTED and name not in ENDED:
                continue
            event = store.mapper.to_domain_event(notification)
            if name == DRAFTED:
                client = str(getattr(event, "client_id", ""))
                if not client:
                    continue  # content erased: the client is gone already
                plan_client[event.originator_id] = client
                clients.setdefault(client, {})[event.originator_id] = None
            elif (client := plan_client.get(event.originator_id)) is not None:
                clients[client][event.originator_id] = event.timestamp
    finally:
        store.close()
    return clients


def held_clients(settings: Settings, clients: list[str]) -> set[str]:
    """Those of ``clients`` under a legal hold (their DataSubject's, services.privacy)."""
    from services.care.application import CareApplication
    from services.privacy.erasure import held

    app = CareApplication(settings)
    try:
        return {client for client in clients if held(app, client)}
    finally:
        app.close()


def erased_clients(settings: Settings, clients: list[str]) -> set[str]:
    """Those of ``clients`` whose keys are destroyed already (the key store's tombstones)."""
    from services.shared.privacy.keys import key_store

    keys = key_store(settings)
    return {client for client in clients if keys.is_destroyed(client)}


def select(settings: Settings, now: datetime) -> list[Judged]:
    """Every client of the care store, judged at ``now``."""
    period = timedelta(days=settings.retention_days) if settings.retention_days else None
    clients = plans_by_client(settings)
    erased = erased_clients(settings, list(clients))
    held = held_clients(settings, [client for client in clients if client not in erased])
    judged = []
    for client, plans in sorted(clients.items()):
        ends = list(plans.values())
        ended_at = None if any(e is None for e in ends) else max(ends)  # type: ignore[type-var]
        due_at = ended_at + period if ended_at is not None and period is not None else None
        if client in erased:
            verdict: Verdict = "erased"
        elif ended_at is None:
            verdict = "open plan"
        elif due_at is None or due_at > now:
            verdict = "within period"
        elif client in held:
            verdict = "held"
        else:
            verdict = "eligible"
        judged.append(Judged(client_id=client, plans=len(plans), ended_at=ended_at, due_at=due_at, verdict=verdict))
    return judged


def run(settings: Settings, now: datetime, *, dry_run: bool = False,
        erase: Callable[[str, str], None] | None = None) -> list[Judged]:
    """Erases every eligible client (``dry_run``: only says which would go). ``erase(client,
    reason)`` is the erasure (default: services.privacy's, as the retention operator)."""
    judged = select(settings, now)
    if dry_run:
        return judged
    erase = erase or _erase_with(settings)
    done = []
    for j in judged:
        if j.verdict != "eligible":
            done.append(j)
            continue
        reason = (f"Retention period of {settings.retention_days} days after the end of care passed "
                  f"({j.due_at.isoformat() if j.due_at else '?'})")
        try:
            erase(j.client_id, reason)
        except DomainError as e:  # refused (an open crisis, a hold set meanwhile): reported; the others go on
            done.append(j.model_copy(update={"verdict": "refused", "detail": f"{type(e).__name__}: {e}"}))
            continue
        done.append(j.model_copy(update={"verdict": "erased now"}))
    return done


#: Who erases for age: the rule, run by the machine (no supervisor asks or confirms it).
RETENTION = Actor(id="retention", role=Role.OPERATOR)


def _erase_with(settings: Settings) -> Callable[[str, str], None]:
    from services.privacy.erasure import erase_client

    def erase(client_id: str, reason: str) -> None:
        # the NATS of a running `up` (its admin user) or CAREPLAN_NATS_URL: the client's subjects go too
        erase_client(settings, client_id, reason=reason, actor=RETENTION)

    return erase
