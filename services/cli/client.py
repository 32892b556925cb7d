"""``careplan client erase|hold|release``: a client's rights over their records (issue 16),
through the HTTP API with a supervisor's token (the recorded actor is the token's).

``careplan client erase CLIENT --reason R`` asks for the erasure and prints the request's
id; a second supervisor runs ``careplan client erase CLIENT --confirm REQUEST`` within
``CAREPLAN_ERASURE_CONFIRM_HOURS``, and the client's data is shredded (docs/data-protection.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.cli.calling import ApiUrl, Caller, Forged, ForgedRole, Token, TokenFile, refuse_typed_identity
from services.cli.common import console

app = typer.Typer(help="A client's rights: erasure (four eyes), legal holds (supervisors, through the API).",
                  no_args_is_help=True)

ClientArg = Annotated[str, typer.Argument(help="The client's id")]
DataDir = Annotated[Path | None, typer.Option(help="Data folder (its careplan-up.json names the API).")]


@app.command("erase")
def client_erase(
    client: ClientArg,
    reason: Annotated[str | None, typer.Option(help="Why (the legal basis; no clinical detail).")] = None,
    confirm: Annotated[str | None, typer.Option(help="Confirm this erasure request (a second supervisor).")] = None,
    api: ApiUrl = None, token: Token = None, token_file: TokenFile = None, data_dir: DataDir = None,
    actor: Forged = None, role: ForgedRole = None,
) -> None:
    """Ask for a client's erasure (--reason), or confirm another supervisor's request (--confirm)."""
    refuse_typed_identity(actor, role)
    caller = Caller(api, token, token_file, data_dir)
    if confirm is None:
        if not reason:
            console.print("[red]refused:[/red] say why with --reason (or confirm a request with --confirm).")
            raise typer.Exit(2)
        answer = caller.request("POST", f"/clients/{client}/erasure", body={"reason": reason}).json()
        console.print(f"erasure requested: {answer['request_id']} (a second supervisor confirms it with "
                      f"`careplan client erase {client} --confirm {answer['request_id']}`)", highlight=False)
        return
    answer = caller.request("POST", f"/clients/{client}/erasure/{confirm}/confirm").json()
    console.print(f"client erased: request {answer['request_id']}, {answer['keys_destroyed']} key(s) destroyed, "
                  f"{answer['messages_purged']} message(s) removed from {', '.join(answer['streams']) or 'no stream'}, "
                  f"stores {', '.join(answer['stores'])}", highlight=False)


@app.command("hold")
def client_hold(client: ClientArg, reason: Annotated[str, typer.Option(help="Why the records must be kept.")],
                api: ApiUrl = None, token: Token = None, token_file: TokenFile = None, data_dir: DataDir = None) -> None:
    """Set a legal hold: the client's records may not be erased until it is released."""
    Caller(api, token, token_file, data_dir).request("POST", f"/clients/{client}/hold", body={"reason": reason})
    console.print(f"legal hold set on {client}", highlight=False)


@app.command("release")
def client_release(client: ClientArg, reason: Annotated[str, typer.Option(help="Why the hold ends.")],
                   api: ApiUrl = None, token: Token = None, token_file: TokenFile = None,
                   data_dir: DataDir = None) -> None:
    """Release a legal hold."""
    Caller(api, token, token_file, data_dir).request("POST", f"/clients/{client}/release", body={"reason": reason})
    console.print(f"legal hold released on {client}", highlight=False)
