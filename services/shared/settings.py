"""One settings object, read from ``CAREPLAN_*`` environment variables at the edge and
passed inward. Nothing below the CLI reads the environment."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CAREPLAN_", extra="ignore")

    #: Where SQLite files (and, later, the embedded NATS store) live.
    data_dir: Path = Path("careplan-data")
    #: ``sqlite`` (embedded default) or ``postgres`` (production).
    database: Literal["sqlite", "postgres"] = "sqlite"

    postgres_host: str = "127.0.0.1"
    postgres_port: int = 5432
    postgres_user: str = "careplan"
    postgres_password: SecretStr = SecretStr("")
    postgres_dbname: str = "careplan"
    #: Each application gets its own schema, named ``<prefix>_<application>``.
    postgres_schema_prefix: str = "careplan"
    postgres_pool_size: int = Field(default=5, ge=1)

    #: Base64 AES key (16, 24 or 32 bytes). When set, stored event state is encrypted.
    cipher_key: SecretStr | None = None
    #: Per-client data keys (issue 16, docs/data-protection.md): every stored event of a client
    #: is encrypted under that client's key, which erasure destroys. The key-encryption key's
    #: file (made on first use; unset: ``<data_dir>/client-keys.kek``; give every process the
    #: same) and how many unwrapped keys a process keeps in memory.
    client_keys: bool = True
    client_kek_file: Path | None = None
    client_key_cache_size: int = Field(default=10_000, ge=1)
    #: An erasure request must be confirmed by a second supervisor within this many hours.
    erasure_confirm_hours: float = Field(default=24.0, gt=0)
    #: Take a snapshot every N events of an aggregate (0 disables snapshots).
    snapshot_interval: int = Field(default=200, ge=0)
    #: Aggregates kept in memory per application (0 disables the cache).
    aggregate_cache_size: int = Field(default=1000, ge=0)

    #: NATS server or cluster (comma-separated URLs). Unset: `careplan up` starts an embedded one.
    nats_url: str | None = None
    #: JSON file of NATS passwords per user (deploy/nats/permissions.conf); set: `careplan up`
    #: runs its NATS server with those permissions and each process as its own user.
    nats_passwords_file: Path | None = None
    #: JetStream stream that carries every careplan event (subjects ``care.>``).
    stream_name: str = "CARE"
    #: 1 on one machine, 3 in a cluster.
    stream_replicas: int = Field(default=1, ge=1, le=5)
    #: Retention of the stream in days (0: keep everything; the event store stays the record).
    stream_max_age_days: float = Field(default=0, ge=0)
    #: JetStream de-duplication window; a relay restarted within it never doubles a message.
    stream_duplicate_window_seconds: float = Field(default=7200, ge=3600)
    #: Publishes the relay keeps in flight before it waits for acknowledgements.
    relay_window: int = Field(default=512, ge=1, le=10_000)
    #: Notifications read from the store per query.
    relay_batch: int = Field(default=256, ge=1, le=10_000)
    #: Seconds between polls of the notification log when idle (PostgreSQL is also woken by NOTIFY).
    relay_poll_interval: float = Field(default=0.01, gt=0)
    #: Seconds to wait for one PubAck before the relay treats the bus as unavailable.
    relay_ack_timeout: float = Field(default=5.0, gt=0)
    #: A relay that caught up after publishing says so (a watermark on the stream) at most
    #: this often; with nothing to publish, every ``relay_watermark_heartbeat`` seconds.
    relay_watermark_interval: float = Field(default=1.0, gt=0)
    relay_watermark_heartbeat: float = Field(default=30.0, gt=0)
    #: Seconds between a relay's checks that its store still agrees with what it published
    #: (and, while halted on a disagreement, between checks whether it was mended).
    relay_check_interval: float = Field(default=5.0, gt=0)

    #: Seconds between publications of a store's hash-chain head (audit.careplan.v1.chain.<store>).
    chain_head_interval: float = Field(default=60.0, gt=0)

    #: JSON file with the escalation policy (levels, acknowledgement timeouts); unset: the default policy.
    escalation_policy_file: Path | None = None
    #: JSON file of the escalation's webhook secrets by name (``{"pager-a": "whsec_..."}``, or a
    #: list, current first, while a rotation is under way: each signs); read again when it changes.
    escalation_secrets_file: Path | None = None
    #: Seconds between checks of the services' durable timers (escalation's acknowledgement
    #: deadlines, scheduling's missed slots). ``CAREPLAN_ESCALATION_TICK_SECONDS``, its name
    #: before scheduling had timers too, is still read.
    timer_tick_seconds: float = Field(
        default=0.5, gt=0,
        validation_alias=AliasChoices("timer_tick_seconds", "CAREPLAN_TIMER_TICK_SECONDS", "escalation_tick_seconds",
                                      "CAREPLAN_ESCALATION_TICK_SECONDS"),
    )

    #: Partitions of each service's consumer (docs/operations.md, "Two instances of a service"):
    #: 0 runs one durable consumer per service with one active instance (the others wait);
    #: P > 1 splits each service's messages by aggregate id into P durable consumers
    #: (``<service>-p<k>``) that the running instances share out between them.
    consumer_partitions: int = Field(default=0, ge=0, le=16)
    #: Processes `careplan up` runs of each service (``CAREPLAN_SERVICE_INSTANCES``): above 1,
    #: they share each partitionable service's work (with ``consumer_partitions``, 8 unless
    #: set); a service that cannot be partitioned (subscriptions) runs once.
    service_instances: int = Field(default=1, ge=1, le=8)

    #: Escalation notifications to the policy's contacts (docs/operations.md, "Contacts and
    #: channels"): attempts per delivery (a short bounded retry, then the next level is
    #: notified at once), the wait of one attempt, and the first pause between attempts
    #: (doubled each time, with jitter).
    escalation_delivery_attempts: int = Field(default=3, ge=1, le=10)
    escalation_delivery_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    escalation_delivery_backoff_seconds: float = Field(default=0.5, ge=0, le=60)
    #: Where people open a crisis, as a URL with ``{crisis_id}`` in it (e.g. the hospital
    #: portal's page for it): every notification carries it filled in. Unset: ids only.
    escalation_link_template: str | None = Field(default=None, pattern=r"^https?://\S*\{crisis_id\}\S*$")

    #: E-mail to escalation contacts: the SMTP server (unset: e-mail channels fail, and the
    #: next level is notified), its port, the account (optional), the sender, and whether
    #: the connection is upgraded with STARTTLS (refused when the server cannot).
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_starttls: bool = True

    #: The caseload marks questionnaires overdue when an active course has had no PHQ-9 or
    #: GAD-7 answered for this many weeks (counted from the course's start before the first).
    views_overdue_weeks: float = Field(default=2, gt=0, le=520)
    #: Seconds between the views process's catch-ups when idle (`careplan views run`).
    views_poll_interval: float = Field(default=0.5, gt=0)

    #: JSON file of API tokens (their SHA-256 digests and roles); `careplan api add-token` writes it.
    #: Unset: ``<data_dir>/api-tokens.json``.
    api_tokens_file: Path | None = None
    api_host: str = "127.0.0.1"
    #: 0: `careplan up` picks a free port (and keeps it across restarts of the API process).
    api_port: int = Field(default=0, ge=0, le=65535)
    #: API processes sharing the port (uvicorn workers); 1 serves from the `api` process itself.
    api_workers: int = Field(default=1, ge=1, le=64)
    #: The largest request body the API reads (bytes); a larger one is refused with 413 before
    #: routing, authentication or parsing (services/api/body_limit.py).
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: JSON file in which `careplan up` keeps each child process's state (running, restarting,
    #: crash-looping, restarts); it sets this for its children, and the API's /readyz reads it.
    supervisor_file: Path | None = None

    #: Subscriptions (issue 14, docs/integration.md): the key file from which every
    #: subscription's signing secret is derived and its headers sealed (made on first use;
    #: unset: ``<data_dir>/subscriptions.key``; give every API and service process the same).
    subscriptions_key_file: Path | None = None
    #: How long a subscription's deliveries are retried before it goes to ``error`` (hours).
    subscription_retry_hours: float = Field(default=24.0, gt=0)
    #: Seconds one delivery may take (a kind's subscription may ask for less).
    subscription_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    #: Backoff between retries: the first wait, doubled each time up to the cap (seconds), with full jitter.
    subscription_backoff_seconds: float = Field(default=1.0, gt=0)
    subscription_backoff_max_seconds: float = Field(default=300.0, gt=0)
    #: Requests in flight at once across all subscriptions (each subscription still sends
    #: one at a time, in order); also the size of the shared HTTP connection pool.
    subscription_delivery_concurrency: int = Field(default=32, ge=1, le=1000)
    #: After a secret is rotated, the previous one still signs for this long (hours).
    subscription_secret_grace_hours: float = Field(default=24.0, ge=0)
    #: The silent-failure alarm: a subscription with events waiting and no successful
    #: delivery for this long (seconds), or one in ``error``.
    alarm_subscription_seconds: float = Field(default=900.0, gt=0)

    #: Alarms (docs/operations.md, Alarms): a risk signal recorded and not escalated within
    #: this many seconds (watched by the API process) ...
    alarm_risk_signal_seconds: float = Field(default=60.0, gt=0)
    #: ... a relay with unpublished events that has not advanced for this long ...
    alarm_relay_seconds: float = Field(default=30.0, gt=0)
    #: ... a service with messages waiting that has processed none for this long.
    alarm_consumer_seconds: float = Field(default=60.0, gt=0)
    #: Seconds between a relay's checks of the live stream configuration against its own.
    alarm_stream_check_seconds: float = Field(default=30.0, gt=0)
    #: Seconds between the alarm checks themselves (the risk watchdog's reads, the relay's
    #: and the consumer's progress checks).
    alarm_check_seconds: float = Field(default=1.0, gt=0)

    #: Retention (issue 16, docs/data-protection.md): a client whose plans have all ended
    #: (completed or revoked) more than this many days ago, with no open plan and no legal
    #: hold, is erased by `careplan retention run` and by the daily run of `careplan up`.
    #: 0: no retention period (nothing is erased for age); e.g. 7305 for 20 years.
    retention_days: int = Field(default=0, ge=0)
    #: Hours between the retention runs of `careplan up` (the first runs a minute after start).
    retention_interval_hours: float = Field(default=24.0, gt=0)

    def as_environment(self) -> dict[str, str]:
        """These settings as the CAREPLAN_* variables that give a child process the same."""
        env = {}
        for name, value in self.model_dump().items():
            if value is None:
                continue
            if hasattr(value, "get_secret_value"):
                value = value.get_secret_value()
            env[f"CAREPLAN_{name.upper()}"] = str(value)
        return env

    def subscriptions_key_path(self) -> Path:
        return self.subscriptions_key_file or self.data_dir / "subscriptions.key"

    def tokens_path(self) -> Path:
        return self.api_tokens_file or self.data_dir / "api-tokens.json"

    def sqlite_path(self, application: str) -> Path:
        return self.data_dir / f"{application.lower()}.sqlite"

    def postgres_schema(self, application: str) -> str:
        return f"{self.postgres_schema_prefix}_{application.lower()}"
