"""How the people's commands that act on records (``escalation``, ``audit`` reads) say who
is acting: through the HTTP API with the caller's token (the recorded actor is the token's),
or, with ``--local``, as the operator at this machine (the operating-system user, role
``operator``) on the stores directly. Nobody types who they are."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.common import _settings, console, print_problem

ApiUrl = Annotated[str | None, typer.Option("--api", help="The API's address (default: the running `careplan up`'s, "
                                                           "from <data dir>/careplan-up.json, else CAREPLAN_API_URL).")]
Token = Annotated[str | None, typer.Option("--token", envvar=["CAREPLAN_API_TOKEN", "CAREPLAN_TOKEN"],
                                           help="Your bearer token (or CAREPLAN_API_TOKEN); its actor is recorded.")]
TokenFile = Annotated[Path | None, typer.Option("--token-file", envvar="CAREPLAN_API_TOKEN_FILE",
                                                help="A file holding your bearer token (first line).")]
Local = Annotated[bool, typer.Option("--local", help="Operator at this machine, API down: open the stores directly, "
                                                     "recorded as your operating-system user in the role operator.")]
#: Kept only to refuse them with a pointer to the token: who acts is never typed.
Forged = Annotated[str | None, typer.Option("--actor", hidden=True)]
ForgedRole = Annotated[str | None, typer.Option("--role", hidden=True)]

#: What `careplan up` writes into its data folder while it runs (services.system).
UP_FILE = "careplan-up.json"


def refuse_typed_identity(actor: str | None, role: str | None) -> None:
    if actor is not None or role is not None:
        console.print("[red]refused:[/red] --actor/--role are gone: who acts is recorded from your token "
                      "(--token, CAREPLAN_API_TOKEN or --token-file; `careplan api add-token` makes one), or, at this "
                      "machine with --local, from your operating-system user as operator.", highlight=False)
        raise typer.Exit(2)


def operator() -> Any:
    """The person at this machine, as the operating system knows them (role operator)."""
    from services.operations.dead_letters import operator as os_operator

    return os_operator()


class Caller:
    """A token and the API's address; ``request`` answers the response, or prints the problem
    (status, title, detail) and exits 1, or exits 2 when the API cannot be reached."""

    def __init__(self, api: str | None, token: str | None, token_file: Path | None, data_dir: Path | None) -> None:
        self.token = _token(token, token_file)
        self.api = _address(api, data_dir).rstrip("/")

    def request(self, method: str, path: str, *, body: Any = None, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> Any:
        import httpx

        try:
            response = httpx.request(method, f"{self.api}{path}", json=body, timeout=120,
                                     params={k: v for k, v in (params or {}).items() if v is not None},
                                     headers={"Authorization": f"Bearer {self.token}", **(headers or {})})
        except httpx.HTTPError as e:
            console.print(f"[red]Cannot reach the API at {self.api}: {e}[/red] (an operator at this machine: --local)",
                          highlight=False)
            raise typer.Exit(2) from e
        if response.status_code >= 400:
            print_problem(response)
            raise typer.Exit(1)
        return response


    def stream(self, path: str, *, params: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> Iterator[str]:
        """``GET path``'s body as text, a piece at a time as it arrives (a refusal: the problem
        printed, exit 1, before any piece; the API unreachable or gone: exit 2)."""
        import httpx

        try:
            with httpx.stream("GET", f"{self.api}{path}", timeout=120,
                              params={k: v for k, v in (params or {}).items() if v is not None},
                              headers={"Authorization": f"Bearer {self.token}", **(headers or {})}) as response:
                if response.status_code >= 400:
                    response.read()
                    print_problem(response)
                    raise typer.Exit(1)
                yield from response.iter_text()
        except httpx.HTTPError as e:
            console.print(f"[red]Cannot read from the API at {self.api}: {e}[/red] (an operator at this machine: --local)",
                          highlight=False)
            raise typer.Exit(2) from e


def _token(token: str | None, token_file: Path | None) -> str:
    if token and token_file:
        console.print("[red]refused:[/red] say either --token or --token-file, not both", highlight=False)
        raise typer.Exit(2)
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip().splitlines()[0].strip()
        except (OSError, IndexError):
            console.print(f"[red]refused:[/red] no token in {token_file}", highlight=False)
            raise typer.Exit(2) from None
    if not token:
        console.print("[red]refused:[/red] give your token (--token, CAREPLAN_API_TOKEN or --token-file; "
                      "`careplan api add-token` makes one): the API records its actor. An operator at this machine "
                      "with the API down: --local.", highlight=False)
        raise typer.Exit(2)
    return token.strip()


def _address(api: str | None, data_dir: Path | None) -> str:
    """--api, else the running `careplan up`'s address, else CAREPLAN_API_URL (as `careplan status`)."""
    import os

    if api:
        return api
    settings = _settings(data_dir)
    try:
        found = json.loads((settings.data_dir / UP_FILE).read_text()).get("api")
    except (OSError, ValueError, AttributeError):
        found = None
    found = found or os.environ.get("CAREPLAN_API_URL")
    if not found:
        console.print(f"[red]No API address: pass --api URL, run `careplan up` (it writes {settings.data_dir / UP_FILE}), "
                      "or set CAREPLAN_API_URL; an operator at this machine with the API down: --local.[/red]",
                      highlight=False)
        raise typer.Exit(2)
    return str(found)
