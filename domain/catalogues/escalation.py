"""Escalation vocabulary (DOMAIN.md, "Crisis escalation"): triggers and their severity."""

from __future__ import annotations

from enum import Enum

from domain.catalogues.risk import RiskLevel


class EscalationSeverity(str, Enum):
    IMMEDIATE = "immediate"  # C-SSRS high risk, a clinician raising a crisis, a risk signal that could not be processed
    URGENT = "urgent"  # PHQ-9 item 9 above 0: review within 24 h
    REVIEW = "review"  # reliable deterioration
    OUTREACH = "outreach"  # a missed session while risk is high or imminent


class DeliveryChannel(str, Enum):
    """How a contact of the escalation policy is told (issue 14)."""

    WEBHOOK = "webhook"  # a Standard Webhooks signed POST: a pager, an EHR in-basket
    EMAIL = "email"  # e-mail over SMTP (CAREPLAN_SMTP_*)


class EscalationTrigger(str, Enum):
    PHQ9_SUICIDE_ITEM = "phq9_suicide_item"
    CSSRS_HIGH_RISK = "cssrs_high_risk"
    UNSCORABLE_WITH_RISK_SIGNAL = "unscorable_with_risk_signal"
    RELIABLE_DETERIORATION = "reliable_deterioration"
    MISSED_SESSION_AT_HIGH_RISK = "missed_session_at_high_risk"
    CLINICIAN_RAISED = "clinician_raised"
    #: Fail-safe: a message that may carry a risk signal could not be processed by a service
    #: (after its retries); a person must look at it.
    UNPROCESSABLE_RISK_SIGNAL = "unprocessable_risk_signal"


SEVERITY_OF: dict[EscalationTrigger, EscalationSeverity] = {
    EscalationTrigger.PHQ9_SUICIDE_ITEM: EscalationSeverity.URGENT,
    # Fail-safe: answers that could not be scored but carry a risk signal are treated as PHQ-9 item 9.
    EscalationTrigger.UNSCORABLE_WITH_RISK_SIGNAL: EscalationSeverity.URGENT,
    EscalationTrigger.CSSRS_HIGH_RISK: EscalationSeverity.IMMEDIATE,
    EscalationTrigger.CLINICIAN_RAISED: EscalationSeverity.IMMEDIATE,
    EscalationTrigger.UNPROCESSABLE_RISK_SIGNAL: EscalationSeverity.IMMEDIATE,
    EscalationTrigger.RELIABLE_DETERIORATION: EscalationSeverity.REVIEW,
    EscalationTrigger.MISSED_SESSION_AT_HIGH_RISK: EscalationSeverity.OUTREACH,
}

#: Severities that make a crisis of the care plan: its risk level rises to this level and
#: emergency support is activated. Review and outreach escalations notify, and do not.
CRISIS_RISK_LEVEL: dict[EscalationSeverity, RiskLevel] = {
    EscalationSeverity.IMMEDIATE: RiskLevel.HIGH,
    EscalationSeverity.URGENT: RiskLevel.MODERATE,
}
