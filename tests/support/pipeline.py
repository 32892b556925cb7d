"""The whole system without NATS, for fast tests of the reactions and the safety paths.

Each application's notification log becomes the very messages its relay would publish
(``cloudevents.cloudevent``), appended to an in-memory stream with the relays' watermarks;
each service's :class:`DurableConsumer` is handed the stream messages its subjects match,
through the same code path as on NATS (positions, runs, retries, dead letters, fail-safe).
Only the transport is missing: ``pump()`` moves everything until nothing moves any more.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any
from uuid import UUID

from contracts.subjects import subject_for, watermark_subject
from domain.base import DomainEvent
from services.assessment.service import SUBJECTS as ASSESSMENT_SUBJECTS
from services.assessment.service import AssessmentApplication
from services.care import policies
from services.care.application import CareApplication
from services.escalation.service import SUBJECTS as ESCALATION_SUBJECTS
from services.escalation.service import EscalationApplication
from services.scheduling.service import SUBJECTS as SCHEDULING_SUBJECTS
from services.scheduling.service import SchedulingApplication
from services.shared.clock import Clock
from services.shared.cloudevents import Inbound, cloudevent, parse_inbound
from services.shared.consumer import DurableConsumer
from services.shared.tracking import Tracked
from services.shared.settings import Settings


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` the rest."""
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


@dataclass
class Message:
    """A stream message, as nats-py hands one to a consumer."""

    seq: int
    subject: str
    headers: dict[str, str]
    data: bytes

    @property
    def metadata(self) -> Any:
        return SimpleNamespace(sequence=SimpleNamespace(stream=self.seq), num_pending=0)

    @property
    def body(self) -> bytes:
        """As :class:`tests.support.bus.StreamMessage` names it."""
        return self.data


@dataclass
class Delivery:
    """One message handed to one consumer: acknowledged or not."""

    message: Message
    acked: bool = False

    subject = property(lambda self: self.message.subject)
    headers = property(lambda self: self.message.headers)
    data = property(lambda self: self.message.data)
    metadata = property(lambda self: self.message.metadata)

    async def ack(self) -> None:
        self.acked = True

    async def in_progress(self) -> None:
        pass


class StreamHistory:
    """What a service's history lookup reads from JetStream, read from the in-memory stream."""

    def __init__(self, stream: list[Message]) -> None:
        self.stream = stream

    def last(self, event_class: type[DomainEvent], aggregate_id: UUID | str) -> Inbound | None:
        subject = subject_for(event_class, aggregate_id)
        for message in reversed(self.stream):
            if message.subject == subject:
                found = parse_inbound(message.subject, message.headers, message.data, message.seq)
                return found if isinstance(found, Inbound) else None
        return None


@dataclass
class Consumer:
    name: str
    subjects: list[str]
    durable: DurableConsumer
    delivered: int = 0
    #: Stream messages not acknowledged (e.g. held by a halted consumer).
    unacked: list[Delivery] = field(default_factory=list)


