"""``careplan nats streams apply|check``: the streams' configuration, owned by one command.

Relays and services only check the streams and refuse to start when they differ from their
own settings; `careplan up` and this command create or change them."""

from __future__ import annotations

import typer

from services.cli.common import NatsUrl, _settings, console, nats_url_as

app = typer.Typer(help="The NATS streams CARE and CARE_AUDIT.", no_args_is_help=True)
streams_app = typer.Typer(help="Create, change or check the streams' configuration.", no_args_is_help=True)
app.add_typer(streams_app, name="streams")


def _url(nats_url: str | None) -> str:
    url = nats_url_as(nats_url, "admin")
    if not url:
        console.print("[red]Name the NATS server: --nats URL (with the admin user's credentials when it has users).[/red]")
        raise typer.Exit(2)
    return url


@streams_app.command("apply")
def streams_apply(nats_url: NatsUrl = None) -> None:
    """Create CARE and CARE_AUDIT, or bring them to the configured settings (CAREPLAN_STREAM_*);
    prints what changed."""
    import asyncio

    from services.shared.bus import apply_streams_at

    changes = asyncio.run(apply_streams_at(_url(nats_url), _settings()))
    for change in changes:
        console.print(change)
    console.print(f"{len(changes)} change(s); the streams are as configured")


@streams_app.command("check")
def streams_check(nats_url: NatsUrl = None) -> None:
    """Exit 1 when a stream is missing or differs from the configured settings, naming each field."""
    import asyncio

    from services.shared.bus import check_streams_at

    missing, drift = asyncio.run(check_streams_at(_url(nats_url), _settings()))
    for name in missing:
        console.print(f"[red]stream {name}: missing[/red]")
    for difference in drift:
        console.print(f"[red]{difference}[/red]")
    if missing or drift:
        console.print("Run `careplan nats streams apply` to bring the streams to the configured settings.")
        raise typer.Exit(1)
    console.print("the streams are as configured")
