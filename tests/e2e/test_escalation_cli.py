"""`careplan escalation list|ack|resolve`: through the API with a token, or --local as the operator;
and the escalation service's decisions."""

from __future__ import annotations

import getpass
import socket
from datetime import datetime
from pathlib import Path
from uuid import UUID, uuid4

from domain.base import Actor, CommandContext, DomainEvent, Role
from domain.catalogues.escalation import EscalationTrigger
from domain.escalation.crisis import Crisis, CrisisStatus
from domain.events.care_plan import CrisisRaisedByClinician, RiskLevelLowered, RiskLevelRaised
from domain.events.scheduling import SessionAttendanceCorrected, SessionMissed
from services.escalation.service import EscalationApplication, triggers_of
from services.shared.cloudevents import Inbound
from services.shared.settings import Settings
from tests.conftest import T0
from tests.support.reactions import event_of, inbound_of
from tests.support.served import add_token, careplan, environment, serving


def test_a_clinician_raising_a_crisis_escalates_immediately() -> None:
    inbound = inbound_of(event_of(CrisisRaisedByClinician, actor=Actor(id="clinician-17", role=Role.CLINICIAN),
                                  reason="Disclosed a plan", client_id="c-1"), position=7)
    ((trigger, reason),) = triggers_of(inbound)
    assert trigger is EscalationTrigger.CLINICIAN_RAISED
    assert "clinician-17" in reason and "Disclosed a plan" in reason


def _open_crisis(settings: Settings) -> Crisis:
    app = EscalationApplication(settings)
    crisis = Crisis.raise_(
        plan_id=uuid4(), client_id="client-9", trigger=EscalationTrigger.CSSRS_HIGH_RISK, source_event_id="evt-9",
        reason="C-SSRS high", policy=app.policy,
        ctx=CommandContext(actor=Actor(id="escalation-service", role=Role.SERVICE), at=T0, correlation_id=uuid4()),
    )
    app.save(crisis)
    app.close()
    return crisis


def _decisions(settings: Settings, crisis_id: UUID) -> list[tuple[str, Actor]]:
    """Who decided what on the crisis (the escalation service's own events left out)."""
    app = EscalationApplication(settings)
    try:
        return [(type(e).__name__, e.actor) for e in app.repository.event_store.get(crisis_id)
                if e.actor.role is not Role.SERVICE]
    finally:
        app.close()


def test_list_acknowledge_and_resolve_through_the_api_as_the_tokens_supervisor(tmp_path: Path) -> None:
    """The CLI acts through the API with a token: the recorded actor is the token's, a
    clinician's token is refused (403), and --actor can no longer forge who acknowledged."""
    settings = Settings(data_dir=tmp_path)
    crisis = _open_crisis(settings)
    env = environment(tmp_path)
    supervisor = add_token(env, "sup-3", "supervisor", "--client", "client-9")
    clinician = add_token(env, "clin-17", "clinician", "--client", "client-9")
    (tmp_path / "sup.token").write_text(supervisor + "\n")
    forged = careplan("escalation", "ack", str(crisis.id), "--reason", "seen", "--actor", "sup-1", "--role",
                      "supervisor", env=env)
    assert forged.returncode == 2 and "--actor/--role are gone" in forged.stdout and "token" in forged.stdout
    untokened = careplan("escalation", "ack", str(crisis.id), "--reason", "seen", env=env)
    assert untokened.returncode == 2 and "give your token" in untokened.stdout
    with serving(tmp_path) as api:
        listed = careplan("escalation", "list", "--api", api, "--token", clinician, env=env)
        assert listed.returncode == 0 and str(crisis.id) in listed.stdout and "immediate" in listed.stdout
        refused = careplan("escalation", "ack", str(crisis.id), "--reason", "seen", "--api", api, env=env | {
            "CAREPLAN_API_TOKEN": clinician})
        assert refused.returncode == 1 and "403" in refused.stdout
        assert _decisions(settings, crisis.id) == []
        acked = careplan("escalation", "ack", str(crisis.id), "--reason", "Called the client", "--api", api,
                         "--token", supervisor, env=env)
        assert acked.returncode == 0 and "acknowledged" in acked.stdout, acked.stdout + acked.stderr
        resolved = careplan("escalation", "resolve", str(crisis.id), "--outcome", "Safe", "--reason", "Reviewed",
                            "--api", api, "--token-file", str(tmp_path / "sup.token"), env=env)
        assert resolved.returncode == 0 and "resolved" in resolved.stdout
    who = Actor(id="sup-3", role=Role.SUPERVISOR)
    assert _decisions(settings, crisis.id) == [("EscalationAcknowledged", who), ("CrisisResolved", who)]
    after = EscalationApplication(settings)
    try:
        assert after.find_crisis_status(crisis.id) is CrisisStatus.RESOLVED
        assert after.open_crises() == []
    finally:
        after.close()


