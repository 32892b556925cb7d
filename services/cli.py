"""The ``careplan`` command. Reads settings from the environment once, here at the edge."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, Literal
from uuid import UUID

import typer
from rich.console import Console

from services.shared.settings import Settings

app = typer.Typer(help="careplan: an event-sourced care-plan engine for psychotherapy services.", no_args_is_help=True)
escalation_app = typer.Typer(help="Crises: list, acknowledge, resolve (on the escalation service's store).", no_args_is_help=True)
contracts_app = typer.Typer(help="Generate or check the public event contracts.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures and RESULT lines.", no_args_is_help=True)
api_app = typer.Typer(help="The HTTP API: serve it, make tokens.", no_args_is_help=True)
audit_app = typer.Typer(
    help="Auditors: history, replay, diff, trace, verify, export (every read is recorded).", no_args_is_help=True
)
app.add_typer(contracts_app, name="contracts")
app.add_typer(bench_app, name="bench")
app.add_typer(escalation_app, name="escalation")
app.add_typer(audit_app, name="audit")
app.add_typer(api_app, name="api")
deadletter_app = typer.Typer(
    help="Dead letters of every service: list, show, redrive (decided again by the service).", no_args_is_help=True
)
app.add_typer(deadletter_app, name="deadletter")
store_app = typer.Typer(help="A store against what was published from it: check, recover after a restore.",
                        no_args_is_help=True)
app.add_typer(store_app, name="store")


def _people_commands() -> None:
    from services.people_cli import assess_app, collection_app

    app.add_typer(collection_app("plans", "care plan"), name="plan")
    app.add_typer(collection_app("courses", "therapy course"), name="course")
    app.add_typer(collection_app("inventories", "interpersonal inventory"), name="inventory")
    app.add_typer(assess_app, name="assess")


_people_commands()

console = Console()


def _settings(data_dir: Path | None = None) -> Settings:
    settings = Settings()
    if data_dir is not None:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


@contracts_app.command("generate")
def contracts_generate() -> None:
    """Write the JSON Schemas and the AsyncAPI document from the event classes."""
    from contracts.generate import CONTRACTS_DIR, generate

    changed = generate()
    for rel in changed:
        console.print(f"wrote {rel}")
    console.print(f"{len(changed)} file(s) changed under {CONTRACTS_DIR}")


@contracts_app.command("check")
def contracts_check() -> None:
    """Exit non-zero when the checked-in contracts differ from what the code generates."""
    from contracts.generate import check

    problems = check()
    for problem in problems:
        console.print(f"[red]{problem}[/red]")
    if problems:
        console.print("Contracts are out of date: run `careplan contracts generate` and commit the result.")
        raise typer.Exit(1)
    console.print("contracts are current")


@app.command()
def demo(
    data_dir: Annotated[Path | None, typer.Option(help="Where to keep the SQLite files (default: a new folder).")] = None,
) -> None:
    """Run a realistic care story and print it as a timeline; the data stays for inspection."""
    from services.demo import run_demo

    settings = _settings(data_dir)
    if data_dir is None:
        settings = settings.model_copy(update={"data_dir": Path("careplan-data") / "demo"})
    run_demo(settings, console)


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (SQLite files, JetStream store).")] = None,
    ready_file: Annotated[Path | None, typer.Option(help="Write {nats, api, data_dir} as JSON here once ready.")] = None,
) -> None:
    """Run the whole system on this machine until Ctrl-C or SIGTERM."""
    import signal
    import threading

    from services.system import System

    _logging()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with System(_settings(data_dir)) as system:
        console.print(system.ready_line())
        if ready_file is not None:
            system.write_ready_file(ready_file)
        stop.wait()
        console.print("careplan stopping: relays finish what is in flight and record their position")
    console.print("careplan stopped")


@app.command()
def relay(
    ready_file: Annotated[Path | None, typer.Option(help="Written once the relay is publishing.")] = None,
) -> None:
    """Run the care application's relay (store → JetStream) as a process of its own."""
    from services.relay_process import run_relay_process

    _logging()
    run_relay_process(_settings(), ready_file=ready_file)


