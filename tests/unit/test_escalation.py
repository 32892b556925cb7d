"""Escalation in virtual time: no acknowledgement → next level → loop; acknowledgement stops it."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest
from pydantic import ValidationError

from domain.base import Actor, Role, project
from domain.catalogues.escalation import DeliveryChannel, EscalationSeverity, EscalationTrigger
from domain.errors import NotAuthorisedError, ReasonRequiredError
from domain.escalation.crisis import Crisis, CrisisStatus, EscalationStateError, crisis_id
from domain.escalation.policy import DEFAULT_POLICY, EscalationPolicy
from domain.events.escalation import EscalationLevelNotified, EscalationTimedOut
from tests.conftest import CLINICIAN, SUPERVISOR, T0, ctx

SERVICE = Actor(id="escalation-service", role=Role.SERVICE)
OPERATOR = Actor(id="operator:root@host", role=Role.OPERATOR)
FIVE_MINUTES = timedelta(minutes=5)


def raised(trigger: EscalationTrigger = EscalationTrigger.CSSRS_HIGH_RISK) -> Crisis:
    return Crisis.raise_(
        plan_id=uuid4(), client_id="client-1", trigger=trigger, source_event_id="evt-1",
        reason="C-SSRS screener: plan with intent", policy=DEFAULT_POLICY, ctx=ctx(SERVICE),
    )


def notified_levels(crisis: Crisis) -> list[tuple[int, int]]:
    return [(e.level, e.round) for e in crisis.pending_events if isinstance(e, EscalationLevelNotified)]


def test_raising_notifies_the_first_level_with_the_severitys_deadline() -> None:
    crisis = raised()
    assert crisis.severity is EscalationSeverity.IMMEDIATE
    assert (crisis.level, crisis.round, crisis.ack_due) == (1, 1, T0 + FIVE_MINUTES)
    assert crisis.id == crisis_id("evt-1")
    urgent = raised(EscalationTrigger.PHQ9_SUICIDE_ITEM)
    assert urgent.ack_due == T0 + timedelta(hours=2)


def test_no_acknowledgement_escalates_level_by_level_and_loops_after_the_last() -> None:
    crisis = raised()
    assert not crisis.time_out(policy=DEFAULT_POLICY, ctx=ctx(SERVICE, T0 + FIVE_MINUTES - timedelta(seconds=1)))
    now = T0
    for _ in range(4):
        now += FIVE_MINUTES
        assert crisis.time_out(policy=DEFAULT_POLICY, ctx=ctx(SERVICE, now))
    assert notified_levels(crisis) == [(1, 1), (2, 1), (3, 1), (1, 2), (2, 2)]
    timeouts = [e for e in crisis.pending_events if isinstance(e, EscalationTimedOut)]
    assert [t.level for t in timeouts] == [1, 2, 3, 1]
    assert crisis.ack_due == now + FIVE_MINUTES


def test_acknowledgement_stops_escalation_and_resolution_closes() -> None:
    crisis = raised()
    crisis.time_out(policy=DEFAULT_POLICY, ctx=ctx(SERVICE, T0 + FIVE_MINUTES))
    for who in (SERVICE, CLINICIAN, OPERATOR):  # a supervisor's decision, on every path
        with pytest.raises(NotAuthorisedError, match="Only a supervisor"):
            crisis.acknowledge(reason="seen", ctx=ctx(who))
        with pytest.raises(NotAuthorisedError, match="Only a supervisor"):
            crisis.resolve(outcome="Safe", reason="seen", ctx=ctx(who))
    with pytest.raises(ReasonRequiredError):
        crisis.acknowledge(reason="", ctx=ctx(SUPERVISOR))
    crisis.acknowledge(reason="Called the client; safety plan in place", ctx=ctx(SUPERVISOR, T0 + timedelta(minutes=7)))
    assert crisis.status is CrisisStatus.ACKNOWLEDGED
    assert not crisis.time_out(policy=DEFAULT_POLICY, ctx=ctx(SERVICE, T0 + timedelta(hours=5)))
    with pytest.raises(EscalationStateError):
        crisis.acknowledge(reason="again", ctx=ctx(SUPERVISOR))
    crisis.resolve(outcome="Client safe; follow-up booked", reason="Reviewed in person", ctx=ctx(SUPERVISOR))
    assert crisis.status is CrisisStatus.RESOLVED
    with pytest.raises(EscalationStateError):
        crisis.resolve(outcome="x", reason="y", ctx=ctx(SUPERVISOR))


def test_a_replayed_crisis_keeps_its_timer() -> None:
    """A restart rebuilds the crisis from its events, due time included, so the timer re-arms."""
    crisis = raised()
    crisis.time_out(policy=DEFAULT_POLICY, ctx=ctx(SERVICE, T0 + FIVE_MINUTES))
    replayed = project(None, crisis.collect_events())
    assert replayed.model_dump() == crisis.model_dump()
    assert replayed.ack_due == T0 + 2 * FIVE_MINUTES and replayed.level == 2


def test_the_policy_is_configuration_and_is_checked() -> None:
    policy = EscalationPolicy.model_validate_json(
        '{"levels": [{"name": "duty", "contact": "duty-rota"}],'
        ' "ack_timeouts": {"immediate": "PT2M", "urgent": "PT1H", "review": "P1D", "outreach": "PT8H"}}'
    )
    crisis = Crisis.raise_(
        plan_id=uuid4(), client_id="c", trigger=EscalationTrigger.CLINICIAN_RAISED, source_event_id="e",
        reason="Clinician raised", policy=policy, ctx=ctx(CLINICIAN),
    )
    crisis.time_out(policy=policy, ctx=ctx(SERVICE, T0 + timedelta(minutes=2)))
    assert notified_levels(crisis) == [(1, 1), (1, 2)]  # one level: loops onto itself
    with pytest.raises(ValidationError, match="no acknowledgement timeout for: review, outreach"):
        EscalationPolicy.model_validate({"levels": [{"name": "a", "contact": "b"}], "ack_timeouts": {"immediate": 60, "urgent": 60}})
    with pytest.raises(ValidationError):
        EscalationPolicy.model_validate({"levels": [], "ack_timeouts": {}})


def _deliver(crisis: Crisis, nid: object, *, failed: bool, expected: set, at: timedelta = timedelta(0)) -> str:  # type: ignore[type-arg]
    assert crisis.notified_event_id is not None
    return crisis.record_delivery(
        notification_id=nid, notified_event_id=crisis.notified_event_id, level=crisis.level, round_=crisis.round,  # type: ignore[arg-type]
        contact="someone", channel=DeliveryChannel.WEBHOOK, attempts=3 if failed else 1, latency_ms=12.3,
        status=500 if failed else 200, error_class="http_500" if failed else None, expected=expected,
        policy=DEFAULT_POLICY, ctx=ctx(SERVICE, T0 + at),
    )


def test_a_level_is_passed_at_once_only_when_every_delivery_of_it_failed() -> None:
    crisis = raised()
    a, b = uuid4(), uuid4()
    assert _deliver(crisis, a, failed=True, expected={a, b}) == "failed"  # b may still reach someone
    assert _deliver(crisis, b, failed=False, expected={a, b}) == "delivered"
    assert crisis.level == 1  # somebody was told: the acknowledgement timeout decides

    crisis = raised()
    assert _deliver(crisis, a, failed=True, expected={a, b}) == "failed"
    assert _deliver(crisis, b, failed=True, expected={a, b}, at=timedelta(seconds=3)) == "escalated"
    assert (crisis.level, crisis.round, crisis.ack_due) == (2, 1, T0 + timedelta(seconds=3) + FIVE_MINUTES)
    assert crisis.delivered == crisis.failed == []  # the new notification starts afresh
    c = uuid4()
    assert _deliver(crisis, c, failed=True, expected={c}) == "escalated"
    d = uuid4()
    assert _deliver(crisis, d, failed=True, expected={d}) == "unreached"  # the last level: no next one
    assert crisis.level == 3 and notified_levels(crisis) == [(1, 1), (2, 1), (3, 1)]


def test_a_level_without_channels_waits_for_its_timeout() -> None:
    crisis = raised()
    assert not crisis.level_unreached(set())


def test_an_acknowledged_crisis_is_not_escalated_by_a_late_failure() -> None:
    crisis = raised()
    crisis.acknowledge(reason="Seen", ctx=ctx(SUPERVISOR))
    a = uuid4()
    assert _deliver(crisis, a, failed=True, expected={a}) == "failed"
    assert crisis.status is CrisisStatus.ACKNOWLEDGED and crisis.level == 1


def test_contacts_in_the_policy_name_their_channels() -> None:
    level = {"name": "primary", "contacts": [
        {"id": "dr-a", "channels": [{"kind": "email", "to": "a@h.example"},
                                    {"kind": "webhook", "url": "https://pager.example/x", "secret_name": "pager-a"}]},
        {"id": "dr-b", "channels": []}]}
    policy = EscalationPolicy.model_validate({"levels": [level, {"name": "old style", "contact": "rota"}],
                                              "ack_timeouts": {s.value: "PT5M" for s in EscalationSeverity}})
    first, second = policy.levels
    assert first.contact == "dr-a" and [(c.id, ch.kind.value) for c, ch in first.deliveries()] == [
        ("dr-a", "email"), ("dr-a", "webhook")]
    with pytest.raises(ValidationError, match="no longer goes in the policy"):  # secrets are named, never inline
        EscalationPolicy.model_validate({"levels": [{"name": "x", "contacts": [{"id": "a", "channels": [
            {"kind": "webhook", "url": "https://pager.example/x", "secret": "whsec_abc="}]}]}],
            "ack_timeouts": {s.value: "PT5M" for s in EscalationSeverity}})
    assert second.contact == "rota" and second.deliveries() == []
    with pytest.raises(ValidationError):
        EscalationPolicy.model_validate({"levels": [{"name": "x", "contacts": [{"id": "a b"}]}],
                                         "ack_timeouts": {s.value: "PT5M" for s in EscalationSeverity}})
