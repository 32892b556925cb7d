"""``careplan escalation list|ack|resolve``: crises, on the escalation service's store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from services.cli.common import _settings, console

app = typer.Typer(help="Crises: list, acknowledge, resolve (on the escalation service's store).", no_args_is_help=True)

ActorId = Annotated[str, typer.Option("--actor", help="Your pseudonymous id.")]
ActorRole = Annotated[str, typer.Option("--role", help="clinician or supervisor")]


@app.command("list")
def escalation_list(data_dir: Annotated[Path | None, typer.Option()] = None) -> None:
    """Crises not yet resolved."""
    from rich.table import Table

    from services.escalation.service import EscalationApplication

    escalation = EscalationApplication(_settings(data_dir))
    try:
        table = Table(title="Open crises")
        for column in ("crisis", "plan", "severity", "status", "level", "acknowledge by"):
            table.add_column(column)
        for crisis in escalation.open_crises():
            due = crisis.ack_due.isoformat() if crisis.ack_due else "-"
            table.add_row(str(crisis.id), str(crisis.plan_id), crisis.severity.value, crisis.status.value,
                          f"{crisis.level} (round {crisis.round})", due)
        console.print(table)
    finally:
        escalation.close()


@app.command("ack")
def escalation_ack(
    crisis: Annotated[str, typer.Argument(help="Crisis id")],
    reason: Annotated[str, typer.Option(help="What you did or will do.")],
    actor: ActorId,
    role: ActorRole = "clinician",
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Acknowledge a crisis: escalation to further levels stops."""
    from services.escalation.commands import AcknowledgeEscalation

    _escalation_command(data_dir, lambda: AcknowledgeEscalation(crisis_id=UUID(crisis), reason=reason), actor, role)


@app.command("resolve")
def escalation_resolve(
    crisis: Annotated[str, typer.Argument(help="Crisis id")],
    outcome: Annotated[str, typer.Option(help="How the crisis ended.")],
    reason: Annotated[str, typer.Option(help="Why it is resolved.")],
    actor: ActorId,
    role: ActorRole = "clinician",
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Resolve a crisis with its outcome."""
    from services.escalation.commands import ResolveCrisis

    _escalation_command(
        data_dir, lambda: ResolveCrisis(crisis_id=UUID(crisis), outcome=outcome, reason=reason), actor, role
    )


def _escalation_command(data_dir: Path | None, make: Callable[[], Any], actor: str, role: str) -> None:
    from domain.base import Actor, Role
    from domain.errors import DomainError
    from domain.escalation.crisis import Crisis
    from services.escalation.service import EscalationApplication
    from services.shared.commands import CommandMeta

    escalation = EscalationApplication(_settings(data_dir))
    try:
        command = make()
        escalation.handle(command, CommandMeta(actor=Actor(id=actor, role=Role(role))))
        crisis = escalation.find(Crisis, command.crisis_id)
    except (DomainError, ValueError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    finally:
        escalation.close()
    console.print(f"crisis {crisis.id}: {crisis.status.value}")
