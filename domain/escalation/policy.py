"""An escalation policy, in the manner of on-call escalation policies: ordered levels, an
acknowledgement timeout per severity, escalation to the next level on timeout, looping
after the last. It is configuration (JSON), not code."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.catalogues.escalation import EscalationSeverity


class EscalationLevel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    #: Who is notified at this level: a pseudonymous person or rota id.
    contact: str = Field(min_length=1, max_length=200)


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