def test_the_operator_at_the_machine_is_recorded_as_such_and_may_not_acknowledge(tmp_path: Path) -> None:
    """--local: the stores directly, as the operating-system user in the role operator;
    acknowledging and resolving stay a supervisor's, so nothing is written."""
    settings = Settings(data_dir=tmp_path)
    crisis = _open_crisis(settings)
    env = environment(tmp_path)
    listed = careplan("escalation", "list", "--local", env=env)
    assert listed.returncode == 0 and str(crisis.id) in listed.stdout
    me = f"operator:{getpass.getuser()}@{socket.gethostname()}"
    for args in (["ack", str(crisis.id), "--reason", "seen"],
                 ["resolve", str(crisis.id), "--outcome", "Safe", "--reason", "Reviewed"]):
        refused = careplan("escalation", *args, "--local", env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert me in refused.stdout and "acted as operator" in refused.stdout and "supervisor" in refused.stdout
    assert _decisions(settings, crisis.id) == []
    assert careplan("escalation", "ack", str(crisis.id), "--reason", "x", "--local", "--actor", "sup-1",
                    env=env).returncode == 2


_EVENTS: dict[str, type[DomainEvent]] = {
    "session_missed": SessionMissed,
    "session_attendance_corrected": SessionAttendanceCorrected,
    "risk_level_raised": RiskLevelRaised,
    "risk_level_lowered": RiskLevelLowered,
}
#: What the tests below leave out of each event because the decision does not read it.
_UNREAD: dict[str, dict[str, object]] = {
    "session_missed": {"missed_after": "2026-03-31T00:00:00Z"},
    "risk_level_raised": {"previous_level": "low", "reason": "Reviewed in session"},
    "risk_level_lowered": {"previous_level": "high", "reason": "Reviewed in session"},
}


def _inbound(event: str, aggregate_id: str, body: dict[str, object], sequence: int) -> Inbound:
    fields = {**_UNREAD.get(event, {}), **body}
    at = datetime.fromisoformat(str(fields.pop("timestamp")))
    cls = _EVENTS[event]
    known = {name: value for name, value in fields.items() if name in cls.model_fields}  # as a consumer reads it
    return inbound_of(event_of(cls, originator_id=UUID(aggregate_id), at=at, **known), position=sequence)


def crises(aggregates: object) -> list[Crisis]:
    return [a for a in aggregates if isinstance(a, Crisis)]  # type: ignore[attr-defined]


def test_a_missed_session_escalates_outreach_only_while_risk_is_high(tmp_path: Path) -> None:
    app = EscalationApplication(Settings(data_dir=tmp_path))

    def decide(event: str, aggregate_id: str, body: dict[str, object], sequence: int, at: str) -> list[Crisis]:
        decided = app.decide(_inbound(event, aggregate_id, {**body, "timestamp": at}, sequence))
        for aggregate in decided:
            app.save(aggregate)
        return crises(decided)

    try:
        plan, course = str(uuid4()), str(uuid4())
        missed = {"plan_id": plan, "course_id": course, "client_id": "client-2", "kind": "session",
                  "starts_at": "2026-03-16T10:00:00Z"}
        assert decide("session_missed", str(uuid4()), {**missed, "number": 1}, 1, "2026-03-17T10:00:00Z") == []
        assert decide("risk_level_raised", plan, {"level": "moderate"}, 2, "2026-03-18T09:00:00Z") == []
        assert decide("risk_level_raised", plan, {"level": "high"}, 3, "2026-03-18T10:00:00Z") == []
        (crisis,) = decide("session_missed", str(uuid4()), {**missed, "number": 3}, 4, "2026-03-19T10:00:00Z")
        assert [c.id for c in app.open_crises()] == [crisis.id]  # the plan's risk record is not a crisis
        assert crisis.trigger is EscalationTrigger.MISSED_SESSION_AT_HIGH_RISK and crisis.severity.value == "outreach"
        assert decide("risk_level_lowered", plan, {"level": "low"}, 5, "2026-03-20T10:00:00Z") == []
        assert decide("session_missed", str(uuid4()), {**missed, "number": 5}, 6, "2026-03-21T10:00:00Z") == []
    finally:
        app.close()


def test_a_missed_session_read_before_the_risk_raised_before_it_is_still_escalated(tmp_path: Path) -> None:
    """Messages from two services arrive in any order: the risk in force when the session
    was missed decides, whichever is read first."""
    app = EscalationApplication(Settings(data_dir=tmp_path))

    def decide(event: str, aggregate_id: str, body: dict[str, object], sequence: int, at: str) -> list[Crisis]:
        decided = app.decide(_inbound(event, aggregate_id, {**body, "timestamp": at}, sequence))
        for aggregate in decided:
            app.save(aggregate)
        return crises(decided)

    try:
        plan, course, session_missed = str(uuid4()), str(uuid4()), str(uuid4())
        missed = {"plan_id": plan, "course_id": course, "client_id": "client-2", "kind": "session", "number": 2,
                  "starts_at": "2026-03-16T10:00:00Z"}
        # missed at 10:05 while risk was high since 10:00; the care relay was slower than scheduling's
        assert decide("session_missed", session_missed, missed, 1, "2026-03-17T10:05:00Z") == []
        (crisis,) = decide("risk_level_raised", plan, {"level": "high"}, 2, "2026-03-17T10:00:00Z")
        assert crisis.trigger is EscalationTrigger.MISSED_SESSION_AT_HIGH_RISK
        # a change that came after the miss leaves it alone; the same miss is never escalated twice
        assert decide("risk_level_lowered", plan, {"level": "low"}, 3, "2026-03-17T10:10:00Z") == []
        assert decide("risk_level_raised", plan, {"level": "imminent"}, 4, "2026-03-17T09:00:00Z") == []
        # a slot held after all is not escalated by a later-arriving raise either
        other = {**missed, "number": 3}
        assert decide("session_missed", str(uuid4()), other, 5, "2026-03-24T10:05:00Z") == []
        assert decide("session_attendance_corrected", str(uuid4()), {**other, "kind": "session"}, 6, "2026-03-24T11:00:00Z") == []
        assert decide("risk_level_raised", plan, {"level": "high"}, 7, "2026-03-24T09:00:00Z") == []
    finally:
        app.close()
