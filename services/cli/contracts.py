"""``careplan contracts generate|check``: the public event contracts."""

from __future__ import annotations

import typer

from services.cli.common import console

app = typer.Typer(help="Generate or check the public event contracts.", no_args_is_help=True)


@app.command("generate")
def contracts_generate() -> None:
    """Write the JSON Schemas and the AsyncAPI document from the event classes, and the NATS
    permissions from the service registry."""
    from contracts.generate import CONTRACTS_DIR, generate
    from services.nats_auth import PERMISSIONS_FILE, write_permissions

    changed = generate()
    if write_permissions():
        console.print(f"wrote {PERMISSIONS_FILE}")
    for rel in changed:
        console.print(f"wrote {rel}")
    console.print(f"{len(changed)} file(s) changed under {CONTRACTS_DIR}")


@app.command("check")
def contracts_check() -> None:
    """Exit non-zero when the checked-in contracts (or NATS permissions) differ from what the
    code generates."""
    from contracts.generate import check
    from services.nats_auth import permissions_problem

    problems = check()
    if (problem := permissions_problem()) is not None:
        problems.append(problem)
    for problem in problems:
        console.print(f"[red]{problem}[/red]")
    if problems:
        console.print("Contracts are out of date: run `careplan contracts generate` and commit the result.")
        raise typer.Exit(1)
    console.print("contracts are current")
