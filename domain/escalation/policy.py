"""An escalation policy, in the manner of on-call escalation policies: ordered levels, an
acknowledgement timeout per severity, escalation to the next level on timeout, looping
after the last. It is configuration (JSON), not code."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from domain.catalogues.escalation import DeliveryChannel, EscalationSeverity

_ADDRESS = re.compile(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+\Z")


class WebhookChannel(BaseModel):
    """A signed POST (Standard Webhooks) to a pager or an EHR in-basket."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal[DeliveryChannel.WEBHOOK] = DeliveryChannel.WEBHOOK
    url: HttpUrl
    #: The name of the Standard Webhooks secret shared with the receiver, in the escalation
    #: secrets file (``CAREPLAN_ESCALATION_SECRETS_FILE``): the policy holds no secret.
    secret_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and "secret" in data:
            msg = ("a webhook secret no longer goes in the policy: put it in the escalation secrets file "
                   "(CAREPLAN_ESCALATION_SECRETS_FILE) under a name and write \"secret_name\": that name")
            raise ValueError(msg)
        return data

    @property
    def key(self) -> str:
        return f"webhook:{self.url}"


class EmailChannel(BaseModel):
    """An e-mail over SMTP (``CAREPLAN_SMTP_*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal[DeliveryChannel.EMAIL] = DeliveryChannel.EMAIL
    to: str = Field(min_length=3, max_length=254)

    @field_validator("to")
    @classmethod
    def _an_address(cls, value: str) -> str:
        if not _ADDRESS.match(value):
            msg = "not an e-mail address"
            raise ValueError(msg)
        return value

    @property
    def key(self) -> str:
        return f"email:{self.to.lower()}"


Channel = Annotated[WebhookChannel | EmailChannel, Field(discriminator="kind")]


class Contact(BaseModel):
    """Someone (or a rota) a level notifies, by pseudonymous id, and how they are told."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._:@-]+$")
    channels: list[Channel] = Field(default_factory=list, max_length=10)


class EscalationLevel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    #: Who is notified at this level: a pseudonymous person or rota id (the first contact's,
    #: when ``contacts`` are given).
    contact: str = Field(min_length=1, max_length=200)
    #: Who is told, and how: each channel of each contact is delivered to when the level is
    #: notified. None: the level's notification is recorded and reaches no one by itself.
    contacts: list[Contact] = Field(default_factory=list, max_length=20)

    @model_validator(mode="before")
    @classmethod
    def _contact_from_contacts(cls, data: Any) -> Any:
        if isinstance(data, dict) and "contact" not in data and data.get("contacts"):
            first = data["contacts"][0]
            return {**data, "contact": first.get("id") if isinstance(first, dict) else getattr(first, "id", None)}
        return data

    @model_validator(mode="after")
    def _contacts_unique(self) -> EscalationLevel:
        ids = [c.id for c in self.contacts]
        if len(set(ids)) != len(ids):
            msg = f"level {self.name!r} names a contact twice"
            raise ValueError(msg)
        return self

    def deliveries(self) -> list[tuple[Contact, WebhookChannel | EmailChannel]]:
        """Every (contact, channel) this level delivers to, in the order configured."""
        return [(contact, channel) for contact in self.contacts for channel in contact.channels]


class EscalationPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    levels: list[EscalationLevel] = Field(min_length=1)
    ack_timeouts: dict[EscalationSeverity, timedelta]

    @model_validator(mode="after")
    def _every_severity_has_a_positive_timeout(self) -> EscalationPolicy:
        missing = [s.value for s in EscalationSeverity if s not in self.ack_timeouts]
        if missing:
            msg = f"the policy gives no acknowledgement timeout for: {', '.join(missing)}"
            raise ValueError(msg)
        if any(t <= timedelta(0) for t in self.ack_timeouts.values()):
            msg = "acknowledgement timeouts must be positive"
            raise ValueError(msg)
        return self

    def level(self, index: int) -> EscalationLevel:
        return self.levels[index % len(self.levels)]


DEFAULT_POLICY = EscalationPolicy(
    levels=[
        EscalationLevel(name="primary clinician", contact="primary-clinician"),
        EscalationLevel(name="on-call clinician", contact="on-call-rota"),
        EscalationLevel(name="crisis team lead", contact="crisis-team-lead"),
    ],
    ack_timeouts={
        EscalationSeverity.IMMEDIATE: timedelta(minutes=5),
        EscalationSeverity.URGENT: timedelta(hours=2),
        EscalationSeverity.REVIEW: timedelta(hours=24),
        EscalationSeverity.OUTREACH: timedelta(hours=8),
    },
)
