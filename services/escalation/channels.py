"""Telling a person: one escalation notification delivered to one channel of one contact,
a Standard Webhooks signed POST (``standardwebhooks``) or an e-mail over SMTP (``smtplib``),
with a short bounded retry.

What is sent names ids, the severity and the deadline (and a link, when
``CAREPLAN_ESCALATION_LINK_TEMPLATE`` is set), never what the crisis is about: no reason
text, no answers, no client id. The notification id is the delivery's identity: the same
on every attempt and after a restart (``webhook-id``, the mail's ``Message-ID``), so a
receiver that gets it twice knows it is one notification.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from uuid import UUID, uuid5

import httpx
from standardwebhooks import Webhook

from domain.escalation.policy import EmailChannel, WebhookChannel
from services.escalation.secrets import SecretsError, escalation_secrets
from services.shared.retry import backoff, retry_after_seconds, worth_retrying
from services.shared.settings import Settings

NOTIFICATION_NAMESPACE = UUID("5b0e7c1a-3f8d-4a62-9e47-2c9d8b1f6a03")
#: The longest pause between two attempts whatever a receiver's Retry-After asks: the
#: retry is short so that the next level is told soon.
MAX_PAUSE_SECONDS = 30.0


def notification_id(notified_event_id: UUID, contact: str, channel: WebhookChannel | EmailChannel) -> UUID:
    """The id of one delivery of one notification: derived, so stable across retries and restarts."""
    return uuid5(NOTIFICATION_NAMESPACE, f"{notified_event_id}:{contact}:{channel.key}")


@dataclass(frozen=True)
class Notice:
    """What a person is told: ids, the severity, the deadline. No clinical text."""

    notification_id: UUID
    crisis_id: UUID
    severity: str
    level: int
    level_name: str
    round: int
    acknowledge_by: datetime
    contact: str
    link: str | None

    def body(self) -> bytes:
        """The webhook's JSON body: these bytes are signed and sent as they are."""
        fields = asdict(self)
        fields = {k: str(v) if isinstance(v, UUID) else v for k, v in fields.items()}
        fields["acknowledge_by"] = self.acknowledge_by.astimezone(UTC).isoformat()
        return json.dumps({"type": "careplan.escalation.notification", **fields}, separators=(",", ":")).encode()

    def subject(self) -> str:
        return f"careplan: {self.severity} escalation, acknowledge by {self._deadline()}"

    def text(self) -> str:
        lines = [
            "A crisis in careplan needs acknowledgement.",
            "",
            f"Crisis: {self.crisis_id}",
            f"Severity: {self.severity}",
            f"Level: {self.level} ({self.level_name}), round {self.round}",
            f"Acknowledge by: {self._deadline()}",
        ]
        if self.link:
            lines.append(f"Open: {self.link}")
        lines += [
            f"Notification: {self.notification_id}",
            "",
            "This message carries ids only. Open the crisis in careplan to see what it concerns,",
            "and acknowledge it there (careplan escalation ack, or POST /escalations/<id>/acknowledge).",
        ]
        return "\n".join(lines) + "\n"

    def _deadline(self) -> str:
        return self.acknowledge_by.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Attempt:
    """One try: delivered, or an error class and whether another try may help."""

    ok: bool
    status: int | None = None
    error_class: str | None = None
    retry: bool = False
    retry_after: float | None = None


@dataclass(frozen=True)
class Outcome:
    """A delivery after its attempts: what is recorded."""

    ok: bool
    status: int | None
    error_class: str | None
    attempts: int
    latency_ms: float


