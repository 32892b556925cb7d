"""The delivery engine: every subscription's feed sent in order to its endpoint, signed
(Standard Webhooks), at least once, each attempt recorded.

One task per subscription sends one request at a time: the next numbers after those
delivered (a batch of at most the kind's ``max_batch``), or the handshake, or a heartbeat.
What to send next and what an answer means are decided synchronously from the store
(:class:`Deliveries`, in a worker thread); the task only waits and does HTTP.

An answer is classed (docs/integration.md, "Retries"): 2xx delivered; a timeout, a
refused connection, 5xx, 408 and 429 are tried again after a backoff (doubling from
``subscription_backoff_seconds`` up to ``subscription_backoff_max_seconds``, half of it
random) or after ``Retry-After`` when the receiver says so, until the failures have
lasted ``subscription_retry_hours``; any other answer (410 Gone, 401, 404, a redirect)
puts the subscription in ``error`` at once with that status as the reason. A resend
request rewinds delivery (and leaves ``error``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx

from domain.base import CommandContext
from domain.events.subscription_deliveries import AttemptKind, AttemptOutcome
from domain.subscriptions.delivery import SubscriptionDelivery
from domain.subscriptions.subscription import Subscription, SubscriptionStatus
from services.shared.alarms import SUBSCRIPTION_NOT_DELIVERING, Alarm
from services.shared.diagnostics import describe
from services.shared.health import DEGRADED
from services.shared.retry import backoff, retry_after_seconds, worth_retrying
from services.subscriptions.kinds import Notification, kind

log = logging.getLogger(__name__)

#: Seconds a task waits before it looks again when nothing is due (a resend or deletion
#: made by the API process reaches it then; this process's own writes wake it at once).
IDLE_LOOK_SECONDS = 1.0
#: A run of consecutive events is sent one request at a time, in order, and its attempts
#: recorded together (one transaction) when it ends: after this many events or seconds,
#: or at the first answer that is not a 2xx.
RUN_EVENTS = 200
RUN_SECONDS = 0.5
#: The most bytes of an answer's body read (to keep its connection alive); never kept.
DRAIN_BYTES = 64 * 1024


@dataclass(frozen=True)
class Send:
    subscription_id: UUID
    attempt_kind: AttemptKind
    first_number: int
    last_number: int
    notification: Notification
    endpoint: str
    headers: dict[str, str]
    generations: list[int]
    timeout: float


@dataclass(frozen=True)
class Run:
    """Consecutive events, one request each, to be sent in this order."""

    sends: list[Send]


@dataclass(frozen=True)
class Wait:
    """Nothing to send before ``until`` (None: until something changes)."""

    until: datetime | None = None


@dataclass(frozen=True)
class Answer:
    status_code: int | None
    latency_ms: int
    #: ``timeout``, ``connection``, ``http-503``, ... (None: a 2xx).
    error_class: str | None = None
    #: Seconds the receiver asked to wait (``Retry-After``).
    retry_after: float | None = None


def is_retryable(answer: Answer) -> bool:
    return worth_retrying(answer.status_code)


@dataclass
class Deliveries:
    """The synchronous half: what to send next, and recording what an attempt did."""

    app: Any
    rng: Callable[[], float] = field(default=random.random)

    @property
    def settings(self) -> Any:
        return self.app.settings

    def _ctx(self, delivery: SubscriptionDelivery, at: datetime) -> CommandContext:
        return CommandContext(actor=self.app.actor, at=at, correlation_id=delivery.subscription_id,
                              causation_id=None)

    def next_step(self, sid: UUID) -> Run | Send | Wait | None:
        """None: the subscription is gone or off (its task ends)."""
        subscription: Subscription | None = self.app.find(Subscription, sid)
        if subscription is None:
            return None
        delivery = self.app.delivery(sid)
        now = self.app.clock()
        if delivery is not None and delivery.sending is not None:
            # announced and never followed by its attempts' record: the engine stopped mid-run
            delivery.sending_interrupted(ctx=self._ctx(delivery, now))
            self.app.save(delivery)
            log.warning("subscription %s: a sending was interrupted (the service stopped); its attempts "
                        "may have been made unrecorded", sid)
        ends = kind(subscription.kind).ends_at(subscription.spec)
        if not subscription.off and ends is not None and ends <= now:
            subscription.delete(reason=f"its end ({ends.isoformat()}) has passed",
                                ctx=CommandContext(actor=self.app.actor, at=now, correlation_id=sid, causation_id=None))
            self.app.save(subscription)
            log.info("subscription %s is off: its end has passed", sid)
        if subscription.off:
            return None
        if delivery is None:
            return Wait()
        if subscription.resend_requests > delivery.resends_applied:
            delivery.resend(max(1, subscription.resend_from), resends_applied=subscription.resend_requests,
                            ctx=self._ctx(delivery, now))
            self.app.save(delivery)
        if delivery.status is SubscriptionStatus.ERROR:
            return Wait()
        if delivery.retry_at is not None and delivery.retry_at > now:
            return Wait(delivery.retry_at)
        the_kind = kind(subscription.kind)
        state = self.app.state(subscription)
        if delivery.status is SubscriptionStatus.REQUESTED:
            handshake = the_kind.handshake(state, now)
            if handshake is None:
                delivery.handshake_passed(ctx=self._ctx(delivery, now))
                self.app.save(delivery)
                return self.next_step(sid)
            return self._send(subscription, AttemptKind.HANDSHAKE, 0, 0, handshake, now)
        if state.events_since_start > delivery.delivered_up_to:
            batch = the_kind.max_batch
            events = self.app.numbered_events(sid, delivery.delivered_up_to, delivery.delivered_up_to + batch * RUN_EVENTS)
            events = self.app.with_focus(subscription.kind, subscription.spec, events)
            if events:
                template = self._send(subscription, AttemptKind.EVENTS, 0, 0, Notification("", b"", ""), now)
                sends = []
                for start in range(0, len(events), batch):
                    chunk = events[start:start + batch]
                    sends.append(replace(template, first_number=chunk[0].number, last_number=chunk[-1].number,
                                         notification=the_kind.notification(state, chunk)))
                return Run(sends)
        if subscription.heartbeat_seconds:
            due = (delivery.last_attempt_at or subscription.created_on) + timedelta(seconds=subscription.heartbeat_seconds)
            if due > now:
                return Wait(due)
            heartbeat = the_kind.heartbeat(state, now)
            if heartbeat is not None:
                return self._send(subscription, AttemptKind.HEARTBEAT, 0, 0, heartbeat, now)
        return Wait()

    def _send(self, subscription: Subscription, attempt_kind: AttemptKind, first: int, last: int,
              notification: Notification, now: datetime) -> Send:
        timeout = min(subscription.timeout_seconds or self.settings.subscription_timeout_seconds,
                      self.settings.subscription_timeout_seconds)
        return Send(
            subscription_id=subscription.id, attempt_kind=attempt_kind, first_number=first, last_number=last,
            notification=notification, endpoint=subscription.endpoint,
            headers=self.app.keys.unseal(subscription.sealed_headers),
            generations=subscription.secret_generations(now), timeout=timeout,
        )

    def announce(self, step: Run | Send) -> None:
        """Records that the step's requests may leave from now on (before the first does)."""
        sends = step.sends if isinstance(step, Run) else [step]
        delivery: SubscriptionDelivery = self.app.delivery(sends[0].subscription_id)
        delivery.sending_started(sends[0].attempt_kind, sends[0].first_number, sends[-1].last_number,
                                 ctx=self._ctx(delivery, self.app.clock()))
        self.app.save(delivery)

    def stopped(self, made: list[tuple[Send, Answer]], in_flight: Send | None, since: datetime) -> None:
        """The engine stops mid-run: the attempts made are recorded, and a request in flight
        as one whose outcome is unknown."""
        delivery: SubscriptionDelivery = self.app.delivery((made[0][0] if made else in_flight).subscription_id)
        for send, answer in made:
            self._attempted(delivery, send, answer)
        if in_flight is not None:
            delivery.sending_interrupted(
                ctx=self._ctx(delivery, self.app.clock()),
                sending=(in_flight.attempt_kind, in_flight.first_number, in_flight.last_number, since))
        self.app.save(delivery)

    def backoff(self, failures: int) -> float:
        """Doubling from the base up to the cap; the second half random (so receivers that
        came back are not hit by every sender at once, and the wait never collapses to 0)."""
        return backoff(failures, self.settings.subscription_backoff_seconds,
                       self.settings.subscription_backoff_max_seconds, rng=self.rng)

    def record(self, send: Send, answer: Answer) -> AttemptOutcome:
        return self.record_all([(send, answer)])[-1]

    def record_all(self, attempts: list[tuple[Send, Answer]]) -> list[AttemptOutcome]:
        """Attempts of one subscription, in the order made, as events in one transaction."""
        delivery: SubscriptionDelivery = self.app.delivery(attempts[0][0].subscription_id)
        outcomes = [self._attempted(delivery, send, answer) for send, answer in attempts]
        self.app.save(delivery)
        return outcomes

    def _attempted(self, delivery: SubscriptionDelivery, send: Send, answer: Answer) -> AttemptOutcome:
        """The attempt as an event; ``error`` when it failed for good."""
        now = self.app.clock()
        ctx = self._ctx(delivery, now)
        retry_at: datetime | None = None
        reason: str | None = None
        if answer.error_class is None:
            outcome = AttemptOutcome.DELIVERED
        elif is_retryable(answer):
            period = timedelta(hours=self.settings.subscription_retry_hours)
            started = delivery.failing_since or now
            if now - started >= period:
                outcome = AttemptOutcome.FAILED
                reason = (f"retries exhausted: failing for over {self.settings.subscription_retry_hours:g} h "
                          f"(last: {answer.error_class})")
            else:
                outcome = AttemptOutcome.RETRY
                wait = self.backoff(delivery.failures + 1)
                if answer.retry_after is not None:
                    wait = answer.retry_after  # the receiver's word, within the retry period
                retry_at = min(now + timedelta(seconds=wait), started + period)
        else:
            outcome = AttemptOutcome.FAILED
            reason = f"the receiver answered HTTP {answer.status_code}, which is not retried"
        delivery.attempted(
            ctx=ctx, attempt_kind=send.attempt_kind, first_number=send.first_number, last_number=send.last_number,
            message_id=send.notification.message_id[:200], status_code=answer.status_code,
            latency_ms=answer.latency_ms, outcome=outcome, error_class=answer.error_class, retry_at=retry_at,
        )
        if outcome is AttemptOutcome.FAILED:
            assert reason is not None
            delivery.fail(reason, ctx=ctx)
            log.error("subscription %s is in error: %s", send.subscription_id, reason)
        elif send.attempt_kind is AttemptKind.HANDSHAKE and delivery.status is SubscriptionStatus.REQUESTED \
                and outcome is AttemptOutcome.DELIVERED:
            delivery.handshake_passed(ctx=ctx)
        return outcome

    def alarm_reason(self) -> str | None:
        """The silent-failure guard: subscriptions in ``error``, and those with events
        waiting and no successful delivery for ``alarm_subscription_seconds``."""
        now = self.app.clock()
        errors = silent = 0
        for indexed in self.app.subscriptions():
            subscription = self.app.find(Subscription, indexed.id)
            if subscription is None or subscription.off:
                continue
            delivery = self.app.delivery(indexed.id)
            if delivery is not None and delivery.status is SubscriptionStatus.ERROR:
                errors += 1
                continue
            since = self.app.silent_since(subscription, now)
            if since is not None and (now - since).total_seconds() > self.settings.alarm_subscription_seconds:
                silent += 1
        if not errors and not silent:
            return None
        parts = [f"{errors} subscription(s) in error"] if errors else []
        if silent:
            parts.append(f"{silent} with events undelivered for over {self.settings.alarm_subscription_seconds:g} s")
        return ", ".join(parts)


