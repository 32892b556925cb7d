"""Reactions without NATS: a domain event becomes the message a relay would publish for
it (the real wire encoding and the consumer's real decoding), and a service decides it
on its own (temporary) store, in one transaction as the consumer would record it.

    scored = event_of(AssessmentScored, plan_id=..., total=21, ...)
    crises = decide(escalation_app, scored)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from contracts.subjects import application_of_context, context_of
from domain.base import Actor, AggregateRoot, DomainEvent, Role
from services.shared.cloudevents import Inbound, cloudevent, parse_inbound
from services.shared.persistence import PublicEvent
from services.shared.tracking import Tracked
from tests.conftest import T0

E = TypeVar("E", bound=DomainEvent)

SOMEONE = Actor(id="clinician-17", role=Role.CLINICIAN)


def event_of(cls: type[E], *, originator_id: UUID | None = None, version: int = 1, at: datetime = T0,
             actor: Actor = SOMEONE, correlation_id: UUID | None = None, **fields: Any) -> E:
    """An event of ``cls`` with its envelope filled in (the fields of the event are given)."""
    return cls(originator_id=originator_id or uuid4(), originator_version=version, timestamp=at, actor=actor,
               correlation_id=correlation_id or uuid4(), **fields)


def inbound_of(event: DomainEvent, *, application: str | None = None, position: int = 1,
               stream_sequence: int = 0) -> Inbound:
    """What a consumer reads for ``event`` published by ``application`` (by default the one
    publishing in the event's context) at ``position`` of its log."""
    cls = type(event)
    if application is None:
        application = application_of_context(context_of(cls))
        assert application is not None, f"no application publishes {cls.__name__}"
    body = event.model_dump_json().encode()
    notification = Notification(id=position, originator_id=event.originator_id,
                                originator_version=event.originator_version, topic=get_topic(cls), state=body)
    fields = json.loads(body)
    public = PublicEvent(cls, body, str(event.event_id), fields["timestamp"], fields["correlation_id"])
    message = cloudevent(application, notification, public, previous=position - 1)
    parsed = parse_inbound(message.subject, message.headers, message.body, stream_sequence)
    assert isinstance(parsed, Inbound)
    return parsed


def decide(app: Tracked, *events: DomainEvent | Inbound, application: str | None = None) -> list[AggregateRoot]:
    """Decides each event's message in order and records what changed, in one transaction
    (as the consumer records a run); returns the changed aggregates, as decided."""
    decided: list[AggregateRoot] = []

    def handle(inbound: Inbound) -> Sequence[AggregateRoot]:
        changed = app.decide(inbound)
        decided.extend(changed)
        return changed

    messages = [e if isinstance(e, Inbound) else inbound_of(e, application=application, position=i + 1)
                for i, e in enumerate(events)]
    app.record_run(handle, messages, [])
    return decided
