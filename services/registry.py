"""The system, declared once: every service, the store it writes, its reactions, its timers,
its NATS user; every store and relay; the processes `careplan up` runs.

Everything that lists services derives from here: the CLI's ``careplan service NAME``,
`careplan up`'s processes, the NATS users (``services.nats_auth``) and the
generated ``deploy/nats/permissions.conf``, the stores ``careplan audit verify`` covers.
Adding a service is a folder (its application with its reaction table) and one entry
in :data:`SERVICES`; ``tests/unit/test_registry.py`` proves that each is started by
`careplan up`, verified by audit and has NATS permissions.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import TYPE_CHECKING, Any

from contracts.subjects import APPLICATION_CONTEXTS

if TYPE_CHECKING:
    from services.shared.reactions import Reactions
    from services.shared.runner import RunningService
    from services.shared.settings import Settings


@dataclass(frozen=True)
class Service:
    """One consumer of the stream: ``careplan service <name>``, durable consumer ``<name>``."""

    name: str
    #: The application it runs (``module:Class``, imported when needed, so that listing the
    #: system stays cheap): it declares its reactions (and, with ``fire_due_timers``,
    #: durable timers).
    application_path: str
    #: The store it writes (its application's ``name``; checked by the tests).
    store: str
    #: One line for people (the permissions file's comments, the docs).
    summary: str
    #: Whether its process also publishes its store (the care application's store is
    #: published by a relay process of its own, since the API writes it too).
    relays: bool = True
    #: Why its consumer cannot be partitioned (None: it can): such a service runs further
    #: instances as standbys (the durable's lease), and refuses ``CAREPLAN_CONSUMER_PARTITIONS``.
    unpartitioned: str | None = None

    @property
    def application(self) -> type[Any]:
        module, _, cls = self.application_path.partition(":")
        return getattr(import_module(module), cls)  # type: ignore[no-any-return]

    @property
    def reactions(self) -> Reactions[Any]:
        return self.application.reactions  # type: ignore[no-any-return]

    @property
    def subjects(self) -> list[str]:
        return self.reactions.subjects

    @property
    def has_timers(self) -> bool:
        return hasattr(self.application, "fire_due_timers")

    @property
    def process(self) -> str:
        return f"service:{self.name}"

    @property
    def nats_user(self) -> str:
        return self.name.replace("-", "_")

    def running(self, settings: Settings, app: Any | None = None, **options: Any) -> RunningService:
        """The service's consumer (and relay) for ``settings``: what its process runs."""
        from services.shared.runner import RunningService

        app = app if app is not None else self.application(settings)
        if self.has_timers:
            options = {"tick": app.fire_due_timers, "tick_interval": settings.timer_tick_seconds, **options}
        if hasattr(app, "run_background"):
            options = {"background": app.run_background, **options}
        if settings.consumer_partitions > 1:
            from services.shared.partitions import PartitionedService
            from services.shared.runner import PartitionsRefusedError

            if self.unpartitioned is not None:
                msg = (f"{self.name} cannot run with CAREPLAN_CONSUMER_PARTITIONS={settings.consumer_partitions}: "
                       f"{self.unpartitioned}; unset it (further instances wait as standbys; docs/operations.md, Positions)")
                raise PartitionsRefusedError(msg)

            return PartitionedService(settings, app, self.subjects, name=self.name, with_relay=self.relays,
                                      partitions=settings.consumer_partitions, **options)
        return RunningService(settings, app, self.subjects, name=self.name, with_relay=self.relays, **options)


#: Every service, in the order `careplan up` starts them.
SERVICES: tuple[Service, ...] = (
    Service("care-policies", "services.care.application:CareApplication", "care",
            "the care application reacting to crises (risk, emergency support)", relays=False),
    Service("assessment", "services.assessment.service:AssessmentApplication", "assessment", "scores questionnaires"),
    Service("escalation", "services.escalation.service:EscalationApplication", "escalation",
            "raises crises and escalates them until acknowledged"),
    Service("scheduling", "services.scheduling.service:SchedulingApplication", "scheduling",
            "plans sessions and marks them missed"),
    Service("subscriptions", "services.subscriptions.service:SubscriptionsApplication", "subscriptions",
            "numbers the events each subscription matches and delivers them over HTTP, signed",
            unpartitioned=("each subscription's feed numbers the events of all its clients' aggregates in one "
                           "sequence, in stream order, and an event that does not name its client is attributed "
                           "through a link noted from another aggregate's earlier event: both need the stream's "
                           "order across aggregates, which partitions give up")),
)
SERVICE_NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)


def service(name: str) -> Service:
    for found in SERVICES:
        if found.name == name:
            return found
    msg = f"{name!r} is not a careplan service ({', '.join(SERVICE_NAMES)})"
    raise ValueError(msg)


#: Every event store, each published by exactly one process (its service's, or its relay).
STORES: tuple[str, ...] = tuple(dict.fromkeys(s.store for s in SERVICES))
#: Stores published by a relay process of their own.
RELAYED_STORES: tuple[str, ...] = tuple(
    store for store in STORES if not any(s.relays and s.store == store for s in SERVICES)
)


@dataclass(frozen=True)
class Process:
    """One process of `careplan up`: ``careplan <args>``, as NATS user ``nats_user``."""

    name: str
    args: tuple[str, ...]
    nats_user: str | None


def relay_process(store: str) -> Process:
    return Process(f"relay:{store}", ("relay",) if store == "care" else ("relay", store), f"relay_{store}")


#: `careplan up`'s processes, in start order (stopped in reverse).
PROCESSES: tuple[Process, ...] = (
    *(relay_process(store) for store in RELAYED_STORES),
    *(Process(s.process, ("service", s.name), s.nats_user) for s in SERVICES),
    # The read models (services/views): reads the stores, writes views.sqlite, needs no NATS.
    Process("views", ("views", "run"), None),
    Process("api", ("api", "serve"), None),
)


def check() -> None:
    """The registry agrees with the contracts: every store publishes in a context of its own."""
    unknown = [store for store in STORES if store not in APPLICATION_CONTEXTS]
    if unknown:
        msg = f"stores with no context in contracts.subjects.APPLICATION_CONTEXTS: {', '.join(unknown)}"
        raise ValueError(msg)
    if any(store != "care" for store in RELAYED_STORES):
        msg = "`careplan relay` publishes the care store only"
        raise ValueError(msg)


check()
