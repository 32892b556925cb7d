"""Webhook subscriptions end to end (issue 14): the care relay, NATS, the subscriptions
service and a local receiver that verifies every request's signature with
``standardwebhooks``.

- The receiver answering 410: ``error`` at once, with the reason; 429 with ``Retry-After``:
  the next attempt waits that long (in-process service, seconds).
- The receiver down for 30 s under load, then back, and the service killed with SIGKILL
  while delivering: every event delivered, in order, numbers without gaps, repeats only
  with the same ids; a client-scoped subscription gets its client's events only; the
  documented receiver (docs/examples/webhook_receiver.py) handles every number once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from domain.base import Actor, Role
from domain.events.subscription_deliveries import (
    AttemptKind,
    AttemptOutcome,
    SubscriptionDeliveryAttempted,
    SubscriptionSendingInterrupted,
)
from domain.subscriptions.subscription import Subscription, SubscriptionStatus
from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.registry import service
from services.shared.bus import EmbeddedNats
from services.shared.settings import Settings
from services.subscriptions.delivery import Deliveries
from services.subscriptions.kinds import Scope
from services.subscriptions.service import SubscriptionsApplication
from tests.conftest import CLINICIAN
from tests.support.bus import InProcessRelay, settings_env, with_streams
from tests.support.receiver import LocalReceiver

META = CommandMeta(actor=CLINICIAN)
HOSPITAL = Actor(id="ehr-integration", role=Role.INTEGRATION)
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "webhook_receiver.py"
A, B = "client-a", "client-b"


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        yield server


def fast(settings: Settings, nats: EmbeddedNats, data: Path) -> Settings:
    """Retries in fractions of seconds instead of minutes."""
    return settings.model_copy(update={
        "data_dir": data, "nats_url": nats.url, "subscription_backoff_seconds": 0.05,
        "subscription_backoff_max_seconds": 1.0, "subscription_timeout_seconds": 5.0, "alarm_check_seconds": 0.2,
    })


def draft(app: CareApplication, client_id: str) -> UUID:
    return app.handle(c.DraftCarePlan(client_id=client_id, title="Low mood", strategy="short_term_moderate",
                                      therapy_models=["steady_progress"]), META).aggregate_id


def change(app: CareApplication, plan: UUID, i: int) -> None:
    app.handle(c.AddGoal(plan_id=plan, description=f"Goal {i}"), META)


async def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)


async def test_410_is_an_error_at_once_and_429_retry_after_is_honoured(
    tmp_path: Path, nats_server: EmbeddedNats, backend_settings: Settings,
) -> None:
    settings = fast(backend_settings, nats_server, tmp_path / "data")
    care = CareApplication(settings)
    subs = SubscriptionsApplication(settings)
    async with LocalReceiver() as receiver:
        gone = subs.subscribe("webhook", {"endpoint": receiver.url("/gone"), "filter": "care.clinical.>"},
                              Scope((A,)), HOSPITAL)
        busy = subs.subscribe("webhook", {"endpoint": receiver.url("/busy"), "filter": "care.clinical.>"},
                              Scope((A,)), HOSPITAL)
        assert gone.subscription.clients == [A]  # the token's clients by default
        receiver.endpoints["/gone"] = receiver_endpoint(gone.secret, 410)
        receiver.endpoints["/busy"] = receiver_endpoint(busy.secret, 429, {"Retry-After": "2"})
        running = service("subscriptions").running(settings)
        try:
            async with InProcessRelay(settings, nats_server.url):
                await running.start()
                plan = draft(care, A)
                draft(care, B)  # another client's: neither subscription matches it
                change(care, plan, 1)
                await until(lambda: len(receiver.of("/busy")) >= 2, 30, "two attempts at the busy receiver")
                receiver.endpoints["/busy"].status = 204
                await until(lambda: (subs.delivery(busy.subscription.id).delivered_up_to == 2), 30, "busy delivered")
                gone_state = subs.delivery(gone.subscription.id)
                alarm = running.app.engine.alarm
                await until(lambda: alarm.active, 10, "the silent-failure alarm")
                alarm_reason = alarm.reason
                gone_before = [r.number for r in receiver.of("/gone")]
                shown = subs.summary(subs.subscription(gone.subscription.id, Scope((A,))), subs.clock())
                # fixed: a resend from 1 leaves error, and everything is delivered; the alarm clears
                receiver.endpoints["/gone"].status = 204
                subs.request_resend(gone.subscription.id, 1, Scope((A,)), HOSPITAL, "Receiver fixed")
                await until(lambda: subs.delivery(gone.subscription.id).delivered_up_to == 2, 30, "resent")
                await until(lambda: not alarm.active, 10, "the alarm cleared")
        finally:
            await running.stop()
    try:
        # 410: one attempt, then error with the reason; nothing more was tried
        assert gone_before == [1]
        assert gone_state.status is SubscriptionStatus.ERROR and "410" in (gone_state.error or "")
        assert gone_state.attempts == 1 and gone_state.delivered_up_to == 0
        assert shown["status"] == "error" and shown["alarm"] is True and "410" in shown["error"]
        assert "1 subscription(s) in error" in alarm_reason
        resent = subs.delivery(gone.subscription.id)
        assert resent.status is SubscriptionStatus.ACTIVE and resent.error is None and resent.resends_applied == 1
        assert [r.number for r in receiver.of("/gone")] == [1, 1, 2]
        # 429 with Retry-After: 2 — the retry came no sooner (the backoff alone would be 0.05 s)
        busy_received = receiver.of("/busy")
        assert busy_received[1].at - busy_received[0].at >= 1.9
        assert [r.number for r in busy_received][:2] == [1, 1]
        assert {r.webhook_id for r in busy_received if r.number == 1} == {busy_received[0].headers["ce-id"]}
        busy_state = subs.delivery(busy.subscription.id)
        assert busy_state.status is SubscriptionStatus.ACTIVE and busy_state.delivered_up_to == 2
        assert subs.feed(busy.subscription.id).last_number == 2  # client B's plan never matched
        assert receiver.unverified == []
    finally:
        care.close()
        subs.close()


def receiver_endpoint(secret: str, status: int, headers: dict[str, str] | None = None) -> Any:
    from tests.support.receiver import Endpoint

    return Endpoint(secret, status, headers or {})


class ServiceProcess:
    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self.settings.nats_url is not None
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "services.cli", "service", "subscriptions"],
                                            env=settings_env(self.settings, self.settings.nats_url),
                                            stdout=out, stderr=out)

    def kill(self) -> None:
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("webhook_receiver", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


async def test_an_outage_of_30_s_under_load_and_a_kill_lose_nothing_and_keep_order(
    tmp_path: Path, nats_server: EmbeddedNats, backend_settings: Settings,
) -> None:
    settings = fast(backend_settings, nats_server, tmp_path / "data")
    care = CareApplication(settings)
    subs = SubscriptionsApplication(settings)
    process = ServiceProcess(settings, tmp_path / "subscriptions.log")
    receiver = LocalReceiver()
    everything = Scope(("*",))
    only_a = subs.subscribe("webhook", {"endpoint": receiver.url("/a"), "filter": "care.clinical.v1.care_plan.>"},
                            Scope((A,)), HOSPITAL)
    all_plans = subs.subscribe("webhook", {"endpoint": receiver.url("/all"), "filters": ["care.clinical.v1.care_plan.>"]},
                               everything, HOSPITAL)
    documented = subs.subscribe("webhook", {"endpoint": receiver.url("/example/careplan"),
                                            "filter": "care.clinical.v1.care_plan.>"}, everything, HOSPITAL)
    handled: list[int] = []
    example = load_example()
    receiver.mounts["/example"] = example.create_app(documented.secret, lambda n, _h, _e: handled.append(n))
    receiver.endpoints["/a"] = receiver_endpoint(only_a.secret, 204)
    receiver.endpoints["/all"] = receiver_endpoint(all_plans.secret, 204)
    plans = {A: [draft(care, A) for _ in range(3)], B: [draft(care, B) for _ in range(3)]}
    try:
        async with InProcessRelay(settings, nats_server.url):
            await receiver.start()
            process.start()
            await until(lambda: subs.delivery(all_plans.subscription.id).delivered_up_to >= 6, 60, "first deliveries")
            # the receiver goes away for 30 s while events keep coming (3 a second)
            await receiver.stop()
            down_until = time.monotonic() + 30
            i = 0
            while time.monotonic() < down_until:
                for client_id in (A, B):
                    await asyncio.to_thread(change, care, plans[client_id][i % 3], i)
                i += 1
                await asyncio.sleep(0.6)
            failing = subs.delivery(all_plans.subscription.id)
            assert failing.failures >= 3 and failing.status is SubscriptionStatus.ACTIVE  # retrying, not in error
            await receiver.start()
            # killed while delivering the backlog, then started again
            await until(lambda: subs.delivery(all_plans.subscription.id).delivered_up_to > failing.delivered_up_to,
                        30, "delivery resumed")
            process.kill()
            for _ in range(20):  # more events while it is down
                await asyncio.to_thread(change, care, plans[A][0], 1000 + _)
            process.start()
            total_a = sum(care.get_plan(p).version for p in plans[A])
            total = total_a + sum(care.get_plan(p).version for p in plans[B])
            expected = {only_a.subscription.id: total_a, all_plans.subscription.id: total,
                        documented.subscription.id: total}
            for sid, count in expected.items():
                await until(lambda sid=sid, count=count: subs.delivery(sid).delivered_up_to >= count, 120,
                            f"all {count} events delivered to {sid}")
            await receiver.stop()
    finally:
        process.stop()
        await receiver.stop()
    try:
        assert receiver.unverified == [], "a request whose signature did not verify"
        for path, made, count in (("/a", only_a, total_a), ("/all", all_plans, total)):
            got = receiver.of(path)
            first_seen: dict[int, Any] = {}
            for r in got:
                first_seen.setdefault(r.number, r)
                # a repeat is the same message: same id, same bytes
                assert (r.webhook_id, r.body) == (first_seen[r.number].webhook_id, first_seen[r.number].body)
            assert sorted(first_seen) == list(range(1, count + 1)), f"{path}: numbers with gaps"
            assert [r.number for r in got if r is first_seen[r.number]] == sorted(first_seen), f"{path}: out of order"
            # what was sent is what the store answers for the same range ($events)
            stored = subs.numbered_events(made.subscription.id, 0, count)
            assert [e.event.event_id for e in stored] == [first_seen[n].webhook_id for n in range(1, count + 1)]
            assert [e.event.body for e in stored] == [first_seen[n].body for n in range(1, count + 1)]
        clients = {json.loads(r.body).get("client_id") for r in receiver.of("/a")} - {None}
        assert clients == {A}, "a client-scoped subscription received another client's event"
        plans_a = {str(p) for p in plans[A]}
        assert {r.headers["ce-subject"] for r in receiver.of("/a")} == plans_a
        assert handled == list(range(1, total + 1)), "the documented receiver handled each number once, in order"
        # every attempt recorded: failures while the receiver was down, then deliveries
        delivery = subs.delivery(all_plans.subscription.id)
        assert delivery.attempts >= len(receiver.of("/all")) + 3
        outcomes = [subs.mapper.to_domain_event(e) for e in subs.recorder.select_events(delivery.id)]
        kinds = {getattr(o, "outcome", None) for o in outcomes}
        assert {AttemptOutcome.RETRY, AttemptOutcome.DELIVERED} <= kinds
        assert all(o.error_class == "connection" for o in outcomes if getattr(o, "outcome", None) is AttemptOutcome.RETRY)
        # every request the receiver got is in the record: as an attempt, or within a
        # sending the kill interrupted (said to have maybe reached the receiver unrecorded)
        for path, made in (("/a", only_a), ("/all", all_plans)):
            recorded: Counter[int] = Counter()
            for event in subs.recorder.select_events(subs.delivery(made.subscription.id).id):
                found = subs.mapper.to_domain_event(event)
                if isinstance(found, SubscriptionDeliveryAttempted | SubscriptionSendingInterrupted) \
                        and found.attempt_kind is AttemptKind.EVENTS:
                    recorded.update(range(found.first_number, found.last_number + 1))
            received = Counter(r.number for r in receiver.of(path))
            assert all(received[n] <= recorded[n] for n in received), f"{path}: a request the record does not hold"
            assert recorded[1] >= 1
    finally:
        care.close()
        subs.close()


def test_the_backoff_doubles_to_its_cap_with_the_second_half_random(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, subscription_backoff_seconds=1.0, subscription_backoff_max_seconds=60.0)

    class App:
        pass

    app = App()
    app.settings = settings  # type: ignore[attr-defined]
    low, high = Deliveries(app, rng=lambda: 0.0), Deliveries(app, rng=lambda: 0.999)
    assert [low.backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert high.backoff(3) == pytest.approx(4 * 0.9995, rel=1e-3)
    assert low.backoff(40) == 30.0 and high.backoff(40) <= 60.0


def test_a_rotated_secret_signs_alongside_the_previous_one_during_the_grace_period(tmp_path: Path) -> None:
    from datetime import timedelta

    from standardwebhooks import Webhook
    from standardwebhooks.webhooks import WebhookVerificationError

    subs = SubscriptionsApplication(Settings(data_dir=tmp_path, subscription_secret_grace_hours=1))
    try:
        made = subs.subscribe("webhook", {"endpoint": "https://ehr.example/hook", "filter": "care.>",
                                          "headers": {"Authorization": "Bearer receiver-token"}}, Scope((A,)), HOSPITAL)
        sid = made.subscription.id
        # the header value is sealed in the stored event, never in clear
        stored = b"".join(e.state for e in subs.recorder.select_events(sid))
        assert b"receiver-token" not in stored and subs.summary(made.subscription, subs.clock())["header_names"] == [
            "Authorization"]
        rotated = subs.rotate_secret(sid, Scope((A,)), HOSPITAL)
        assert rotated.secret != made.secret and rotated.subscription.secret_generation == 2
        body, now = b'{"x": 1}', subs.clock()

        def verifies(secret: str, at: Any) -> bool:
            signature = subs.keys.signature(sid, rotated.subscription.secret_generations(at), "msg-1", now, body)
            headers = {"webhook-id": "msg-1", "webhook-timestamp": str(int(now.timestamp())),
                       "webhook-signature": signature}
            try:
                Webhook(secret).verify(body, headers, json_parse=False)
                return True
            except WebhookVerificationError:
                return False

        assert verifies(made.secret, now) and verifies(rotated.secret, now)  # both during the grace period
        later = now + timedelta(hours=2)
        assert verifies(rotated.secret, later) and not verifies(made.secret, later)  # then the new one only
        with pytest.raises(Exception, match="No subscription"):
            subs.rotate_secret(sid, Scope((B,)), HOSPITAL)  # another client's token: as if it did not exist
    finally:
        subs.close()


def test_the_cli_lists_shows_and_resends_and_marks_an_alarm_red(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from domain.base import CommandContext
    from services.cli.subscriptions import app as cli

    subs = SubscriptionsApplication(Settings(data_dir=tmp_path))
    try:
        made = subs.subscribe("webhook", {"endpoint": "https://ehr.example/hook", "filter": "care.>"}, Scope(("*",)),
                              HOSPITAL)
        sid = made.subscription.id
        listed = CliRunner().invoke(cli, ["list", "--json", "--data-dir", str(tmp_path)])
        assert listed.exit_code == 0, listed.output
        assert json.loads(listed.output)["status"] == "active"
        # the receiver answered 410: in error, so the list exits 1 and says why
        delivery = subs.delivery(sid)
        ctx = CommandContext(actor=subs.actor, at=subs.clock(), correlation_id=sid)
        delivery.attempted(ctx=ctx, attempt_kind="events", first_number=1, last_number=1, message_id="m-1",
                           status_code=410, latency_ms=12, outcome=AttemptOutcome.FAILED, error_class="http-410")
        delivery.fail("the receiver answered HTTP 410, which is not retried", ctx=ctx)
        subs.save(delivery)
        listed = CliRunner().invoke(cli, ["list", "--data-dir", str(tmp_path)])
        assert listed.exit_code == 1 and "410" in listed.output
        shown = CliRunner().invoke(cli, ["show", str(sid), "--json", "--data-dir", str(tmp_path)])
        assert shown.exit_code == 0, shown.output
        attempt = json.loads(shown.output)["latest_attempts"][0]
        assert (attempt["status_code"], attempt["outcome"], attempt["latency_ms"]) == (410, "failed", 12)
        resent = CliRunner().invoke(cli, ["resend", str(sid), "--from", "1", "--reason", "Receiver fixed",
                                          "--data-dir", str(tmp_path)])
        assert resent.exit_code == 0, resent.output
        again = subs.find(type(made.subscription), sid)
        assert (again.resend_requests, again.resend_from) == (1, 1)
        missing = CliRunner().invoke(cli, ["show", "00000000-0000-0000-0000-000000000000", "--data-dir", str(tmp_path)])
        assert missing.exit_code == 1 and "No subscription" in missing.output
    finally:
        subs.close()


def test_a_clients_audit_export_holds_the_deliveries_of_its_subscriptions(tmp_path: Path) -> None:
    from domain.base import CommandContext
    from domain.subscriptions.feed import SubscriptionFeed
    from services.audit.export import export_client
    from services.audit.reading import Stores

    settings = Settings(data_dir=tmp_path)
    subs = SubscriptionsApplication(settings)
    try:
        mine = subs.subscribe("webhook", {"endpoint": "https://ehr.example/a", "filter": "care.>"}, Scope((A,)), HOSPITAL)
        theirs = subs.subscribe("webhook", {"endpoint": "https://ehr.example/b", "filter": "care.>"}, Scope((B,)),
                                HOSPITAL)
        delivery = subs.delivery(mine.subscription.id)
        mine_delivery_id = delivery.id
        ctx = CommandContext(actor=subs.actor, at=subs.clock(), correlation_id=mine.subscription.id)
        delivery.attempted(ctx=ctx, attempt_kind="events", first_number=1, last_number=1, message_id="event-1",
                           status_code=204, latency_ms=7, outcome=AttemptOutcome.DELIVERED)
        # a sending announced and never followed by its attempts (a crash): the next look says so
        delivery.sending_started(AttemptKind.EVENTS, 2, 5, ctx=ctx)
        subs.save(delivery)
        Deliveries(subs).next_step(mine.subscription.id)
        assert subs.delivery(mine.subscription.id).sending is None
        # an all-clients subscription: event 1 is B's, event 2 is A's, each sent by one attempt
        everyone = subs.subscribe("webhook", {"endpoint": "https://ehr.example/all", "filter": "care.>"},
                                  Scope(("*",)), HOSPITAL)
        feed = SubscriptionFeed.open(everyone.subscription.id, ctx=ctx)
        for client_id in (B, A):
            feed.match(ctx=ctx, matched_event_id=f"e-{client_id}", source="care", sequence=1, type="t",
                       subject="care.clinical.v1.care_plan.p.goal_added", aggregate_id="p", time="2026-12-03T09:00:00",
                       dataschema="", client_id=client_id, body='{"a": 1}')
        shared = subs.delivery(everyone.subscription.id)
        for number in (1, 2):
            shared.attempted(ctx=ctx, attempt_kind="events", first_number=number, last_number=number,
                             message_id=f"event-{number}", status_code=204, latency_ms=5, outcome=AttemptOutcome.DELIVERED)
        subs.save(feed, shared)
    finally:
        subs.close()
    with Stores(settings) as stores:
        exported = export_client(stores, A)
    ids = {a.aggregate_id for a in exported.aggregates}
    assert mine.subscription.id in ids and theirs.subscription.id not in ids
    (deliveries,) = [a for a in exported.of_type("SubscriptionDelivery") if a.aggregate_id == mine_delivery_id]
    assert deliveries.state["delivered_up_to"] == 1 and deliveries.state["subscription_id"] == str(mine.subscription.id)
    assert any("delivered" in e.summary and "204" in e.summary for e in deliveries.events)
    assert deliveries.state["interrupted"] == 1
    assert any("2-5 interrupted" in e.summary for e in deliveries.events)
    # of the all-clients subscription: A's event and the attempt that sent it, not B's
    assert everyone.subscription.id in ids
    (shared_feed,) = exported.of_type("SubscriptionFeed")
    assert [e.version for e in shared_feed.events] == [3]  # event 2 is the feed's version 3
    (shared_deliveries,) = [a for a in exported.of_type("SubscriptionDelivery") if a.aggregate_id == shared.id]
    assert [e.summary for e in shared_deliveries.events] == ["Attempt events 2-2: delivered (204)"]
    assert "delivered_up_to" not in shared_deliveries.state
    with Stores(settings) as stores:
        assert export_client(stores, B).of_type("SubscriptionFeed")[0].events[0].version == 2


def test_events_waiting_without_a_successful_delivery_raise_the_silent_failure_alarm(tmp_path: Path) -> None:
    from datetime import timedelta

    from domain.base import CommandContext
    from domain.subscriptions.feed import SubscriptionFeed

    subs = SubscriptionsApplication(Settings(data_dir=tmp_path, alarm_subscription_seconds=60))
    try:
        made = subs.subscribe("webhook", {"endpoint": "https://ehr.example/a", "filter": "care.>"}, Scope((A,)), HOSPITAL)
        deliveries = Deliveries(subs)
        assert deliveries.alarm_reason() is None  # nothing waits
        now = subs.clock()
        ctx = CommandContext(actor=subs.actor, at=now, correlation_id=made.subscription.id)
        feed = SubscriptionFeed.open(made.subscription.id, ctx=ctx)
        for minutes_ago in (5, 0):
            feed.match(ctx=ctx, matched_event_id=f"e-{minutes_ago}", source="care", sequence=7 - minutes_ago,
                       type="org.careplan.clinical.v1.care_plan.goal_added", subject="care.clinical.v1.care_plan.p.goal_added",
                       aggregate_id="p", time=(now - timedelta(minutes=minutes_ago)).isoformat(), dataschema="",
                       client_id=A, body='{"a": 1}')
        subs.save(feed)
        # event 1 has waited five minutes with no delivery at all: silent
        assert deliveries.alarm_reason() == "1 with events undelivered for over 60 s"
        assert subs.summary(subs.subscription(made.subscription.id, Scope((A,))), now)["alarm"] is True
        delivery = subs.delivery(made.subscription.id)
        delivery.attempted(ctx=ctx, attempt_kind="events", first_number=1, last_number=1, message_id="e-5",
                           status_code=204, latency_ms=3, outcome=AttemptOutcome.DELIVERED)
        subs.save(delivery)
        # event 2 is fresh: waiting, but not for long
        assert deliveries.alarm_reason() is None
    finally:
        subs.close()


def test_a_fhir_subscription_past_its_end_matches_nothing_and_goes_off(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from domain.subscriptions.subscription import Subscription
    from services.shared.clock import ManualClock
    from services.subscriptions.fhir import subscription as backport

    clock = ManualClock(datetime(2026, 12, 3, 9, 0, tzinfo=UTC))
    subs = SubscriptionsApplication(Settings(data_dir=tmp_path), clock=clock)
    try:
        made = subs.subscribe("fhir-rest-hook", {
            "resourceType": "Subscription", "meta": {"profile": [backport.PROFILE]}, "status": "requested",
            "reason": "until the end of the morning", "end": "2026-12-03T12:00:00+00:00",
            "criteria": "http://careplan.local/fhir/SubscriptionTopic/care-plan-changed",
            "channel": {"type": "rest-hook", "endpoint": "https://ehr.example/fhir-hook",
                        "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": backport.PAYLOAD_CONTENT, "valueCode": "id-only"}]}},
        }, Scope((A,)), HOSPITAL)
        sid = made.subscription.id
        deliveries = Deliveries(subs)
        assert deliveries.next_step(sid) is not None  # before its end: the handshake is due
        assert [s.id for s in subs.subscriptions()] == [sid]
        clock.advance(hours=3)
        assert deliveries.next_step(sid) is None  # past it: off, and its task ends
        assert subs.find(Subscription, sid).off and subs.state(subs.find(Subscription, sid)).status == "off"
        assert subs.subscriptions() == []
    finally:
        subs.close()


def test_full_resource_notifications_carry_the_care_plan_as_it_was_at_each_event(tmp_path: Path) -> None:
    from fhir.resources.R4B.bundle import Bundle

    from domain.base import CommandContext
    from domain.subscriptions.feed import SubscriptionFeed
    from services.subscriptions.delivery import Run
    from services.subscriptions.fhir import subscription as backport
    from services.subscriptions.fhir.kind import events_response

    settings = Settings(data_dir=tmp_path)
    care, subs = CareApplication(settings), SubscriptionsApplication(settings)
    try:
        plan = draft(care, A)
        change(care, plan, 1)
        made = subs.subscribe("fhir-rest-hook", {
            "resourceType": "Subscription", "meta": {"profile": [backport.PROFILE]}, "status": "requested",
            "reason": "care plans in full", "criteria": "http://careplan.local/fhir/SubscriptionTopic/care-plan-changed",
            "channel": {"type": "rest-hook", "endpoint": "https://ehr.example/fhir-hook", "payload": "application/fhir+json",
                        "_payload": {"extension": [{"url": backport.PAYLOAD_CONTENT, "valueCode": "full-resource"}]}},
        }, Scope((A,)), HOSPITAL)
        sid = made.subscription.id
        ctx = CommandContext(actor=subs.actor, at=subs.clock(), correlation_id=sid)
        feed = SubscriptionFeed.open(sid, ctx=ctx)
        for event in care.history(plan):  # as the stream carries them: the contract JSON
            feed.match(ctx=ctx, matched_event_id=str(event.event_id), source="care", sequence=event.originator_version,
                       type="t", subject=f"care.clinical.v1.care_plan.{plan}.x", aggregate_id=str(plan),
                       time=event.timestamp.isoformat(), dataschema="", client_id=A, body=event.model_dump_json())
        delivery = subs.delivery(sid)
        delivery.handshake_passed(ctx=ctx)
        subs.save(feed, delivery)
        step = Deliveries(subs).next_step(sid)
        assert isinstance(step, Run) and len(step.sends) == 2
        plans = []
        for send in step.sends:
            bundle = Bundle.model_validate_json(send.notification.body)  # valid R4B
            (focus,) = [e.resource for e in bundle.entry[1:]]
            assert focus.get_resource_type() == "CarePlan" and focus.id == str(plan)
            plans.append(focus)
        assert [len(p.goal or []) for p in plans] == [0, 1]  # each as it was at its event's version
        # $events over the same range carries the same resources
        state = subs.state(subs.find(Subscription, sid))
        answered = events_response(state, subs.with_focus("fhir-rest-hook", state.spec, subs.numbered_events(sid, 0, 2)),
                                   at=subs.clock())
        assert [e.resource.model_dump() for e in answered.entry[1:]] == [p.model_dump() for p in plans]
    finally:
        care.close()
        subs.close()


async def test_a_stop_mid_run_records_what_was_sent_and_the_request_in_flight_as_interrupted(tmp_path: Path) -> None:
    import httpx

    from domain.base import CommandContext
    from domain.subscriptions.feed import SubscriptionFeed
    from services.subscriptions.delivery import DeliveryEngine

    subs = SubscriptionsApplication(Settings(data_dir=tmp_path))
    hanging = asyncio.Event()

    async def receiver(request: httpx.Request) -> httpx.Response:
        if request.headers["ce-eventnumber"] == "2":
            hanging.set()
            await asyncio.Event().wait()  # never answers
        return httpx.Response(204)

    try:
        made = subs.subscribe("webhook", {"endpoint": "https://ehr.example/a", "filter": "care.>"}, Scope((A,)), HOSPITAL)
        sid = made.subscription.id
        ctx = CommandContext(actor=subs.actor, at=subs.clock(), correlation_id=sid)
        feed = SubscriptionFeed.open(sid, ctx=ctx)
        for n in (1, 2, 3):
            feed.match(ctx=ctx, matched_event_id=f"e-{n}", source="care", sequence=n, type="t",
                       subject="care.clinical.v1.care_plan.p.goal_added", aggregate_id="p",
                       time="2026-12-03T09:00:00+00:00", dataschema="", client_id=A, body='{"a": 1}')
        subs.save(feed)
        engine = DeliveryEngine(subs, transport=httpx.MockTransport(receiver))
        running = asyncio.create_task(engine.run(asyncio.Event()))
        await asyncio.wait_for(hanging.wait(), 30)
        running.cancel()  # the service stops while event 2 is in flight
        await asyncio.gather(running, return_exceptions=True)
        events = [subs.mapper.to_domain_event(e) for e in subs.recorder.select_events(subs.delivery(sid).id)]
        said = [(type(e).__name__, getattr(e, "first_number", None)) for e in events[1:]]
        assert said == [("SubscriptionSendingStarted", 1), ("SubscriptionDeliveryAttempted", 1),
                        ("SubscriptionSendingInterrupted", 2)]
        assert subs.delivery(sid).sending is None and subs.delivery(sid).delivered_up_to == 1
    finally:
        subs.close()