@app.command()
def service(
    name: Annotated[
        Literal["assessment", "escalation", "scheduling", "care-policies"], typer.Argument(help="Which service to run.")
    ],
    ready_file: Annotated[Path | None, typer.Option(help="Written once the service is consuming.")] = None,
) -> None:
    """Run one service alone against CAREPLAN_NATS_URL: its consumer and its relay."""
    from services.shared.runner import run_service_process

    _logging()
    if name == "assessment":
        from services.assessment.process import make
    elif name == "escalation":
        from services.escalation.process import make
    elif name == "scheduling":
        from services.scheduling.process import make
    else:
        from services.care.process import make
    run_service_process(_settings(), make, ready_file=ready_file)


ActorId = Annotated[str, typer.Option("--actor", help="Your pseudonymous id.")]
ActorRole = Annotated[str, typer.Option("--role", help="clinician or supervisor")]


@api_app.command("serve")
def api_serve(
    ready_file: Annotated[Path | None, typer.Option(help="Written with the API's address once it listens.")] = None,
) -> None:
    """Serve the HTTP API (CAREPLAN_API_HOST / CAREPLAN_API_PORT; port 0 picks a free one)."""
    from services.api.server import serve

    _logging()
    serve(_settings(), ready_file=ready_file)


@api_app.command("add-token")
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


