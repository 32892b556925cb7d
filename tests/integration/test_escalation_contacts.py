"""Escalations reach people (issue 14): the policy's contacts are told by e-mail (a local
aiosmtpd server) and by signed webhook (a local receiver verifying every signature with
``standardwebhooks``); every outcome is an event on the crisis; a level nobody could be
told is followed by the next at once, in virtual time; a last level nobody could be told
is an alarm; a process stopped between sending and recording sends again with the same id.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from contracts.generate import CONTRACTS_DIR, schema_path
from contracts.subjects import event_token
from domain.base import CommandContext, DomainEvent
from domain.catalogues.escalation import EscalationTrigger
from domain.escalation.crisis import Crisis
from domain.escalation.policy import EmailChannel, WebhookChannel
from domain.events import public_event_classes
from domain.events.escalation import (
    EscalationLevelNotified,
    EscalationNotificationDelivered,
    EscalationNotificationFailed,
)
from services.assessment.service import SUBJECTS as ASSESSMENT_SUBJECTS
from services.assessment.service import AssessmentApplication
from services.care.application import CareApplication
from services.escalation.channels import Notice, Outcome, deliver
from services.escalation.commands import AcknowledgeEscalation
from services.escalation.service import SUBJECTS, EscalationApplication
from services.shared import alarms, metrics
from services.shared.bus import EmbeddedNats
from services.shared.clock import ManualClock
from services.shared.commands import CommandMeta
from services.shared.runner import RunningService
from services.shared.settings import Settings
from tests.conftest import ESCALATION, SUPERVISOR, T0
from tests.integration.test_assessment_service import start_course, submit, wait_for_messages
from tests.support.bus import InProcessRelay, with_streams
from tests.support.receivers import Inbox, WebhookReceiver, free_port, smtp_server, webhook_receiver

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
#: What the crisis is about: it must never leave the store.
REASON = "PHQ-9 item 9 above 0: said she would walk to the Harbour bridge tonight"
CLIENT = "client-0042"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver(SECRET) as found:
        yield found


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as found:
        yield found


def secrets_file(tmp_path: Path, secrets: dict[str, Any] | None = None) -> Path:
    """The escalation secrets file (the policy names its secrets only)."""
    path = tmp_path / "escalation-secrets.json"
    path.write_text(json.dumps(secrets if secrets is not None else {"pager": SECRET}))
    path.chmod(0o600)
    return path


def configured(settings: Settings, tmp_path: Path, levels: list[dict[str, Any]], smtp_port: int) -> Settings:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({
        "levels": levels,
        "ack_timeouts": {"immediate": "PT5M", "urgent": "PT2H", "review": "PT24H", "outreach": "PT8H"},
    }))
    return settings.model_copy(update={
        "escalation_policy_file": policy, "escalation_secrets_file": secrets_file(tmp_path),
        "smtp_host": "127.0.0.1", "smtp_port": smtp_port,
        "smtp_from": "careplan@hospital.example", "smtp_starttls": False,
        "escalation_delivery_attempts": 2, "escalation_delivery_backoff_seconds": 0.0,
        "escalation_delivery_timeout_seconds": 5.0,
        "escalation_link_template": "https://careplan.hospital.example/crises/{crisis_id}",
    })


def webhook(url: str) -> dict[str, str]:
    return {"kind": "webhook", "url": url, "secret_name": "pager"}


def raise_crisis(app: EscalationApplication) -> Crisis:
    crisis = Crisis.raise_(plan_id=uuid.uuid4(), client_id=CLIENT, trigger=EscalationTrigger.PHQ9_SUICIDE_ITEM,
                           source_event_id=str(uuid.uuid4()), reason=REASON, policy=app.policy,
                           ctx=CommandContext(actor=ESCALATION, at=app.clock(), correlation_id=uuid.uuid4()))
    app.save(crisis)
    return crisis


def history(app: EscalationApplication, cid: uuid.UUID) -> list[DomainEvent]:
    return [app.mapper.to_domain_event(stored) for stored in app.recorder.select_events(cid)]


def test_a_level_is_told_by_mail_and_signed_webhook_with_ids_only(
    backend_settings: Settings, tmp_path: Path, receiver: WebhookReceiver, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    settings = configured(backend_settings, tmp_path, [
        {"name": "primary clinician", "contacts": [{"id": "primary-clinician", "channels": [
            {"kind": "email", "to": "dr.a@hospital.example"}, webhook(f"{receiver.url}/pager")]}]},
        {"name": "on-call clinician", "contacts": [{"id": "on-call-rota", "channels": [webhook(f"{receiver.url}/rota")]}]},
    ], port)
    app = EscalationApplication(settings, clock=ManualClock(T0))
    try:
        crisis = raise_crisis(app)
        assert app.fire_due_timers() == 2
        assert app.fire_due_timers() == 0  # delivered once: nothing is sent again
        events = history(app, crisis.id)
    finally:
        app.close()

    # the webhook: signed over the exact bytes, with the notification's id
    [call] = receiver.received
    assert call.path == "/pager" and call.payload is not None, "the signature did not verify"
    payload = call.payload
    assert (payload["crisis_id"], payload["severity"], payload["level"]) == (str(crisis.id), "urgent", 1)
    assert payload["acknowledge_by"] == (T0 + timedelta(hours=2)).isoformat()
    assert payload["link"] == f"https://careplan.hospital.example/crises/{crisis.id}"
    # the mail: the crisis id, the severity, the deadline; never the reason or the client
    [mail] = inbox.messages
    assert inbox.recipients == [["dr.a@hospital.example"]]
    text = mail.get_content()
    assert str(crisis.id) in text and "urgent" in mail["Subject"] and "2026-03-02 11:00 UTC" in mail["Subject"]
    assert "Severity: urgent" in text and "Acknowledge by: 2026-03-02 11:00 UTC" in text
    for sent in (mail.as_string(), call.body.decode(), json.dumps(call.headers)):
        assert "Harbour" not in sent and "bridge" not in sent and CLIENT not in sent and "PHQ-9" not in sent

    delivered = [e for e in events if isinstance(e, EscalationNotificationDelivered)]
    assert sorted(e.channel.value for e in delivered) == ["email", "webhook"]
    assert {e.contact for e in delivered} == {"primary-clinician"}
    notified = next(e for e in events if isinstance(e, EscalationLevelNotified))
    assert all(e.notified_event_id == notified.event_id and e.level == 1 and e.attempts == 1 for e in delivered)
    by_channel = {e.channel.value: e for e in delivered}
    assert str(by_channel["webhook"].notification_id) == call.headers["webhook-id"]
    assert mail["Message-ID"] == f"<{by_channel['email'].notification_id}@careplan>"
    assert by_channel["webhook"].status == 200 and by_channel["email"].status == 250
    assert not [e for e in events if isinstance(e, EscalationNotificationFailed)]
    assert not receiver.verified("/rota")  # level 2 is not called while level 1 was told


def test_a_level_nobody_could_be_told_calls_the_next_at_once_and_the_last_raises_an_alarm(
    tmp_path: Path, receiver: WebhookReceiver, smtp: tuple[Inbox, int]
) -> None:
    inbox, _ = smtp
    refused = free_port()  # nothing listens: the SMTP connection is refused
    receiver.answers = {"/pager": [500], "/rota": [200], "/lead": [410]}
    settings = configured(Settings(data_dir=tmp_path / "data"), tmp_path, [
        {"name": "primary clinician", "contacts": [{"id": "primary-clinician", "channels": [
            {"kind": "email", "to": "dr.a@hospital.example"}, webhook(f"{receiver.url}/pager")]}]},
        {"name": "on-call clinician", "contacts": [{"id": "on-call-rota", "channels": [webhook(f"{receiver.url}/rota")]}]},
        {"name": "crisis team lead", "contacts": [{"id": "crisis-team-lead", "channels": [webhook(f"{receiver.url}/lead")]}]},
    ], refused)
    clock = ManualClock(T0)
    app = EscalationApplication(settings, clock=clock)
    counted = {(c, o): metrics.ESCALATION_NOTIFICATIONS.labels(c, o)._value.get()
               for c in ("webhook", "email") for o in ("delivered", "failed")}
    try:
        crisis = raise_crisis(app)
        app.fire_due_timers()  # no time passes: level 1 fails, level 2 is told in the same tick
        assert {k: metrics.ESCALATION_NOTIFICATIONS.labels(*k)._value.get() - v for k, v in counted.items()} == {
            ("webhook", "delivered"): 1, ("webhook", "failed"): 1, ("email", "delivered"): 0, ("email", "failed"): 1}
        events = history(app, crisis.id)
        kinds = [type(e).__name__ for e in events]
        assert kinds == ["EscalationRaised", "EscalationLevelNotified", "EscalationNotificationFailed",
                         "EscalationNotificationFailed", "EscalationLevelNotified", "EscalationNotificationDelivered"]
        failed = {e.channel.value: e for e in events if isinstance(e, EscalationNotificationFailed)}
        assert (failed["webhook"].error_class, failed["webhook"].status, failed["webhook"].attempts) == ("http_500", 500, 2)
        assert (failed["email"].error_class, failed["email"].attempts) == ("connection_error", 2)
        level_2 = events[4]
        assert isinstance(level_2, EscalationLevelNotified) and level_2.level == 2
        # at once (the virtual clock has not moved: its readings only stay ordered), not after the timeout
        assert level_2.timestamp - T0 < timedelta(seconds=1)
        assert level_2.ack_due == level_2.timestamp + timedelta(hours=2)
        assert level_2.causation_id in {str(e.event_id) for e in failed.values()}
        assert [r.path for r in receiver.verified()] == ["/pager", "/pager", "/rota"]
        assert not inbox.messages
        assert app.timers.due(crisis.id) == level_2.ack_due
        assert not alarms.raised("service:escalation")

        # level 2 does not acknowledge: the timeout calls level 3, which answers 410 (not retried)
        clock.advance(hours=2, minutes=1)
        app.fire_due_timers()
        [alarm] = alarms.raised("service:escalation")
        assert alarm.name == "escalation_not_delivered" and alarm.reason == "1 crisis reached no contact at the last level"
        last = history(app, crisis.id)[-1]
        assert isinstance(last, EscalationNotificationFailed) and (last.level, last.error_class, last.attempts) == (3, "http_410", 1)
        assert str(crisis.id) not in alarm.reason and CLIENT not in alarm.reason

        # a person acknowledges: the alarm clears
        app.handle(AcknowledgeEscalation(crisis_id=crisis.id, reason="Phoned the client"), CommandMeta(actor=SUPERVISOR))
        app.fire_due_timers()
        assert not alarms.raised("service:escalation")
    finally:
        app.close()


def test_a_delivery_whose_outcome_was_not_recorded_is_sent_again_with_the_same_id(
    backend_settings: Settings, tmp_path: Path, receiver: WebhookReceiver, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    settings = configured(backend_settings, tmp_path, [
        {"name": "primary clinician", "contacts": [{"id": "primary-clinician", "channels": [
            {"kind": "email", "to": "dr.a@hospital.example"}, webhook(f"{receiver.url}/pager")]}]},
    ], port)
    app = EscalationApplication(settings, clock=ManualClock(T0))
    try:
        crisis = raise_crisis(app)

        def crash(*_: object) -> None:
            raise SystemExit("the process stops between sending and recording")

        app.save = crash  # type: ignore[method-assign]
        with pytest.raises(SystemExit):
            app.fire_due_timers()
    finally:
        app.close()
    assert len(receiver.verified()) == 1 and len(inbox.messages) == 1

    restarted = EscalationApplication(settings, clock=ManualClock(T0 + timedelta(minutes=1)))
    try:
        assert restarted.fire_due_timers() == 2
        assert restarted.fire_due_timers() == 0
        events = history(restarted, crisis.id)
    finally:
        restarted.close()
    first, again = receiver.verified()
    assert first.headers["webhook-id"] == again.headers["webhook-id"]
    assert inbox.messages[0]["Message-ID"] == inbox.messages[1]["Message-ID"]
    delivered = [e for e in events if isinstance(e, EscalationNotificationDelivered)]
    assert sorted(str(e.notification_id) for e in delivered) == sorted(
        [again.headers["webhook-id"], inbox.messages[1]["Message-ID"].strip("<>").split("@")[0]])


def test_a_policy_with_a_bad_contact_is_refused_at_start(tmp_path: Path) -> None:
    for levels, expected in [
        ([{"name": "l1", "contacts": [{"id": "a", "channels": [{"kind": "webhook", "url": "http://x.example/", "secret_name": "nope"}]}]}],
         "webhook secret of contact 'a'.*no secret named 'nope'"),
        ([{"name": "l1", "contacts": [{"id": "a", "channels": [{"kind": "webhook", "url": "http://x.example/", "secret": "whsec_"}]}]}],
         "no longer goes in the policy"),
        ([{"name": "l1", "contacts": [{"id": "a", "channels": [{"kind": "email", "to": "nobody"}]}]}], "not an e-mail address"),
        ([{"name": "l1", "contacts": [{"id": "a", "channels": [{"kind": "pager", "to": "x"}]}]}], "pager"),
        ([{"name": "l1", "contacts": [{"id": "a"}, {"id": "a"}]}], "names a contact twice"),
    ]:
        settings = configured(Settings(data_dir=tmp_path / "data"), tmp_path, levels, 25)
        with pytest.raises(ValueError, match=expected):
            EscalationApplication(settings)


async def test_the_running_service_tells_the_next_level_when_the_first_cannot_be_reached(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """The whole path on a real nats-server: a questionnaire with item 9 positive, scored,
    escalated; the service's own timer tick delivers; level 1's pager answers 500, so level
    2 is told at once; every outcome is published and validates against its contract."""
    receiver.answers = {"/pager": [500], "/rota": [200]}
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        with_streams(server)
        settings = configured(Settings(data_dir=tmp_path / "data", nats_url=server.url), tmp_path, [
            {"name": "primary clinician", "contacts": [{"id": "primary-clinician", "channels": [webhook(f"{receiver.url}/pager")]}]},
            {"name": "on-call clinician", "contacts": [{"id": "on-call-rota", "channels": [webhook(f"{receiver.url}/rota")]}]},
        ], free_port())
        care = CareApplication(settings)
        try:
            _, course = start_course(care)
            submit(care, course, "PHQ-9", [1, 1, 1, 1, 1, 1, 1, 1, 2])
            app = EscalationApplication(settings, clock=ManualClock(T0))
            async with (
                InProcessRelay(settings, server.url),
                RunningService(settings, AssessmentApplication(settings), ASSESSMENT_SUBJECTS),
                RunningService(settings, app, SUBJECTS, tick=app.fire_due_timers, tick_interval=0.05),
            ):
                published = await wait_for_messages(server.url, "care.escalation.v1.", 5)
        finally:
            care.close()
    assert [m.subject.rsplit(".", 1)[1] for m in published] == [
        "escalation_raised", "escalation_level_notified", "escalation_notification_failed",
        "escalation_level_notified", "escalation_notification_delivered"]
    bodies = [json.loads(m.body) for m in published]
    for message, body in zip(published, bodies, strict=True):
        event_class = next(c for c in public_event_classes()["crisis"] if event_token(c) == message.subject.rsplit(".", 1)[1])
        jsonschema.validate(body, json.loads((CONTRACTS_DIR / schema_path(event_class)).read_text()))
    assert (bodies[2]["error_class"], bodies[2]["channel"], bodies[2]["contact"]) == ("http_500", "webhook", "primary-clinician")
    assert (bodies[3]["level"], bodies[4]["contact"], bodies[4]["status"]) == (2, "on-call-rota", 200)
    assert [r.path for r in receiver.verified()] == ["/pager", "/pager", "/rota"]
    assert receiver.verified("/rota")[0].headers["webhook-id"] == bodies[4]["notification_id"]
    assert all(body.get("reason") is None for body in bodies[1:])  # only the raised crisis says why


def test_a_service_killed_while_delivering_sends_the_same_notification_after_its_restart(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """kill -9 of a process in the middle of a webhook delivery (the receiver holds the
    request): the restarted service delivers it again with the same webhook-id, and records
    it once."""
    settings = configured(Settings(data_dir=tmp_path / "data"), tmp_path, [
        {"name": "primary clinician", "contacts": [{"id": "primary-clinician", "channels": [webhook(f"{receiver.url}/pager")]}]},
    ], free_port())
    app = EscalationApplication(settings, clock=ManualClock(T0))
    try:
        crisis = raise_crisis(app)
    finally:
        app.close()
    receiver.delays = [60.0]  # the first request is held until the process is gone
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")} | settings.as_environment()
    child = subprocess.Popen([sys.executable, "-c", (
        "from services.escalation.service import EscalationApplication\n"
        "from services.shared.settings import Settings\n"
        "EscalationApplication(Settings()).fire_due_timers()\n")], env=env)
    try:
        deadline = time.monotonic() + 60
        while not receiver.in_flight:
            assert time.monotonic() < deadline and child.poll() is None, "the delivery did not start"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()

    restarted = EscalationApplication(settings, clock=ManualClock(T0 + timedelta(minutes=1)))
    try:
        assert not [e for e in history(restarted, crisis.id) if isinstance(e, EscalationNotificationDelivered)]
        assert restarted.fire_due_timers() == 1
        delivered = [e for e in history(restarted, crisis.id) if isinstance(e, EscalationNotificationDelivered)]
    finally:
        restarted.close()
    first, again = receiver.verified()
    assert first.headers["webhook-id"] == again.headers["webhook-id"] == str(delivered[0].notification_id)
    assert len(delivered) == 1


def test_each_channel_error_is_classed_and_retried_only_when_another_try_may_help(
    tmp_path: Path, receiver: WebhookReceiver, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    new_secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    secrets = secrets_file(tmp_path, {"pager": [new_secret, SECRET]})  # a rotation under way: both sign
    settings = Settings(data_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_from="careplan@hospital.example",
                        smtp_starttls=False, escalation_delivery_attempts=3, escalation_delivery_backoff_seconds=0.1,
                        escalation_secrets_file=secrets)
    notice = Notice(notification_id=uuid.uuid4(), crisis_id=uuid.uuid4(), severity="immediate", level=1,
                    level_name="primary", round=1, acknowledge_by=T0, contact="dr-a", link=None)
    mail = EmailChannel(to="dr.a@hospital.example")

    def hook(path: str) -> WebhookChannel:
        return WebhookChannel(url=f"{receiver.url}{path}", secret_name="pager")  # type: ignore[arg-type]

    def run(channel: WebhookChannel | EmailChannel, on: Settings = settings) -> tuple[Outcome, list[float]]:
        pauses: list[float] = []
        return deliver(channel, notice, on, sleep=pauses.append), pauses

    receiver.answers = {"/busy": [429, 200], "/gone": [410], "/down": [503]}
    receiver.retry_after = {"/busy": "7"}
    outcome, pauses = run(hook("/busy"))
    assert (outcome.ok, outcome.attempts, outcome.status) == (True, 2, 200) and pauses == [7.0]  # Retry-After honoured
    outcome, pauses = run(hook("/gone"))
    assert (outcome.ok, outcome.error_class, outcome.attempts, pauses) == (False, "http_410", 1, [])
    outcome, pauses = run(hook("/down"))
    assert (outcome.error_class, outcome.attempts, len(pauses)) == ("http_503", 3, 2)
    assert 0.05 <= pauses[0] <= 0.1 and 0.1 <= pauses[1] <= 0.2  # doubled, with jitter

    inbox.rcpt_replies = ["451 4.3.0 try again later"]
    outcome, pauses = run(mail)
    assert (outcome.ok, outcome.attempts, outcome.status, len(inbox.messages)) == (True, 2, 250, 1)
    inbox.rcpt_replies = ["550 5.1.1 no such mailbox"]
    outcome, pauses = run(mail)
    assert (outcome.ok, outcome.error_class, outcome.status, outcome.attempts) == (False, "smtp_550", 550, 1)
    outcome, _ = run(mail, settings.model_copy(update={"smtp_starttls": True}))  # aiosmtpd here offers no TLS
    assert (outcome.ok, outcome.error_class, outcome.attempts) == (False, "smtp_starttls_unsupported", 1)
    outcome, _ = run(mail, settings.model_copy(update={"smtp_host": None}))
    assert (outcome.ok, outcome.error_class) == (False, "smtp_not_configured")
