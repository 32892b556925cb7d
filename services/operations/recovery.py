"""Bringing a restored (or reset) store back in line with what was published from it.

A store restored from a backup ends earlier than what its relay published: the events
after the backup are on the stream (and their effects in every service) but not in the
store, and new events written there would reuse positions, and event ids, that consumers
have already seen. The relay halts on that, and a consumer whose own store went back
behind what it acknowledged halts too. ``careplan store recover`` then:

1. finds where the store and the stream agree (``agree_until``);
2. takes the events the stream holds after that point back into the store at their
   original positions (the stream carries every event whole: its contract JSON), so the
   store holds again everything that was published, with the same hash-chain links;
3. moves events written to the store after the restore, never published, to positions
   after the stream's last one (refusing, unless told to discard them, when one of them
   collides with a taken-back event: the same aggregate at the same version);
4. records the relay's position at the stream's last one, so it publishes only those;
5. for each consumer that records its positions in this store and is behind what it
   acknowledged, deletes its durable consumer: recreated by the service, it hands out the
   stream again and the messages after the store's recorded position are decided again
   (what was decided already, being back in the store, is recognised and not repeated).

The relay and the halted consumers notice within seconds and go on; a restart of the
services rebuilds their timers from the mended store.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent, Tracking

from contracts.subjects import aggregate_token, ce_type, context_of_application, event_token
from domain.base import TEXT_MAX, DomainEvent, quote
from domain.events import public_event_classes
from services.registry import SERVICES, STORES
from services.shared.persistence import OutboxStores
from services.shared.relay import OnStream, SourceOnStream
from services.shared.settings import Settings
from services.shared.tracking import stream_tracking_name

#: The consumers that record their positions in each store.
STORE_CONSUMERS: dict[str, tuple[str, ...]] = {
    store: tuple(s.name for s in SERVICES if s.store == store) for store in STORES
}


class RecoveryRefusedError(Exception):
    """The store cannot be mended without a decision only a person can take."""


@dataclass
class ConsumerState:
    name: str
    recorded: int
    acknowledged: int

    @property
    def behind(self) -> bool:
        return self.acknowledged > self.recorded


@dataclass
class Diagnosis:
    """Where a store stands against its relay, the stream and its consumers (positions only)."""

    store: str
    store_end: int
    relay_position: int
    stream_end: int
    agree_until: int
    #: Positions the stream holds after ``agree_until`` (to take back into the store).
    lost: list[int] = field(default_factory=list)
    #: Store positions after ``agree_until`` that differ from the stream or are not on it.
    unpublished: list[int] = field(default_factory=list)
    #: Aggregates (ids) written after the restore at a version the stream holds too.
    conflicts: list[str] = field(default_factory=list)
    consumers: list[ConsumerState] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return (not self.lost and not self.unpublished and self.relay_position <= self.store_end
                and not any(c.behind for c in self.consumers))

    def lines(self) -> list[str]:
        out = [
            f"store {self.store}: its log ends at position {self.store_end}; the relay's recorded position is "
            f"{self.relay_position}; the stream holds its events up to {self.stream_end}",
            f"the store and the stream agree up to position {self.agree_until}",
        ]
        if self.lost:
            out.append(f"{len(self.lost)} published event(s) missing from the store (positions {self.lost[0]}–{self.lost[-1]}): "
                       "taken back from the stream")
        if self.unpublished:
            out.append(f"{len(self.unpublished)} event(s) written after the restore and never published: moved after "
                       f"position {self.stream_end}")
        if self.conflicts:
            out.append(f"{len(self.conflicts)} aggregate(s) were changed after the restore at versions the stream holds "
                       f"too: {', '.join(self.conflicts[:10])}")
        for consumer in self.consumers:
            state = "BEHIND what it acknowledged" if consumer.behind else "in line"
            out.append(f"consumer {consumer.name}: recorded stream position {consumer.recorded}, acknowledged "
                       f"{consumer.acknowledged}: {state}")
        if self.healthy:
            out.append("nothing to mend")
        return out


class StoreRecovery:
    """Diagnoses and mends one application's store against the stream (``js``)."""

    def __init__(self, settings: Settings, store: str, js: Any) -> None:
        context_of_application(store)  # a known application
        self.settings, self.store, self.js = settings, store, js
        self.stores = OutboxStores(settings, store)
        self.source = SourceOnStream(js, settings.stream_name, store)
        self._classes = {
            ce_type(cls, context=context_of_application(store)): cls
            for group in public_event_classes().values() for cls in group
        }

    def close(self) -> None:
        self.stores.close()

    async def diagnose(self) -> tuple[Diagnosis, list[OnStream]]:
        recorder = self.stores.recorder
        store_end = recorder.max_notification_id() or 0
        relay_position = self.stores.tracking.max_tracking_id(self.store) or 0
        last = await self.source.last()
        stream_end = last.position if last is not None else 0
        agree_until = await self._agree_until(min(store_end, stream_end))
        tail = [m async for m in self.source.after(agree_until, last)] if last is not None else []
        unpublished = [n.id for n in _notifications(recorder, agree_until)]
        taken_back = {(UUID(json.loads(m.body)["originator_id"]), json.loads(m.body)["originator_version"]) for m in tail}
        written = {(n.originator_id, n.originator_version) for n in _notifications(recorder, agree_until)}
        conflicts = sorted({str(aggregate) for aggregate, _ in taken_back & written})
        diagnosis = Diagnosis(
            store=self.store, store_end=store_end, relay_position=relay_position, stream_end=stream_end,
            agree_until=agree_until, lost=[m.position for m in tail], unpublished=unpublished, conflicts=conflicts,
            consumers=[await self._consumer(name) for name in await self._durables()],
        )
        return diagnosis, tail

    async def _durables(self) -> list[str]:
        """The durables whose positions live in this store: each service's own and, when it
        runs partitioned, each partition's (services/shared/partitions.py)."""
        from services.shared.partitions import partition_durables

        found = []
        for service in STORE_CONSUMERS.get(self.store, ()):
            found.append(service)
            partitions = await partition_durables(self.js, self.settings.stream_name, service,
                                                  self.settings.consumer_partitions)
            found.extend(f"{service}-p{k}" for k in sorted(partitions))
        return found

    async def _agree_until(self, limit: int) -> int:
        """The last position up to which the store and the stream hold the same events (a
        restored store is a prefix of what was published, then differs)."""
        low, high = 0, limit
        while low < high:
            middle = (low + high + 1) // 2
            if await self._agrees_at(middle):
                low = middle
            else:
                high = middle - 1
        return low

    async def _agrees_at(self, position: int) -> bool:
        found = self.stores.recorder.select_notifications(start=position, limit=1)
        on_stream = [m async for m in _first(self.source.after(position - 1))]
        if not found or not on_stream:
            return not found and not on_stream
        notification, message = found[0], on_stream[0]
        if notification.id != message.position:
            return False
        event = self.stores.mapper.to_public_json(notification)
        # an event erased since it was published (issue 16) keeps its id, not its body
        return event.event_id == message.event_id and (event.event_class.erased or event.body == message.body)

    async def _consumer(self, name: str) -> ConsumerState:
        from eventsourcing.persistence import InfrastructureFactory
        from eventsourcing.utils import Environment

        from services.shared.persistence import eventsourcing_env

        factory = InfrastructureFactory.construct(Environment(self.store, eventsourcing_env(self.settings, self.store)))
        try:
            tracking = factory.process_recorder()
            recorded = tracking.max_tracking_id(stream_tracking_name(self.settings.stream_name, name)) or 0
        finally:
            factory.close()
        try:
            info = await self.js.consumer_info(self.settings.stream_name, name)
            acknowledged = info.ack_floor.stream_seq if info.ack_floor is not None else 0
        except Exception:  # noqa: BLE001 - no durable: nothing acknowledged
            acknowledged = 0
        return ConsumerState(name, recorded, acknowledged)

    async def recover(self, *, discard_unpublished: bool = False) -> Diagnosis:
        """Mends the store as the module says; returns what was found. Refuses (nothing
        changed) when events written after the restore collide with published ones, unless
        ``discard_unpublished``: then those unpublished events are dropped."""
        diagnosis, tail = await self.diagnose()
        if diagnosis.healthy:
            return diagnosis
        if diagnosis.conflicts and not discard_unpublished:
            msg = (f"{len(diagnosis.conflicts)} aggregate(s) were changed after the restore at versions the stream already "
                   "holds; their unpublished events cannot all be kept. Nothing was changed. Run again with "
                   "--discard-unpublished to drop the events written after the restore (they were never published; "
                   "enter them again afterwards).")
            raise RecoveryRefusedError(msg)
        if diagnosis.relay_position > max(diagnosis.stream_end, diagnosis.store_end):
            msg = (f"the relay's recorded position {diagnosis.relay_position} is beyond both the store and the stream: the "
                   "stream itself lost events. Nothing was changed; see docs/operations.md (stream reset).")
            raise RecoveryRefusedError(msg)
        recorder = self.stores.recorder
        mapper = self.stores.mapper
        taken_back = [(m.position, mapper.to_stored_event(self._event(m))) for m in tail]
        end = max([diagnosis.stream_end, diagnosis.agree_until, *(p for p, _ in taken_back)])
        kept: list[tuple[int, StoredEvent]] = []
        touched: set[UUID] = {UUID(str(e.originator_id)) for _, e in taken_back}
        if not discard_unpublished:
            for offset, notification in enumerate(_notifications(recorder, diagnosis.agree_until), start=1):
                event = StoredEvent(notification.originator_id, notification.originator_version, notification.topic,
                                    notification.state)
                kept.append((end + offset, event))
        touched |= {UUID(str(n.originator_id)) for n in _notifications(recorder, diagnosis.agree_until)}
        recorder.rewrite_tail(diagnosis.agree_until, [*taken_back, *kept], snapshots_of=touched)
        if end > diagnosis.relay_position:
            self.stores.tracking.insert_tracking(Tracking(self.store, end))
        for consumer in diagnosis.consumers:
            if consumer.behind:
                await self.js.delete_consumer(self.settings.stream_name, consumer.name)
        return diagnosis

    def _event(self, message: OnStream) -> DomainEvent:
        cls = self._classes.get(message.headers.get("ce-type", ""))
        if cls is None:
            msg = f"stream message {message.stream_sequence} is of a type this version does not know"
            raise RecoveryRefusedError(msg)
        body = json.loads(message.body)
        return cls.model_validate({k: v for k, v in body.items() if k in cls.model_fields})


