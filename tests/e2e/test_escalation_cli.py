"""`careplan escalation list|ack|resolve` on the escalation service's store."""

from __future__ import annotations

import os
from pathlib import Path
from uuid import uuid4

from typer.testing import CliRunner

from domain.base import Actor, CommandContext, Role
from domain.catalogues.escalation import EscalationTrigger
from domain.escalation.crisis import Crisis, CrisisStatus
from services.cli import app as cli
from services.escalation.service import EscalationApplication, triggers_of
from services.shared.processing import Inbound
from services.shared.settings import Settings
from tests.conftest import T0


def test_a_clinician_raising_a_crisis_escalates_immediately() -> None:
    inbound = Inbound(
        source="care", sequence=7, event_id=str(uuid4()), type="org.careplan.clinical.v1.care_plan.crisis_raised_by_clinician",
        subject="care.clinical.v1.care_plan.x.crisis_raised_by_clinician", aggregate_id=str(uuid4()),
        body={"actor": {"id": "clinician-17", "role": "clinician"}, "reason": "Disclosed a plan", "client_id": "c-1"},
    )
    ((trigger, reason),) = triggers_of(inbound)
    assert trigger is EscalationTrigger.CLINICIAN_RAISED
    assert "clinician-17" in reason and "Disclosed a plan" in reason


def test_list_acknowledge_and_resolve_from_the_command_line(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    app = EscalationApplication(settings)
    crisis = Crisis.raise_(
        plan_id=uuid4(), client_id="client-9", trigger=EscalationTrigger.CSSRS_HIGH_RISK, source_event_id="evt-9",
        reason="C-SSRS high", policy=app.policy,
        ctx=CommandContext(actor=Actor(id="escalation-service", role=Role.SERVICE), at=T0, correlation_id=uuid4()),
    )
    app.save(crisis)
    app.close()
    runner = CliRunner()
    env = {**os.environ, "COLUMNS": "250"}
    listed = runner.invoke(cli, ["escalation", "list", "--data-dir", str(tmp_path)], env=env)
    assert listed.exit_code == 0 and str(crisis.id) in listed.output and "immediate" in listed.output
    refused = runner.invoke(cli, ["escalation", "ack", str(crisis.id), "--reason", "seen", "--actor", "ehr", "--role", "integration",
                                  "--data-dir", str(tmp_path)])
    assert refused.exit_code == 1 and "Only a clinician or supervisor" in refused.output
    acked = runner.invoke(cli, ["escalation", "ack", str(crisis.id), "--reason", "Called the client", "--actor", "clin-3",
                                "--data-dir", str(tmp_path)])
    assert acked.exit_code == 0 and "acknowledged" in acked.output
    resolved = runner.invoke(cli, ["escalation", "resolve", str(crisis.id), "--outcome", "Safe", "--reason", "Reviewed",
                                   "--actor", "sup-1", "--role", "supervisor", "--data-dir", str(tmp_path)])
    assert resolved.exit_code == 0 and "resolved" in resolved.output
    after = EscalationApplication(settings)
    try:
        assert after.find_crisis_status(crisis.id) is CrisisStatus.RESOLVED
        assert after.open_crises() == []
    finally:
        after.close()


def _inbound(event: str, aggregate_id: str, body: dict[str, object], sequence: int) -> Inbound:
    return Inbound(
        source="care" if event.startswith("risk") else "scheduling", sequence=sequence, event_id=str(uuid4()),
        type=f"org.careplan.x.v1.y.{event}", subject=f"care.x.v1.y.{aggregate_id}.{event}", aggregate_id=aggregate_id,
        body={"correlation_id": str(uuid4()), **body},
    )


def test_a_missed_session_escalates_outreach_only_while_risk_is_high(tmp_path: Path) -> None:
    app = EscalationApplication(Settings(data_dir=tmp_path))
    try:
        plan = str(uuid4())
        missed = {"plan_id": plan, "client_id": "client-2", "kind": "session", "number": 3, "starts_at": "2026-03-16T10:00:00Z"}
        assert app.decide(_inbound("session_missed", str(uuid4()), missed, 1)) == []  # risk unknown: nothing to escalate
        for sequence, level in ((2, "moderate"), (3, "high")):
            for aggregate in app.decide(_inbound("risk_level_raised", plan, {"level": level}, sequence)):
                app.save(aggregate)
        (crisis,) = app.decide(_inbound("session_missed", str(uuid4()), missed, 4))
        assert isinstance(crisis, Crisis)
        app.save(crisis)
        assert [c.id for c in app.open_crises()] == [crisis.id]  # the plan's risk record is not a crisis
        assert crisis.trigger is EscalationTrigger.MISSED_SESSION_AT_HIGH_RISK and crisis.severity.value == "outreach"
        for aggregate in app.decide(_inbound("risk_level_lowered", plan, {"level": "low"}, 5)):
            app.save(aggregate)
        assert app.decide(_inbound("session_missed", str(uuid4()), missed, 6)) == []
    finally:
        app.close()
