"""``careplan status [--json] [--api URL]``: the API's /readyz as a table, one row per
component; exit 0 (ok), 1 (degraded) or 2 (down, or the API cannot be asked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from services.cli.common import Json, _settings, console

app = typer.Typer(help="Is the system ready? One row per component, from the API's /readyz.")

#: What `careplan up` writes into its data folder while it runs (services.system).
UP_FILE = "careplan-up.json"
EXIT = {"ok": 0, "degraded": 1, "down": 2}
COLOUR = {"ok": "green", "degraded": "yellow", "down": "red"}


def api_url(option: str | None) -> str:
    """--api, else the running `careplan up`'s address, else CAREPLAN_API_URL."""
    if option:
        return option
    settings = _settings()
    try:
        found = json.loads((settings.data_dir / UP_FILE).read_text()).get("api")
    except (OSError, ValueError, AttributeError):
        found = None
    found = found or _environment_url()
    if not found:
        console.print(f"[red]No API address: pass --api URL, run `careplan up` (it writes {settings.data_dir / UP_FILE}), "
                      "or set CAREPLAN_API_URL.[/red]")
        raise typer.Exit(2)
    return str(found)


def _environment_url() -> str | None:
    import os

    return os.environ.get("CAREPLAN_API_URL") or None


def _show(body: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table("component", "status", "reason")
    for name, component in body.get("components", {}).items():
        status = str(component.get("status", "down"))
        table.add_row(name, f"[{COLOUR.get(status, 'red')}]{status}[/]", str(component.get("reason", "")))
    console.print(table)
    overall = str(body.get("status", "down"))
    console.print(f"system: [{COLOUR.get(overall, 'red')}]{overall}[/]")


@app.callback(invoke_without_command=True)
def status(
    json_out: Json = False,
    api: Annotated[str | None, typer.Option("--api", help="The API (default: the running `careplan up`'s, "
                                                         "else CAREPLAN_API_URL).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where `careplan up` runs.")] = None,
) -> None:
    """Exit 0 when every component is ok, 1 when one is degraded, 2 when one is down."""
    import httpx

    if data_dir is not None and api is None:
        try:
            api = json.loads((data_dir / UP_FILE).read_text()).get("api")
        except (OSError, ValueError, AttributeError):
            api = None
    url = api_url(api).rstrip("/")
    try:
        body = httpx.get(f"{url}/readyz", timeout=10).json()
    except (httpx.HTTPError, ValueError) as e:
        console.print(f"[red]The API at {url} does not answer /readyz: {type(e).__name__}[/red]")
        raise typer.Exit(2) from e
    if json_out:
        print(json.dumps(body, indent=2))
    else:
        _show(body)
    raise typer.Exit(EXIT.get(str(body.get("status")), 2))