AuditActor = Annotated[str, typer.Option("--actor", envvar="CAREPLAN_AUDIT_ACTOR", help="Who reads (recorded).")]
Purpose = Annotated[str | None, typer.Option("--purpose", help="Why you read: recorded with the read; required.")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data folder of the stores.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _auditor(data_dir: Path | None, actor: str, purpose: str | None) -> Any:
    from domain.base import Actor, Role
    from services.audit.auditor import Auditor

    return Auditor(_settings(data_dir), Actor(id=actor, role=Role.AUDITOR), purpose)


def _audit(run: Callable[[], Any]) -> Any:
    from domain.errors import DomainError

    try:
        return run()
    except DomainError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from e


def _point(value: str) -> Any:
    """A version number or an RFC 3339 moment."""
    from datetime import datetime

    return int(value) if value.isdigit() else datetime.fromisoformat(value)


@audit_app.command("history")
def audit_history(aggregate_id: UUID, actor: AuditActor, purpose: Purpose = None, data_dir: DataDir = None,
                  as_json: Json = False) -> None:
    """Every event of one aggregate: version, time, who (role), why, and what, in a line."""
    import json

    from rich.table import Table

    store, entries = _audit(lambda: _auditor(data_dir, actor, purpose).history(aggregate_id))
    if as_json:
        print(json.dumps({"store": store, "events": [e.model_dump(mode="json") for e in entries]}, indent=2))
        return
    table = Table(title=f"History of {aggregate_id} ({store} store)")
    for column in ("v", "recorded", "who", "what", "why"):
        table.add_column(column)
    for e in entries:
        table.add_row(str(e.version), e.recorded.isoformat(timespec="seconds"), f"{e.actor} ({e.role})", e.summary, e.reason or "")
    console.print(table)


@audit_app.command("replay")
def audit_replay(
    aggregate_id: UUID, actor: AuditActor, purpose: Purpose = None,
    at: Annotated[str | None, typer.Option(help="RFC 3339 moment: the state after every event recorded by then.")] = None,
    version: Annotated[int | None, typer.Option(help="The state at this version.")] = None,
    data_dir: DataDir = None, as_json: Json = False,
) -> None:
    """The aggregate's state at a moment or version, readably or as JSON."""
    import json
    from datetime import datetime

    from rich.table import Table

    moment = datetime.fromisoformat(at) if at else None
    replayed = _audit(lambda: _auditor(data_dir, actor, purpose).replay(aggregate_id, at=moment, version=version))
    if as_json:
        print(replayed.model_dump_json(indent=2))
        return
    table = Table(title=f"{replayed.aggregate_type} {aggregate_id} at version {replayed.version} "
                        f"(as recorded {replayed.as_recorded_at.isoformat(timespec='seconds')})", show_header=False)
    for name, value in replayed.state.items():
        table.add_row(name, value if isinstance(value, str) else json.dumps(value))
    console.print(table)


@audit_app.command("diff")
def audit_diff(
    aggregate_id: UUID,
    start: Annotated[str, typer.Argument(metavar="FROM", help="Version or RFC 3339 moment.")],
    end: Annotated[str, typer.Argument(metavar="TO", help="Version or RFC 3339 moment.")],
    actor: AuditActor, purpose: Purpose = None, data_dir: DataDir = None, as_json: Json = False,
) -> None:
    """What changed between two versions or moments, field by field, and the events between."""
    from rich.table import Table

    result = _audit(lambda: _auditor(data_dir, actor, purpose).diff(aggregate_id, _point(start), _point(end)))
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    table = Table(title=f"{aggregate_id}: version {result.from_version} → {result.to_version}")
    for column in ("field", "before", "after"):
        table.add_column(column)
    for change in result.changes:
        table.add_row(change.path, "" if change.before is None else str(change.before),
                      "" if change.after is None else str(change.after))
    console.print(table)
    for e in result.events_between:
        console.print(f"  v{e.version} {e.recorded.isoformat(timespec='seconds')} {e.actor}: {e.summary}")


@audit_app.command("trace")
def audit_trace(event_id: UUID, actor: AuditActor, purpose: Purpose = None, data_dir: DataDir = None,
                as_json: Json = False) -> None:
    """The causation chain of an event: back to its origin and forward to its effects, across stores."""
    from rich.table import Table

    result = _audit(lambda: _auditor(data_dir, actor, purpose).trace(event_id))
    if as_json:
        print(result.model_dump_json(indent=2))
        return
    table = Table(title=f"Causation of {event_id}")
    for column in ("", "recorded", "store", "what", "who"):
        table.add_column(column)
    for mark, hops in (("cause", result.causes), ("THIS", [result.event]), ("effect", result.effects)):
        for h in hops:
            table.add_row(mark, h.recorded.isoformat(timespec="milliseconds"), h.store, h.summary, f"{h.actor} ({h.role})")
    console.print(table)


@audit_app.command("export")
def audit_export(
    actor: AuditActor,
    aggregate_id: Annotated[UUID | None, typer.Argument(help="Any aggregate of the client.")] = None,
    client: Annotated[str | None, typer.Option("--client", help="The client's id.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="json or html.")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: standard output).")] = None,
    purpose: Purpose = None, data_dir: DataDir = None,
) -> None:
    """A client's whole care history (all records, with the services' decisions) as JSON or a printable HTML report."""
    from services.audit.export import to_html

    if (aggregate_id is None) == (client is None):
        raise typer.BadParameter("name either an aggregate id or --client")
    if output_format not in ("json", "html"):
        raise typer.BadParameter("--format must be json or html")
    result = _audit(lambda: _auditor(data_dir, actor, purpose).export(client_id=client, aggregate_id=aggregate_id))
    text = result.model_dump_json(indent=2) if output_format == "json" else to_html(result)
    if output is None:
        print(text)
    else:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")


@audit_app.command("access-log")
def audit_access_log(data_dir: DataDir = None, as_json: Json = False) -> None:
    """Who read which history, when and why (the auditors' own record)."""
    import json

    from rich.table import Table

    from services.audit.access import AccessLog

    log = AccessLog(_settings(data_dir))
    try:
        entries = log.entries()
    finally:
        log.close()
    if as_json:
        print(json.dumps([{"at": e.timestamp.isoformat(), "actor": e.actor.id, "role": e.actor.role.value,
                           "function": e.function, "subject": e.subject, "purpose": e.purpose} for e in entries], indent=2))
        return
    table = Table(title="Audit access log")
    for column in ("when", "who", "read", "of", "why"):
        table.add_column(column)
    for e in entries:
        table.add_row(e.timestamp.isoformat(timespec="seconds"), f"{e.actor.id} ({e.actor.role.value})", e.function,
                      e.subject, e.purpose)
    console.print(table)


@audit_app.command("verify")
def audit_verify(
    data_dir: Annotated[Path | None, typer.Option(help="Data folder whose stores to check.")] = None,
    anchor: Annotated[Path | None, typer.Option(help="JSON list of published chain heads to check against.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
) -> None:
    """Recompute every store's hash chain; exit 1 at the first edited, deleted, inserted or
    reordered stored event (or a chain that no longer matches a published head)."""
    import json

    from rich.table import Table

    from services.audit.integrity import Anchor, verify_all

    anchors = [Anchor.model_validate(a) for a in json.loads(anchor.read_text())] if anchor else []
    reports = verify_all(_settings(data_dir), anchors)
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in reports], indent=2))
    else:
        table = Table(title="Hash chains of the notification logs")
        for column in ("store", "events", "head", "result"):
            table.add_column(column)
        for r in reports:
            result = "[green]OK[/green]" if r.ok else (
                f"[red]{r.first_break.kind} at position {r.first_break.position}[/red]: {r.first_break.detail}"  # type: ignore[union-attr]
            )
            table.add_row(r.store, str(r.events), f"{r.head_position} {r.head_link[:16]}…", result)
        console.print(table)
    if not reports or not all(r.ok for r in reports):
        raise typer.Exit(1)


