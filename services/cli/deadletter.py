"""``careplan deadletter list|show|park|redrive``: the dead letters of every service."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import typer

from services.cli.common import DataDir, _settings, _with_recovery, console
from services.registry import SERVICE_NAMES

app = typer.Typer(
    help="Dead letters of every service: list, show, redrive (decided again by the service).", no_args_is_help=True
)


@app.command("list")
def deadletter_list(
    status: Annotated[str | None, typer.Option(help="open, redrive_requested, redriven or redrive_failed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Messages a service could not decide, oldest first (ids and error classes only)."""
    import json as _json

    from rich.table import Table

    from domain.operations.dead_letter import DeadLetterStatus
    from services.operations.dead_letters import DeadLetterDesk, summary

    desk = DeadLetterDesk(_settings(data_dir))
    try:
        letters = desk.list(DeadLetterStatus(status) if status else None)
    finally:
        desk.close()
    if as_json:
        for letter in letters:
            console.print_json(_json.dumps(summary(letter)))
        return
    table = Table(title=f"Dead letters ({len(letters)})")
    for column in ("dead letter", "service", "status", "when", "message", "error", "risk"):
        table.add_column(column)
    for letter in letters:
        table.add_row(str(letter.id), letter.service, letter.status.value, letter.created_on.strftime("%Y-%m-%d %H:%M:%S"),
                      f"{letter.failed_event_type} {letter.failed_event_id or ''}".strip(),
                      f"{letter.error_class}{' at ' + ', '.join(letter.field_paths) if letter.field_paths else ''}",
                      "[red]risk signal[/red]" if letter.risk_signal else "")
    console.print(table)


@app.command("show")
def deadletter_show(
    dead_letter: Annotated[UUID, typer.Argument(help="Dead letter id (from `careplan deadletter list`).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
) -> None:
    """One dead letter: where its message came from, why it failed, every redrive."""
    import json as _json

    from domain.errors import DomainError
    from services.operations.dead_letters import DeadLetterDesk, summary

    desk = DeadLetterDesk(_settings(data_dir))
    try:
        letter, history = desk.show(dead_letter)
    except DomainError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    finally:
        desk.close()
    shown = summary(letter) | {"history": [
        {"at": e.timestamp.isoformat(), "actor": e.actor.id, "role": e.actor.role.value, "what": e.describe()}
        for e in history
    ]}
    if as_json:
        console.print_json(_json.dumps(shown))
        return
    for key, value in shown.items():
        if key != "history":
            console.print(f"[bold]{key}[/bold]: {value}")
    for entry in shown["history"]:
        console.print(f"  {entry['at']}  {entry['actor']} ({entry['role']}): {entry['what']}")


@app.command("park")
def deadletter_park(
    consumer: Annotated[str, typer.Argument(help=f"The halted consumer: {', '.join(SERVICE_NAMES)} (partitioned, "
                                                 "the partition deciding the message is found; or name it, <service>-p<k>).")],
    stream_sequence: Annotated[int, typer.Argument(help="The stream sequence of the message it halted on (in its alarm).")],
    reason: Annotated[str, typer.Option(help="Why it is set aside (recorded with your name).")],
    nats_url: Annotated[str | None, typer.Option("--nats", help="The NATS server (default: CAREPLAN_NATS_URL).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Set aside the message a consumer halted on (a forged one, say) as a dead letter, so it
    goes on; a message that may carry a risk signal is escalated as such. Partitioned, only the
    position of the partition that decides the message moves."""
    from services.operations.recovery import RecoveryRefusedError, park

    async def work(recovery: Any) -> Any:
        return await park(recovery.settings, consumer, stream_sequence, recovery.js, reason=reason)

    try:
        letter = _with_recovery("care", nats_url, data_dir, work)
    except RecoveryRefusedError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print(f"dead letter {letter.id}: stream message {stream_sequence} set aside for {consumer}"
                  + ("; a fail-safe escalation follows" if letter.risk_signal else ""))


@app.command("redrive")
def deadletter_redrive(
    dead_letter: Annotated[UUID, typer.Argument(help="Dead letter id.")],
    reason: Annotated[str, typer.Option(help="Why it can be decided now (recorded with your name).")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the service's outcome (0: do not wait).")] = 30.0,
    data_dir: DataDir = None,
) -> None:
    """Ask the service to decide the message again; it records the outcome on the dead letter.
    Recorded as you, the operating-system user, in the operator role."""
    from domain.errors import DomainError
    from domain.operations.dead_letter import DeadLetterStatus
    from services.operations.dead_letters import DeadLetterDesk, operator

    desk = DeadLetterDesk(_settings(data_dir))
    try:
        letter = desk.request_redrive(dead_letter, actor=operator(), reason=reason)
        console.print(f"dead letter {letter.id}: redrive requested of the {letter.service} service")
        if wait > 0:
            letter = desk.wait_for_outcome(dead_letter, wait)
    except DomainError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    finally:
        desk.close()
    if letter.status is DeadLetterStatus.REDRIVEN:
        console.print(f"[green]redriven[/green]: the {letter.service} service decided it again")
    elif letter.status is DeadLetterStatus.REDRIVE_FAILED:
        console.print(f"[red]the redrive failed again[/red] (`careplan deadletter show {letter.id}` says why)")
        raise typer.Exit(1)
    else:
        console.print(f"not redriven yet: the {letter.service} service does it when it runs")