class Pipeline:
    """The care application, its policies and the three services on one store backend and
    one in-memory stream. ``services``: which consumers run (all by default)."""

    def __init__(self, settings: Settings, clock: Clock, *, services: tuple[str, ...] | None = None,
                 wrap: Callable[[str, Tracked], Tracked] = lambda name, app: app) -> None:
        self.settings = settings
        self.clock = clock
        self.stream: list[Message] = []
        self.escalation = EscalationApplication(settings, clock=clock)
        self.care = CareApplication(settings, clock=clock, crises=self.escalation.crisis_held_open)
        self.assessment = AssessmentApplication(settings, clock=clock)
        self.scheduling = SchedulingApplication(settings, clock=clock)
        self.policies = CareApplication(settings, clock=clock)
        #: application name → (its store, the last position relayed)
        self.sources: dict[str, Any] = {
            "care": self.care, "assessment": self.assessment, "escalation": self.escalation, "scheduling": self.scheduling,
        }
        self.relayed: dict[str, int] = dict.fromkeys(self.sources, 0)
        #: The last watermark of each source: (position, at); a new one when either moves.
        self.watermarks: dict[str, tuple[int, Any]] = {}
        #: Sources whose relay is "down": nothing of theirs reaches the stream.
        self.held: set[str] = set()
        self._wrap = wrap
        self.consumers: dict[str, Consumer] = {}
        for name in services or ("care-policies", "assessment", "escalation", "scheduling"):
            self.start_consumer(name)

    def start_consumer(self, name: str) -> Consumer:
        """A service's consumer, from the start of the stream (as a new durable would)."""
        app, subjects = {
            "care-policies": (self.policies, policies.SUBJECTS),
            "assessment": (self.assessment, ASSESSMENT_SUBJECTS),
            "escalation": (self.escalation, ESCALATION_SUBJECTS),
            "scheduling": (self.scheduling, SCHEDULING_SUBJECTS),
        }[name]
        app = self._wrap(name, app)
        app.history = StreamHistory(self.stream)  # type: ignore[assignment]
        durable = DurableConsumer(self.settings, service=name, app=app, subjects=subjects, handle=app.decide,
                                  max_attempts=2, retry_cap=0.01)
        durable.positions = app.positions(self.settings.stream_name, name)
        self.consumers[name] = consumer = Consumer(name, subjects, durable)
        return consumer

    # ----------------------------------------------------------------- moving

    def relay(self) -> int:
        """Every application's new notifications onto the stream, as its relay would; then a
        watermark per application (caught up at this moment)."""
        moved = 0
        for name, app in self.sources.items():
            if name in self.held:
                continue
            at = self.clock()
            previous = self.relayed[name]
            for notification in app.recorder.select_notifications(start=previous + 1, limit=10_000):
                message = cloudevent(name, notification, app.mapper.to_public_json(notification), previous)
                self.publish(message.subject, message.headers, message.body)
                previous = notification.id
                moved += 1
            self.relayed[name] = previous
            if self.watermarks.get(name) != (previous, at):
                self.watermarks[name] = (previous, at)
                self.publish(watermark_subject(name), {}, json.dumps({"source": name, "position": previous,
                                                                       "at": at.isoformat()}).encode())
        return moved

    def publish(self, subject: str, headers: dict[str, str], data: bytes) -> Message:
        message = Message(len(self.stream) + 1, subject, dict(headers), data)
        self.stream.append(message)
        return message

    def deliver(self) -> int:
        """Every consumer is handed the stream messages its subjects match that it has not had."""
        moved = 0
        for consumer in self.consumers.values():
            batch = [
                Delivery(m) for m in self.stream[consumer.delivered :]
                if any(subject_matches(s, m.subject) for s in consumer.subjects)
            ]
            consumer.delivered = len(self.stream)
            if batch:
                asyncio.run(consumer.durable.process_batch(batch))  # type: ignore[arg-type]
                consumer.unacked.extend(d for d in batch if not d.acked)
                moved += len(batch)
        return moved

    def tick(self) -> int:
        return self.escalation.fire_due_timers() + self.scheduling.fire_due_timers()

    def pump(self, rounds: int = 20) -> None:
        """Relays, delivers and fires timers until nothing moves."""
        for _ in range(rounds):
            self.relay()
            moved = self.deliver() + self.tick()
            caught_up = all(self.relayed[n] == (a.recorder.max_notification_id() or 0)
                            for n, a in self.sources.items() if n not in self.held)
            if not moved and caught_up:
                return
        msg = "the pipeline kept moving after 20 rounds"
        raise AssertionError(msg)

    # ----------------------------------------------------------------- reading

    def events(self, suffix: str = "") -> Iterator[Message]:
        return (m for m in self.stream if m.subject.startswith("care.") and m.subject.endswith(suffix))

    def close(self) -> None:
        for app in (self.care, self.policies, self.assessment, self.escalation, self.scheduling):
            app.close()


def escalated(stream: list[Any], signal_event_id: str) -> bool:
    """Whether an EscalationRaised on the stream follows from the event ``signal_event_id``:
    its causation chain (and, for a fail-safe, the dead letter's failed event) leads back to it."""
    bodies = {}
    for m in stream:
        if m.subject.startswith("care."):
            try:
                body = json.loads(m.body)
            except ValueError:
                continue  # not an event (a forged or malformed message)
            if isinstance(body, dict) and "event_id" in body:
                bodies[body["event_id"]] = body
    for body in bodies.values():
        if "trigger" not in body or "severity" not in body:
            continue  # not an EscalationRaised
        seen: set[str] = set()
        frontier = [body.get("causation_id"), body.get("source_event_id")]
        while frontier:
            current = frontier.pop()
            if not current or current in seen:
                continue
            if current == signal_event_id:
                return True
            seen.add(current)
            earlier = bodies.get(current)
            if earlier is not None:
                frontier += [earlier.get("causation_id"), earlier.get("failed_event_id")]
    return False