@escalation_app.command("list")
def escalation_list(data_dir: Annotated[Path | None, typer.Option()] = None) -> None:
    """Crises not yet resolved."""
    from rich.table import Table

    from services.escalation.service import EscalationApplication

    escalation = EscalationApplication(_settings(data_dir))
    try:
        table = Table(title="Open crises")
        for column in ("crisis", "plan", "severity", "status", "level", "acknowledge by"):
            table.add_column(column)
        for crisis in escalation.open_crises():
            due = crisis.ack_due.isoformat() if crisis.ack_due else "-"
            table.add_row(str(crisis.id), str(crisis.plan_id), crisis.severity.value, crisis.status.value,
                          f"{crisis.level} (round {crisis.round})", due)
        console.print(table)
    finally:
        escalation.close()


@escalation_app.command("ack")
def escalation_ack(
    crisis: Annotated[str, typer.Argument(help="Crisis id")],
    reason: Annotated[str, typer.Option(help="What you did or will do.")],
    actor: ActorId,
    role: ActorRole = "clinician",
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Acknowledge a crisis: escalation to further levels stops."""
    _escalation_command(data_dir, lambda app, who: app.acknowledge(UUID(crisis), actor=who, reason=reason), actor, role)


@escalation_app.command("resolve")
def escalation_resolve(
    crisis: Annotated[str, typer.Argument(help="Crisis id")],
    outcome: Annotated[str, typer.Option(help="How the crisis ended.")],
    reason: Annotated[str, typer.Option(help="Why it is resolved.")],
    actor: ActorId,
    role: ActorRole = "clinician",
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Resolve a crisis with its outcome."""
    _escalation_command(
        data_dir, lambda app, who: app.resolve(UUID(crisis), actor=who, outcome=outcome, reason=reason), actor, role
    )


def _escalation_command(data_dir: Path | None, run: Callable[[Any, Any], Any], actor: str, role: str) -> None:
    from domain.base import Actor, Role
    from domain.errors import DomainError
    from services.escalation.service import EscalationApplication

    escalation = EscalationApplication(_settings(data_dir))
    try:
        crisis = run(escalation, Actor(id=actor, role=Role(role)))
    except (DomainError, ValueError) as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    finally:
        escalation.close()
    console.print(f"crisis {crisis.id}: {crisis.status.value}")


@deadletter_app.command("list")
def deadletter_list(
    status: Annotated[str | None, typer.Option(help="open, redrive_requested, redriven or redrive_failed.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Messages a service could not decide, oldest first (ids and error classes only)."""
    import json as _json

    from rich.table import Table

    from domain.operations.dead_letter import DeadLetterStatus
    from services.operations.dead_letters import DeadLetterDesk, summary

    desk = DeadLetterDesk(_settings(data_dir))
    try:
        letters = desk.list(DeadLetterStatus(status) if status else None)
    finally:
        desk.close()
    if as_json:
        for letter in letters:
            console.print_json(_json.dumps(summary(letter)))
        return
    table = Table(title=f"Dead letters ({len(letters)})")
    for column in ("dead letter", "service", "status", "when", "message", "error", "risk"):
        table.add_column(column)
    for letter in letters:
        table.add_row(str(letter.id), letter.service, letter.status.value, letter.created_on.strftime("%Y-%m-%d %H:%M:%S"),
                      f"{letter.failed_event_type} {letter.failed_event_id or ''}".strip(),
                      f"{letter.error_class}{' at ' + ', '.join(letter.field_paths) if letter.field_paths else ''}",
                      "[red]risk signal[/red]" if letter.risk_signal else "")
    console.print(table)


@deadletter_app.command("show")
def deadletter_show(
    dead_letter: Annotated[UUID, typer.Argument(help="Dead letter id (from `careplan deadletter list`).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    data_dir: DataDir = None,
) -> None:
    """One dead letter: where its message came from, why it failed, every redrive."""
    import json as _json

    from domain.errors import DomainError
    from services.operations.dead_letters import DeadLetterDesk, summary

    desk = DeadLetterDesk(_settings(data_dir))
    try:
        letter, history = desk.show(dead_letter)
    except DomainError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    finally:
        desk.close()
    shown = summary(letter) | {"history": [
        {"at": e.timestamp.isoformat(), "actor": e.actor.id, "role": e.actor.role.value, "what": e.describe()}
        for e in history
    ]}
    if as_json:
        console.print_json(_json.dumps(shown))
        return
    for key, value in shown.items():
        if key != "history":
            console.print(f"[bold]{key}[/bold]: {value}")
    for entry in shown["history"]:
        console.print(f"  {entry['at']}  {entry['actor']} ({entry['role']}): {entry['what']}")


@deadletter_app.command("park")
def deadletter_park(
    consumer: Annotated[str, typer.Argument(help="The halted consumer: care-policies, assessment, escalation, scheduling.")],
    stream_sequence: Annotated[int, typer.Argument(help="The stream sequence of the message it halted on (in its alarm).")],
    reason: Annotated[str, typer.Option(help="Why it is set aside (recorded with your name).")],
    nats_url: Annotated[str | None, typer.Option("--nats", help="The NATS server (default: CAREPLAN_NATS_URL).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Set aside the message a consumer halted on (a forged one, say) as a dead letter, so it
    goes on; a message that may carry a risk signal is escalated as such."""
    from services.operations.recovery import RecoveryRefusedError, park

    async def work(recovery: Any) -> Any:
        return await park(recovery.settings, consumer, stream_sequence, recovery.js, reason=reason)

    try:
        letter = _with_recovery("care", nats_url, data_dir, work)
    except RecoveryRefusedError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    console.print(f"dead letter {letter.id}: stream message {stream_sequence} set aside for {consumer}"
                  + ("; a fail-safe escalation follows" if letter.risk_signal else ""))


@deadletter_app.command("redrive")
def deadletter_redrive(
    dead_letter: Annotated[UUID, typer.Argument(help="Dead letter id.")],
    reason: Annotated[str, typer.Option(help="Why it can be decided now (recorded with your name).")],
    wait: Annotated[float, typer.Option(help="Seconds to wait for the service's outcome (0: do not wait).")] = 30.0,
    data_dir: DataDir = None,
) -> None:
    """Ask the service to decide the message again; it records the outcome on the dead letter.
    Recorded as you, the operating-system user, in the operator role."""
    from domain.errors import DomainError
    from domain.operations.dead_letter import DeadLetterStatus
    from services.operations.dead_letters import DeadLetterDesk, operator

    desk = DeadLetterDesk(_settings(data_dir))
    try:
        letter = desk.request_redrive(dead_letter, actor=operator(), reason=reason)
        console.print(f"dead letter {letter.id}: redrive requested of the {letter.service} service")
        if wait > 0:
            letter = desk.wait_for_outcome(dead_letter, wait)
    except DomainError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    finally:
        desk.close()
    if letter.status is DeadLetterStatus.REDRIVEN:
        console.print(f"[green]redriven[/green]: the {letter.service} service decided it again")
    elif letter.status is DeadLetterStatus.REDRIVE_FAILED:
        console.print(f"[red]the redrive failed again[/red] (`careplan deadletter show {letter.id}` says why)")
        raise typer.Exit(1)
    else:
        console.print(f"not redriven yet: the {letter.service} service does it when it runs")


StoreName = Annotated[str, typer.Argument(help="care, assessment, escalation or scheduling.")]
NatsUrl = Annotated[str | None, typer.Option("--nats", help="The NATS server (default: CAREPLAN_NATS_URL; "
                                                              "`careplan up` prints its own).")]


def _with_recovery(store: str, nats_url: str | None, data_dir: Path | None, work: Callable[[Any], Any]) -> Any:
    import asyncio

    from services.operations.recovery import StoreRecovery
    from services.shared.bus import connect

    settings = _settings(data_dir)
    url = nats_url or settings.nats_url
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


@store_app.command("check")
def store_check(store: StoreName, nats_url: NatsUrl = None, data_dir: DataDir = None) -> None:
    """Compare a store with its relay's position, the stream and its consumers; exit 1 if they disagree."""

    async def check(recovery: Any) -> Any:
        return (await recovery.diagnose())[0]

    diagnosis = _with_recovery(store, nats_url, data_dir, check)
    for line in diagnosis.lines():
        console.print(line)
    if not diagnosis.healthy:
        console.print("Mend it with `careplan store recover` (docs/operations.md, restored store).")
        raise typer.Exit(1)


@store_app.command("recover")
def store_recover(
    store: StoreName,
    nats_url: NatsUrl = None,
    discard_unpublished: Annotated[bool, typer.Option(
        help="Drop events written after the restore that collide with published ones (never published).")] = False,
    data_dir: DataDir = None,
) -> None:
    """After a restore: take published events back from the stream, move unpublished ones after
    them, set the relay's position, let behind consumers read again. The relay and halted
    consumers go on by themselves; restart the services to rebuild their timers."""
    from services.operations.recovery import RecoveryRefusedError

    async def recover(recovery: Any) -> Any:
        return await recovery.recover(discard_unpublished=discard_unpublished)

    try:
        diagnosis = _with_recovery(store, nats_url, data_dir, recover)
    except RecoveryRefusedError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None
    for line in diagnosis.lines():
        console.print(line)
    console.print("[green]recovered[/green]" if not diagnosis.healthy else "nothing was changed")


def _logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@bench_app.command("store")
def bench_store(
    backend: Annotated[Literal["sqlite", "postgres"], typer.Option(help="Which event store backend to measure.")] = "sqlite",
    commands: Annotated[int, typer.Option(help="Commands per save measurement.")] = 3000,
    replay_events: Annotated[int, typer.Option(help="Events in the replayed aggregate.")] = 10_000,
) -> None:
    """Saves/s vs. a plain eventsourcing Application, and replay vs. the library's JSON path."""
    from services.bench.store import run_store_benchmark

    run_store_benchmark(_settings(), backend=backend, commands=commands, replay_events=replay_events, console=console)


@bench_app.command("relay")
def bench_relay(
    events: Annotated[int, typer.Option(help="Stored events relayed in the throughput measurement.")] = 20_000,
    rate: Annotated[float, typer.Option(help="Commands per second in the latency measurement.")] = 200,
    seconds: Annotated[float, typer.Option(help="Length of the latency measurement.")] = 10,
) -> None:
    """Relay throughput vs. raw nats-py publish_async, and commit-to-subscriber latency."""
    from services.bench.relay import run_relay_benchmark

    run_relay_benchmark(_settings(), events=events, rate=rate, seconds=seconds, console=console)


@bench_app.command("crisis")
def bench_crisis(
    rate: Annotated[float, typer.Option(help="Questionnaire submissions per second.")] = 100,
    seconds: Annotated[float, typer.Option(help="Length of the latency measurement.")] = 10,
    share: Annotated[float, typer.Option(help="Share of submissions with PHQ-9 item 9 positive.")] = 0.2,
    submissions: Annotated[int, typer.Option(help="Submissions in the throughput measurement.")] = 2000,
) -> None:
    """Crisis latency vs. its floor, and scoring throughput vs. a raw ack-only consumer."""
    from services.bench.crisis import run_crisis_benchmark

    run_crisis_benchmark(_settings(), rate=rate, seconds=seconds, share=share, submissions=submissions, console=console)


@bench_app.command("audit")
def bench_audit(
    backend: Annotated[Literal["sqlite", "postgres"], typer.Option(help="Store for both paths.")] = "sqlite",
    events: Annotated[int, typer.Option(help="Events of the plan replayed at a moment.")] = 10_000,
    verify_events: Annotated[int, typer.Option(help="Stored events the chain is verified over.")] = 100_000,
) -> None:
    """Point-in-time replay vs. the library's replay; hash-chain verification rate."""
    from services.bench.audit import run_audit_benchmark

    settings = _settings().model_copy(update={"database": backend})
    run_audit_benchmark(settings, events=events, verify_events=verify_events, console=console)


@bench_app.command("api")
def bench_api(
    backend: Annotated[Literal["sqlite", "postgres"], typer.Option(help="Store for both paths.")] = "sqlite",
    commands: Annotated[int, typer.Option(help="Commands in the throughput measurement.")] = 2000,
    rate: Annotated[float, typer.Option(help="Commands per second in the latency measurement.")] = 100,
    seconds: Annotated[float, typer.Option(help="Length of the latency measurement.")] = 10,
    clients: Annotated[int, typer.Option(help="HTTP clients sending at once in the throughput measurement.")] = 4,
    workers: Annotated[int, typer.Option(help="API worker processes (CAREPLAN_API_WORKERS).")] = 1,
) -> None:
    """Commands through the HTTP API vs. the Python application; p50/p99 at a steady rate."""
    from services.bench.api import run_api_benchmark

    settings = _settings().model_copy(update={"database": backend})
    run_api_benchmark(settings, commands=commands, rate=rate, seconds=seconds, clients=clients, workers=workers,
                      console=console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
