"""``careplan escalation list|ack|resolve``: crises, through the HTTP API with your token
(the recorded actor is the token's; acknowledging and resolving are for supervisors), or,
with ``--local``, as the operator at this machine on the escalation service's store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer

from services.cli.calling import (
    ApiUrl,
    Caller,
    Forged,
    ForgedRole,
    Local,
    Token,
    TokenFile,
    operator,
    refuse_typed_identity,
)
from services.cli.common import _settings, console

app = typer.Typer(help="Crises: list, acknowledge, resolve (through the API with your token; --local: operator).",
                  no_args_is_help=True)

DataDir = Annotated[Path | None, typer.Option(help="Data folder (its careplan-up.json names the API; --local: its stores).")]


@app.command("list")
def escalation_list(api: ApiUrl = None, token: Token = None, token_file: TokenFile = None, local: Local = False,
                    data_dir: DataDir = None, actor: Forged = None, role: ForgedRole = None) -> None:
    """Crises not yet resolved (those of your token's clients)."""
    from rich.table import Table

    refuse_typed_identity(actor, role)
    if local:
        from services.escalation.service import EscalationApplication

        escalation = EscalationApplication(_settings(data_dir))
        try:
            crises = [c.model_dump(mode="json") for c in escalation.open_crises()]
        finally:
            escalation.close()
    else:
        answer = Caller(api, token, token_file, data_dir).request("GET", "/escalations").json()
        # a list of crises; a paged view (an object holding the list) is read the same way
        crises = answer if isinstance(answer, list) else next(
            (v for v in answer.values() if isinstance(v, list)), [])
    table = Table(title="Open crises")
    for column in ("crisis", "plan", "severity", "status", "level", "acknowledge by"):
        table.add_column(column)
    for crisis in crises:
        table.add_row(str(crisis.get("id")), str(crisis.get("plan_id")), str(crisis.get("severity")),
                      str(crisis.get("status")), f"{crisis.get('level')} (round {crisis.get('round')})",
                      str(crisis.get("ack_due") or "-"))
    console.print(table)


@app.command("ack")
def escalation_ack(
    crisis: Annotated[str, typer.Argument(help="Crisis id")],
    reason: Annotated[str, typer.Option(help="What you did or will do.")],
    api: ApiUrl = None, token: Token = None, token_file: TokenFile = None, local: Local = False,
    data_dir: DataDir = None, actor: Forged = None, role: ForgedRole = None,
) -> None:
    """Acknowledge a crisis (supervisors): escalation to further levels stops."""
    from services.escalation.commands import AcknowledgeEscalation

    refuse_typed_identity(actor, role)
    if local:
        _local(data_dir, lambda: AcknowledgeEscalation(crisis_id=UUID(crisis), reason=reason))
        return
    answer = Caller(api, token, token_file, data_dir).request("POST", f"/escalations/{crisis}/acknowledge",
                                                              body={"reason": reason}).json()
    console.print(f"crisis {answer['id']}: {answer['status']}", highlight=False)


@app.command("resolve")
def escalation_resolve(
    crisis: Annotated[str, typer.Argument(help="Crisis id")],
    outcome: Annotated[str, typer.Option(help="How the crisis ended.")],
    reason: Annotated[str, typer.Option(help="Why it is resolved.")],
    api: ApiUrl = None, token: Token = None, token_file: TokenFile = None, local: Local = False,
    data_dir: DataDir = None, actor: Forged = None, role: ForgedRole = None,
) -> None:
    """Resolve a crisis with its outcome (supervisors)."""
    from services.escalation.commands import ResolveCrisis

    refuse_typed_identity(actor, role)
    if local:
        _local(data_dir, lambda: ResolveCrisis(crisis_id=UUID(crisis), outcome=outcome, reason=reason))
        return
    answer = Caller(api, token, token_file, data_dir).request("POST", f"/escalations/{crisis}/resolve",
                                                              body={"outcome": outcome, "reason": reason}).json()
    console.print(f"crisis {answer['id']}: {answer['status']}", highlight=False)


def _local(data_dir: Path | None, make: Callable[[], Any]) -> None:
    """The operator at this machine, on the store: the domain decides (acknowledging and
    resolving are clinical decisions, so an operator is refused and nothing is written)."""
    from domain.errors import DomainError
    from domain.escalation.crisis import Crisis
    from services.escalation.service import EscalationApplication
    from services.shared.commands import CommandMeta

    escalation = EscalationApplication(_settings(data_dir))
    try:
        command = make()
        escalation.handle(command, CommandMeta(actor=operator()))
        crisis = escalation.find(Crisis, command.crisis_id)
    except (DomainError, ValueError) as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        console.print("A crisis is acknowledged and resolved by a supervisor, through the API with their token.",
                      highlight=False)
        raise typer.Exit(1) from None
    finally:
        escalation.close()
    console.print(f"crisis {crisis.id}: {crisis.status.value}", highlight=False)
