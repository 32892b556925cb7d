"""Escalation in virtual time: no acknowledgement → next level → loop; acknowledgement stops it."""

from __future__ import annotations

from datetime import timedelta
from uuid import uuid4

import pytest
from pydantic import ValidationError

from domain.base import Actor, Role, project
from domain.catalogues.escalation import EscalationSeverity, EscalationTrigger
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