class DeliveryEngine:
    """The asynchronous half: one task per subscription (see the module's docstring)."""

    def __init__(self, app: Any, *, transport: httpx.AsyncBaseTransport | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        self.app = app
        self.deliveries = Deliveries(app, rng)
        self.transport = transport
        self.alarm = Alarm(SUBSCRIPTION_NOT_DELIVERING, f"service:{app.name}", status=DEGRADED)
        self._wakes: dict[UUID, asyncio.Event] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._woken: asyncio.Event | None = None
        #: Requests in flight across subscriptions (``subscription_delivery_concurrency``).
        self._in_flight: asyncio.Semaphore | None = None

    def wake(self) -> None:
        """Called (from any thread) after this process recorded something: matched events
        are sent at once instead of at the next look."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake_all)

    def _wake_all(self) -> None:
        for event in self._wakes.values():
            event.set()
        if self._woken is not None:
            self._woken.set()

    async def run(self, stop: asyncio.Event, lost: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()
        workers: dict[UUID, asyncio.Task[None]] = {}
        concurrency = self.app.settings.subscription_delivery_concurrency
        self._in_flight = asyncio.Semaphore(concurrency)
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        next_alarm_check = 0.0
        async with httpx.AsyncClient(transport=self.transport, follow_redirects=False, limits=limits) as http:
            try:
                while not stop.is_set() and not (lost is not None and lost.is_set()):
                    self._woken.clear()
                    try:
                        indexed = await asyncio.to_thread(self.app.subscriptions)
                    except Exception as e:  # noqa: BLE001 - the store away for a moment: looked at again
                        log.warning("subscriptions: reading the subscriptions failed: %s", describe(e))
                        indexed = []
                    for found in indexed:
                        task = workers.get(found.id)
                        if task is None or task.done():
                            workers[found.id] = asyncio.create_task(self._serve(found.id, http, stop))
                    if time.monotonic() >= next_alarm_check:
                        next_alarm_check = time.monotonic() + self.app.settings.alarm_check_seconds
                        await self._check_alarm()
                    try:
                        await asyncio.wait_for(self._woken.wait(), timeout=IDLE_LOOK_SECONDS)
                    except TimeoutError:
                        pass
            finally:
                for task in workers.values():
                    task.cancel()
                await asyncio.gather(*workers.values(), return_exceptions=True)
                self.alarm.retire()

    async def _check_alarm(self) -> None:
        try:
            self.alarm.set(await asyncio.to_thread(self.deliveries.alarm_reason))
        except Exception as e:  # noqa: BLE001 - looked at again at the next check
            log.warning("subscriptions: the alarm check failed: %s", describe(e))

    async def _serve(self, sid: UUID, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        wake = self._wakes.setdefault(sid, asyncio.Event())
        try:
            while not stop.is_set():
                wake.clear()  # before looking: a commit while it looks wakes the wait below
                try:
                    step = await asyncio.to_thread(self.deliveries.next_step, sid)
                    if step is None:
                        return
                    if isinstance(step, Send):
                        step = Run([step])
                    if isinstance(step, Run):
                        await asyncio.to_thread(self.deliveries.announce, step)
                        await self._run(http, step)
                        continue
                    wait = IDLE_LOOK_SECONDS
                    if step.until is not None:
                        wait = min(wait, max(0.0, (step.until - self.app.clock()).total_seconds()))
                except Exception as e:  # noqa: BLE001 - the store away: nothing recorded, tried again
                    log.warning("subscription %s: %s; trying again", sid, describe(e))
                    wait = IDLE_LOOK_SECONDS
                try:
                    await asyncio.wait_for(wake.wait(), timeout=wait)
                except TimeoutError:
                    pass
        finally:
            self._wakes.pop(sid, None)

    async def _run(self, http: httpx.AsyncClient, run: Run) -> None:
        """Sends an announced run in order until its end, its time is up or an answer is
        not a 2xx; then records every attempt made. Stopped meanwhile, it records what it
        made and the request in flight as interrupted; a crash leaves the announcement
        alone, and the next start records it as interrupted (docs/decisions.md)."""
        made: list[tuple[Send, Answer]] = []
        ends = time.monotonic() + RUN_SECONDS
        since = self.app.clock()
        in_flight: Send | None = None
        try:
            for send in run.sends:
                in_flight, since = send, self.app.clock()
                answer = await self.send(http, send)
                in_flight = None
                made.append((send, answer))
                if answer.error_class is not None or time.monotonic() >= ends:
                    break
        except asyncio.CancelledError:
            try:
                self.deliveries.stopped(made, in_flight, since)
            except Exception as e:  # noqa: BLE001 - the next start records the run as interrupted
                log.warning("subscriptions: recording a stopped run failed: %s", describe(e))
            raise
        await asyncio.to_thread(self.deliveries.record_all, made)

    async def send(self, http: httpx.AsyncClient, send: Send) -> Answer:
        """One signed request, once one of the ``subscription_delivery_concurrency`` places
        is free; the answer's status and latency (its body read and dropped)."""
        if self._in_flight is None:
            return await self._post(http, send)
        async with self._in_flight:
            return await self._post(http, send)

    async def _post(self, http: httpx.AsyncClient, send: Send) -> Answer:
        notification = send.notification
        at = datetime.now(UTC)  # signed when sent, not when queued
        headers = {
            **send.headers, **notification.headers,
            "content-type": notification.content_type,
            "webhook-id": notification.message_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self.app.keys.signature(send.subscription_id, send.generations,
                                                         notification.message_id, at, notification.body),
        }
        started = time.monotonic()
        try:
            async with http.stream("POST", send.endpoint, content=notification.body, headers=headers,
                                   timeout=send.timeout) as response:
                code = response.status_code
                retry_after = retry_after_seconds(response.headers.get("retry-after"), at)
                await _drain(response)
        except httpx.TimeoutException:
            return Answer(None, _ms(started), "timeout")
        except httpx.TransportError:
            return Answer(None, _ms(started), "connection")
        error = None if 200 <= code < 300 else f"http-{code}"
        return Answer(code, _ms(started), error, retry_after if code in (429, 503) else None)


async def _drain(response: httpx.Response) -> None:
    """Reads (and drops) the answer's body up to :data:`DRAIN_BYTES`: a connection whose
    answer was read to its end is kept alive for the next request; one left unread is
    closed, and every request then paid for a new TCP connection (a fifth of a delivery's
    time). A longer body is not read on: that connection is closed. The status decides the
    attempt: a body that breaks off after it closes the connection and changes nothing else."""
    read = 0
    try:
        async for chunk in response.aiter_raw():
            read += len(chunk)
            if read > DRAIN_BYTES:
                return
    except (httpx.TransportError, httpx.StreamError):  # broken off, or already read (a test transport)
        return


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
