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