def deliver(channel: WebhookChannel | EmailChannel, notice: Notice, settings: Settings, *,
            sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Delivers ``notice`` with up to ``escalation_delivery_attempts`` attempts, pausing with
    exponential backoff and jitter (or the receiver's Retry-After, bounded) between them."""
    started = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        if isinstance(channel, WebhookChannel):
            result = _post(channel, notice, settings)
        else:
            result = _mail(channel, notice, settings)
        if result.ok or not result.retry or attempts >= settings.escalation_delivery_attempts:
            break
        pause = backoff(attempts, settings.escalation_delivery_backoff_seconds)
        if result.retry_after is not None:
            pause = max(pause, result.retry_after)
        sleep(min(pause, MAX_PAUSE_SECONDS))
    return Outcome(ok=result.ok, status=result.status, error_class=result.error_class, attempts=attempts,
                   latency_ms=(time.monotonic() - started) * 1000)


# ---------------------------------------------------------------------- webhook


def signed_headers(secrets: tuple[str, ...], notice: Notice, body: bytes, now: datetime) -> dict[str, str]:
    """Standard Webhooks headers over the exact body bytes sent: one signature per secret
    (several while a rotation is under way, the current first)."""
    msg_id = str(notice.notification_id)
    signature = " ".join(Webhook(secret).sign(msg_id, now, body.decode()) for secret in secrets)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def _post(channel: WebhookChannel, notice: Notice, settings: Settings) -> Attempt:
    body = notice.body()
    # Signed with the wall clock: the receiver checks the timestamp against its own.
    try:
        secrets = escalation_secrets(settings).of(channel.secret_name)
    except SecretsError:
        return Attempt(ok=False, error_class="secret_missing")
    headers = signed_headers(secrets, notice, body, datetime.now(tz=UTC))
    try:
        with httpx.Client(timeout=settings.escalation_delivery_timeout_seconds, follow_redirects=False) as client:
            response = client.post(str(channel.url), content=body, headers=headers)
    except httpx.TimeoutException:
        return Attempt(ok=False, error_class="timeout", retry=True)
    except httpx.TransportError:
        return Attempt(ok=False, error_class="connection_error", retry=True)
    code = response.status_code
    if 200 <= code < 300:
        return Attempt(ok=True, status=code)
    retry_after = retry_after_seconds(response.headers.get("retry-after")) if code in (429, 503) else None
    return Attempt(ok=False, status=code, error_class=f"http_{code}", retry=worth_retrying(code),
                   retry_after=retry_after)


# ---------------------------------------------------------------------- e-mail


def message(channel: EmailChannel, notice: Notice, settings: Settings) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = settings.smtp_from or ""
    mail["To"] = channel.to
    mail["Subject"] = notice.subject()
    mail["Date"] = format_datetime(datetime.now(tz=UTC))
    mail["Message-ID"] = f"<{notice.notification_id}@careplan>"
    mail["X-Careplan-Crisis"] = str(notice.crisis_id)
    mail.set_content(notice.text())
    return mail


def _mail(channel: EmailChannel, notice: Notice, settings: Settings) -> Attempt:
    if not settings.smtp_host or not settings.smtp_from:
        return Attempt(ok=False, error_class="smtp_not_configured")
    mail = message(channel, notice, settings)
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port,
                          timeout=settings.escalation_delivery_timeout_seconds) as smtp:
            if settings.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_username:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                smtp.login(settings.smtp_username, password)
            smtp.send_message(mail)
    except smtplib.SMTPRecipientsRefused as e:
        codes = [code for code, _ in e.recipients.values()]
        code = codes[0] if codes else None
        return _smtp_reply(code)
    except smtplib.SMTPNotSupportedError:
        return Attempt(ok=False, error_class="smtp_starttls_unsupported")
    except smtplib.SMTPResponseException as e:
        return _smtp_reply(e.smtp_code)
    except (TimeoutError, smtplib.SMTPServerDisconnected) as e:
        return Attempt(ok=False, error_class="timeout" if isinstance(e, TimeoutError) else "connection_error", retry=True)
    except ssl.SSLError:
        return Attempt(ok=False, error_class="tls_error")
    except OSError:
        return Attempt(ok=False, error_class="connection_error", retry=True)
    return Attempt(ok=True, status=250)


def _smtp_reply(code: int | None) -> Attempt:
    """A refusal: 4xx is temporary (tried again), 5xx permanent."""
    if code is None:
        return Attempt(ok=False, error_class="smtp_refused", retry=True)
    return Attempt(ok=False, status=code, error_class=f"smtp_{code}", retry=400 <= code < 500)
