"""The ``careplan`` command. Reads settings from the environment once, here at the edge.

The root app holds the system's commands (``up``, ``demo``, ``relay``, ``service``) and one
sub-app per command group, each in a module of its own; a command imports what it runs
only when it runs.
"""

from __future__ import annotations

import os

import typer

from services.cli import (
    api,
    audit,
    bench,
    client,
    contracts,
    deadletter,
    escalation,
    nats,
    people,
    rights,
    status,
    store,
    subscriptions,
    system,
    views,
)

app = typer.Typer(help="careplan: an event-sourced care-plan engine for psychotherapy services.", no_args_is_help=True)
for _command in system.COMMANDS:
    app.command()(_command)
app.add_typer(contracts.app, name="contracts")
app.add_typer(bench.app, name="bench")
app.add_typer(escalation.app, name="escalation")
app.add_typer(audit.app, name="audit")
app.add_typer(api.app, name="api")
app.add_typer(deadletter.app, name="deadletter")
app.add_typer(store.app, name="store")
app.add_typer(nats.app, name="nats")
app.add_typer(status.app, name="status")
app.add_typer(views.app, name="views")
app.add_typer(subscriptions.app, name="subscriptions")
client.app.command("access-report")(rights.access_report)  # issue 16: who read the client's data
app.add_typer(client.app, name="client")
app.add_typer(people.collection_app("plans", "care plan"), name="plan")
app.add_typer(people.collection_app("courses", "therapy course"), name="course")
app.add_typer(people.collection_app("inventories", "interpersonal inventory"), name="inventory")
app.add_typer(people.assess_app, name="assess")
app.command("backup")(rights.backup_command)
app.command("restore")(rights.restore_command)
app.add_typer(rights.retention_app, name="retention")


#: Files careplan creates are its user's only: stores, logs, tokens, NATS's store (its child).
UMASK = 0o077


def main() -> None:
    os.umask(UMASK)
    app()
