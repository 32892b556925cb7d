"""``careplan subscriptions list|show|resend``: the hospital systems' subscriptions, their
delivery state and alarms, read from the subscriptions store."""

from __future__ import annotations

import json
from typing import Annotated, Any
from uuid import UUID

import typer

from services.cli.common import DataDir, _settings, console

app = typer.Typer(help="Subscriptions of hospital systems: list, show, resend from an event number.",
                  no_args_is_help=True)

ALL = ("*",)


def _open(data_dir: Any) -> Any:
    from services.subscriptions.service import SubscriptionsApplication

    return SubscriptionsApplication(_settings(data_dir))


@app.command("list")
def subscriptions_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Every subscription with its status and how far it is delivered; red: in error, or
    events undelivered for longer than CAREPLAN_ALARM_SUBSCRIPTION_SECONDS."""
    from rich.table import Table

    from services.subscriptions.kinds import Scope

    subs = _open(data_dir)
    try:
        now = subs.clock()
        shown = [subs.summary(s, now) for s in subs.visible(Scope(ALL))]
    finally:
        subs.close()
    if as_json:
        for item in shown:
            console.print_json(json.dumps(item))
        return
    table = Table(title=f"Subscriptions ({len(shown)})")
    for column in ("subscription", "kind", "status", "endpoint", "events", "delivered", "last success", "why"):
        table.add_column(column)
    for item in shown:
        style = "red" if item["alarm"] else ""
        table.add_row(item["id"], item["kind"], item["status"], item["endpoint"], str(item["events_since_start"]),
                      str(item["delivered_up_to"]), item["last_success_at"] or "never", item["error"] or "",
                      style=style)
    console.print(table)
    if any(item["alarm"] for item in shown):
        raise typer.Exit(1)


@app.command("show")
def subscriptions_show(
    subscription: Annotated[UUID, typer.Argument(help="Subscription id (from `careplan subscriptions list`).")],
    attempts: Annotated[int, typer.Option(help="How many of the latest attempts to show.")] = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
) -> None:
    """One subscription: where it sends, its state, and its latest attempts (who received
    what, when: numbers, status, latency; never a payload)."""
    from services.subscriptions.kinds import Scope
    from services.subscriptions.service import SubscriptionNotFoundError

    subs = _open(data_dir)
    try:
        try:
            found = subs.subscription(subscription, Scope(ALL))
        except SubscriptionNotFoundError as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(1) from None
        shown = subs.summary(found, subs.clock()) | {"latest_attempts": subs.attempts(subscription, attempts)}
    finally:
        subs.close()
    if as_json:
        console.print_json(json.dumps(shown))
        return
    for key, value in shown.items():
        if key != "latest_attempts":
            console.print(f"[bold]{key}[/bold]: {value}", style="red" if key in ("status", "error") and shown["alarm"] else "")
    for attempt in shown["latest_attempts"]:
        console.print(f"  {attempt['at']}  {attempt['attempt_kind']} {attempt['first_number']}-{attempt['last_number']}: "
                      f"{attempt['outcome']} {attempt['status_code'] or attempt['error_class']} "
                      f"in {attempt['latency_ms']} ms")


@app.command("resend")
def subscriptions_resend(
    subscription: Annotated[UUID, typer.Argument(help="Subscription id.")],
    from_number: Annotated[int, typer.Option("--from", min=1, help="The first event number to deliver again.")],
    reason: Annotated[str, typer.Option(help="Why (recorded with your name).")],
    data_dir: DataDir = None,
) -> None:
    """Deliver again from an event number (a subscription in error becomes active). Recorded
    as you, the operating-system user, in the operator role; the service acts on it."""
    from services.operations.dead_letters import operator
    from services.subscriptions.kinds import Scope
    from services.subscriptions.service import SubscriptionNotFoundError

    subs = _open(data_dir)
    try:
        try:
            subs.request_resend(subscription, from_number, Scope(ALL), operator(), reason)
        except SubscriptionNotFoundError as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(1) from None
    finally:
        subs.close()
    console.print(f"subscription {subscription}: resend from event {from_number} requested")
