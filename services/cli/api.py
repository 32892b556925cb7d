"""``careplan api serve|add-token``: the HTTP API and its bearer tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from services.cli.common import _logging, _settings, console

app = typer.Typer(help="The HTTP API: serve it, make tokens.", no_args_is_help=True)


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
    client: Annotated[list[str] | None, typer.Option(help="A client this token acts for (repeat); default: all.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder whose api-tokens.json to extend.")] = None,
) -> None:
    """Make a bearer token; only its SHA-256 digest is stored. Prints the token once."""
    from domain.base import Role
    from services.api.auth import ALL_CLIENTS, add_token

    settings = _settings(data_dir)
    token = add_token(settings.tokens_path(), actor_id=actor, role=Role(role), clients=tuple(client or [ALL_CLIENTS]))
    console.print(f"token for {actor} ({role}), stored as a digest in {settings.tokens_path()}:", highlight=False)
    print(token)
