"""What the command groups share: the console, settings read once from the environment here at
the edge, logging for the long-running commands, the option types more than one group uses, and
the connection to NATS of the store-recovery commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from services.shared.settings import Settings

console = Console()

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data folder of the stores.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
NatsUrl = Annotated[str | None, typer.Option("--nats", help="The NATS server (default: CAREPLAN_NATS_URL, else the "
                                                              "running `careplan up`'s, from its data dir).")]


def nats_url_as(option: str | None, user: str, data_dir: Path | None = None) -> str | None:
    """The NATS server to talk to, as ``user``: ``--nats``, else CAREPLAN_NATS_URL, else the
    address the running `careplan up` wrote into its data dir (``careplan-up.json``). A URL
    without credentials gets ``user``'s from the passwords file (CAREPLAN_NATS_PASSWORDS_FILE,
    else ``<data dir>/nats-passwords.json``, which `up` generates) when there is one."""
    from services.nats_auth import running_up_url, url_as

    settings = _settings(data_dir)
    url = option or settings.nats_url or running_up_url(settings.data_dir)
    if not url:
        return None
    return url_as(str(url), user, settings.data_dir, settings.nats_passwords_file)


def _settings(data_dir: Path | None = None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def _logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _with_recovery(store: str, nats_url: str | None, data_dir: Path | None, work: Callable[[Any], Any]) -> Any:
    import asyncio

    from services.operations.recovery import StoreRecovery
    from services.shared.bus import connect

    settings = _settings(data_dir)
    url = nats_url_as(nats_url, "admin", data_dir)
    if not url:
        console.print("[red]Name the NATS server: --nats URL (careplan up prints it in its ready line).[/red]")
        raise typer.Exit(2)

    async def run() -> Any:
        nc = await connect(url, name="careplan-store-recovery")
        recovery = StoreRecovery(settings, store, nc.jetstream())
        try:
            return await work(recovery)
        finally:
            recovery.close()
            await nc.close()

    return asyncio.run(run())


def print_problem(response: Any) -> dict[str, Any]:
    """An API's RFC 9457 answer as one red line: status, title and detail."""
    try:
        problem = response.json()
    except ValueError:
        problem = {"title": response.reason_phrase, "detail": response.text}
    console.print(f"[red]{response.status_code} {problem.get('title')}[/red]: {problem.get('detail', '')}",
                  highlight=False)
    return problem
