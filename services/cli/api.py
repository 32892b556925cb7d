"""``careplan api serve|add-token|list-tokens|revoke-token``: the HTTP API and its bearer tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from services.cli.common import _logging, _settings, console

app = typer.Typer(help="The HTTP API: serve it, make, list and revoke tokens.", no_args_is_help=True)


@app.command("serve")
def api_serve(
    ready_file: Annotated[Path | None, typer.Option(help="Written with the API's address once it listens.")] = None,
) -> None:
    """Serve the HTTP API (CAREPLAN_API_HOST / CAREPLAN_API_PORT; port 0 picks a free one)."""
    from services.api.server import serve

    _logging()
    serve(_settings(), ready_file=ready_file)


@app.command("add-token")
def api_add_token(
    actor: Annotated[str, typer.Option(help="The pseudonymous id every event of this token's requests names.")],
    role: Annotated[Literal["clinician", "supervisor", "auditor", "integration"], typer.Option()],
    client: Annotated[list[str] | None, typer.Option(help="A client this token acts for (repeat). Every token "
                                                          "names its clients or says --all-clients.")] = None,
    all_clients: Annotated[bool, typer.Option("--all-clients", help="The token acts for every client.")] = False,
    expires_in: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d, 12h, 2w (at most ten years).")] = None,
    expires_at: Annotated[str | None, typer.Option(help="Expiry as RFC 3339 with a zone, e.g. 2026-12-31T00:00:00Z.")]
    = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder whose api-tokens.json to extend.")] = None,
) -> None:
    """Make a bearer token; only its SHA-256 digest is stored. Prints its id, then the token
    once (last line). A running API accepts it within a second."""
    from datetime import UTC, datetime

    from domain.base import Role
    from services.api.auth import ALL_CLIENTS, add_token_with_id, parse_duration

    def refuse(message: str) -> None:
        console.print(f"[red]refused:[/red] {message}", highlight=False)
        raise typer.Exit(2)

    if all_clients and client:
        refuse("say either --client (repeatable) or --all-clients, not both")
    if expires_in and expires_at:
        refuse("say either --expires-in or --expires-at, not both")
    now = datetime.now(tz=UTC)
    expiry = None
    try:
        if expires_in:
            expiry = now + parse_duration(expires_in)
        elif expires_at:
            expiry = datetime.fromisoformat(expires_at)
            if expiry.tzinfo is None:
                refuse("--expires-at needs a time zone, e.g. 2026-12-31T00:00:00Z")
        clients = (ALL_CLIENTS,) if all_clients else (tuple(client) if client else None)
        settings = _settings(data_dir)
        token_id, token = add_token_with_id(settings.tokens_path(), actor_id=actor, role=Role(role), clients=clients,
                                            expires_at=expiry, now=now)
    except ValueError as error:
        refuse(str(error))
        return
    scope = "all clients" if clients is None or ALL_CLIENTS in clients else ", ".join(clients)
    until = f", expires {expiry.isoformat()}" if expiry else ""
    console.print(f"token {token_id} for {actor} ({role}; {scope}{until}), stored as a digest in "
                  f"{settings.tokens_path()}:", highlight=False)
    print(token)


@app.command("list-tokens")
def api_list_tokens(
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder whose api-tokens.json to read.")] = None,
) -> None:
    """The tokens: id, actor, role, clients, created, expiry, status. Never a secret or digest."""
    import json
    from datetime import UTC, datetime

    from rich.table import Table

    from services.api.auth import list_tokens

    now = datetime.now(tz=UTC)
    rows = [
        {"id": t.id, "actor": t.actor_id, "role": t.role.value, "clients": list(t.clients),
         "created_at": t.created_at.isoformat() if t.created_at else None,
         "expires_at": t.expires_at.isoformat() if t.expires_at else None,
         "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None, "status": t.status(now)}
        for t in list_tokens(_settings(data_dir).tokens_path())
    ]
    if json_:
        print(json.dumps(rows, indent=2))
        return
    table = Table("id", "actor", "role", "clients", "created", "expires", "status")
    for r in rows:
        table.add_row(r["id"], r["actor"], r["role"], ", ".join(r["clients"]), r["created_at"] or "-",
                      r["expires_at"] or "never", r["status"])
    console.print(table)


@app.command("revoke-token")
def api_revoke_token(
    token_id: Annotated[str, typer.Argument(help="The token's id (from add-token or list-tokens).")],
    data_dir: Annotated[Path | None, typer.Option(help="Data folder whose api-tokens.json to change.")] = None,
) -> None:
    """Revoke a token: a running API refuses it within a second (401)."""
    from services.api.auth import revoke_token

    try:
        stored = revoke_token(_settings(data_dir).tokens_path(), token_id)
    except KeyError:
        console.print(f"[red]no token with id {token_id}[/red] (careplan api list-tokens)", highlight=False)
        raise typer.Exit(1) from None
    console.print(f"token {stored.id} of {stored.actor_id} revoked at {stored.revoked_at.isoformat()}",
                  highlight=False)