def _notifications(recorder: Any, after: int) -> list[Any]:
    found: list[Any] = []
    start = after + 1
    while batch := recorder.select_notifications(start=start, limit=1000):
        found.extend(batch)
        start = batch[-1].id + 1
    return found


async def _first(messages: Any) -> Any:
    async for message in messages:
        yield message
        return


async def park(settings: Settings, consumer: str, stream_sequence: int, js: Any, *, reason: str) -> Any:
    """Records the message at ``stream_sequence`` as a dead letter of ``consumer`` (an
    operator's decision, e.g. a forged message a consumer halted on), with the consumer's
    stream position past it, so the halted consumer goes on. A message that may carry a
    risk signal is flagged, and the escalation service raises a fail-safe crisis for it."""
    from services.assessment.service import AssessmentApplication
    from services.care.application import CareApplication
    from services.escalation.service import EscalationApplication
    from services.operations.dead_letters import StoreDesk, operator
    from services.shared.cloudevents import Inbound, MalformedMessageError, parse_inbound
    from services.shared.diagnostics import ErrorSummary
    from services.shared.partitions import durable_of, partition_durables
    from services.shared.tracking import FailedMessage, partition_of

    service, partition = durable_of(consumer)
    store = next((s for s, consumers in STORE_CONSUMERS.items() if service in consumers), None)
    if store is None:
        msg = f"{consumer!r} is not a careplan consumer ({', '.join(c for cs in STORE_CONSUMERS.values() for c in cs)})"
        raise RecoveryRefusedError(msg)
    if not reason.strip():
        raise RecoveryRefusedError("Say why the message is set aside (--reason).")
    raw = await js.get_msg(settings.stream_name, seq=stream_sequence, direct=True)
    partitions = await partition_durables(js, settings.stream_name, service, settings.consumer_partitions)
    if partitions:
        # Partitioned: the position to move is that of the partition deciding the message
        # (the one that halted on it); moving another's would skip its own messages.
        count = max(max(partitions) + 1, settings.consumer_partitions)
        owner = partition_of(raw.subject, count)
        if owner is None or (partition is not None and partition != owner):
            msg = (f"stream message {stream_sequence} is decided by partition {owner} of {service}, not by {consumer}: "
                   "nothing was changed")
            raise RecoveryRefusedError(msg)
        consumer = f"{service}-p{owner}"
    try:
        parsed = parse_inbound(raw.subject, raw.headers, raw.data or b"", stream_sequence)
    except MalformedMessageError:
        parsed = None
    inbound = parsed if isinstance(parsed, Inbound) else None
    failed = FailedMessage.of(raw.subject, stream_sequence, raw.headers, inbound)
    kinds = (AssessmentApplication.risk_signals | EscalationApplication.risk_signals | CareApplication.risk_signals)
    risk = failed.event_type in {f"{aggregate_token(k)}.{event_token(k)}" for k in kinds}
    desk = StoreDesk(settings, store)
    desk.actor = operator()  # type: ignore[misc]
    try:
        tracking = desk.process_recorder.max_tracking_id(stream_tracking_name(settings.stream_name, consumer)) or 0
        trackings = [Tracking(stream_tracking_name(settings.stream_name, consumer), stream_sequence)] \
            if stream_sequence > tracking else []
        # the dead letter is the service's (its redrive is decided by whichever partition holds it)
        return desk.record_dead_letter(service, failed, ErrorSummary("SetAsideByOperator"), 0, risk, trackings,
                                       reason=quote(reason.strip(), TEXT_MAX))
    finally:
        desk.close()
