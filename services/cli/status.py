"""``careplan status [--json] [--api URL]``: the API's /readyz as a table, one row per
component, and under it the figures of its /metrics (relay and views lag per store, consumer backlog
per service, open dead letters, open escalations, the oldest unacknowledged one's age);
exit 0 (ok), 1 (degraded) or 2 (down, or the API cannot be asked), from readiness only."""

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


def figures_of(text: str) -> dict[str, Any]:
    """The figures `status` shows, from /metrics' Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))

    def by(name: str, label: str) -> dict[str, float]:
        return {labels.get(label, ""): value for labels, value in samples.get(name, [])}

    pending = by("careplan_consumer_pending_messages", "service")
    ack_pending = by("careplan_consumer_ack_pending_messages", "service")
    oldest = samples.get("careplan_escalation_oldest_unacknowledged_age_seconds")
    return {
        "relay_lag_events": {k: int(v) for k, v in by("careplan_relay_lag_events", "store").items()},
        "consumer_lag_messages": {
            service: {"pending": int(pending.get(service, 0)), "ack_pending": int(ack_pending.get(service, 0))}
            for service in sorted({*pending, *ack_pending})
        },
        "views_lag_events": {k: int(v) for k, v in by("careplan_views_lag_events", "store").items()},
        "dead_letters_open": {k: int(v) for k, v in by("careplan_dead_letters_open", "service").items()},
        "escalations_open": {k: int(v) for k, v in by("careplan_escalations_open", "severity").items()},
        "oldest_unacknowledged_escalation_seconds": oldest[0][1] if oldest else None,
    }


def _figures(url: str) -> dict[str, Any] | None:
    """None when /metrics does not answer (readiness still decides the exit code)."""
    import httpx

    try:
        response = httpx.get(f"{url}/metrics", timeout=10)
        response.raise_for_status()
        return figures_of(response.text)
    except (httpx.HTTPError, ValueError):
        return None


def _show_figures(figures: dict[str, Any] | None) -> None:
    from rich.table import Table

    if figures is None:
        console.print("figures: [yellow]/metrics did not answer[/]")
        return
    table = Table("figure", "of", "value")
    for store, lag in sorted(figures["relay_lag_events"].items()):
        table.add_row("relay lag (events)", store, str(lag))
    for service, lag in figures["consumer_lag_messages"].items():
        table.add_row("consumer lag (pending + ack pending)", service,
                      f"{lag['pending'] + lag['ack_pending']} ({lag['pending']} + {lag['ack_pending']})")
    for store, lag in sorted(figures["views_lag_events"].items()):
        table.add_row("views lag (events)", store, str(lag))
    for service, count in sorted(figures["dead_letters_open"].items()):
        table.add_row("open dead letters", service, str(count))
    for severity, count in sorted(figures["escalations_open"].items()):
        table.add_row("open escalations", severity, str(count))
    oldest = figures["oldest_unacknowledged_escalation_seconds"]
    table.add_row("oldest unacknowledged escalation", "", "-" if oldest is None else f"{oldest:.0f} s")
    console.print(table)


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
    figures = _figures(url)
    if json_out:
        print(json.dumps({**body, "figures": figures}, indent=2))
    else:
        _show(body)
        _show_figures(figures)
    raise typer.Exit(EXIT.get(str(body.get("status")), 2))
