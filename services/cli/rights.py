"""A client's rights around the record (issue 16): ``careplan client access-report`` (who
read the client's data; registered on ``careplan client``, services.cli.client), ``careplan
backup|restore`` and ``careplan retention run``."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from services.cli.calling import (
    ApiUrl,
    Caller,
    Forged,
    ForgedRole,
    Local,
    Token,
    TokenFile,
    operator,
    refuse_typed_identity,
)
from services.cli.common import DataDir, _settings, console

Purpose = Annotated[str | None, typer.Option("--purpose", help="Why you ask: recorded with the request; required.")]


def access_report(
    client: Annotated[str, typer.Argument(help="The client's id.")],
    start: Annotated[str | None, typer.Option("--from", help="RFC 3339 with a zone (inclusive); default: the start.")]
    = None,
    end: Annotated[str | None, typer.Option("--to", help="RFC 3339 with a zone (exclusive); default: now.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="json or html.")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: standard output).")]
    = None,
    purpose: Purpose = None, data_dir: DataDir = None, api: ApiUrl = None, token: Token = None,
    token_file: TokenFile = None, local: Local = False, actor: Forged = None, role: ForgedRole = None,
) -> None:
    """Every read of the client's data in the period: when, who, role, purpose, what, outcome (an auditor's
    token; the request is itself recorded in the audit access log)."""
    refuse_typed_identity(actor, role)
    if output_format not in ("json", "html"):
        raise typer.BadParameter("--format must be json or html")
    moments = {}
    for name, value in (("from", start), ("to", end)):
        if value is not None:
            try:
                moments[name] = datetime.fromisoformat(value)
            except ValueError as e:
                raise typer.BadParameter(f"--{name} must be RFC 3339, e.g. 2026-05-04T09:00:00Z") from e
    if local:
        from domain.errors import DomainError
        from services.audit.access_report import to_html
        from services.audit.auditor import Auditor

        try:
            report = Auditor(_settings(data_dir), operator(), purpose).access_report(
                client, start=moments.get("from"), end=moments.get("to"))
        except DomainError as e:
            console.print(f"[red]{e}[/red]")
            raise typer.Exit(1) from e
        text = to_html(report) if output_format == "html" else report.model_dump_json(indent=2)
    else:
        caller = Caller(api, token, token_file, data_dir)
        answer = caller.request("GET", f"/audit/clients/{client}/access-report",
                                params={"from": start, "to": end, "format": output_format},
                                headers={"X-Audit-Purpose": purpose} if purpose else {})
        text = answer.text
    if output is None:
        print(text)
        return
    partial = output.with_name(output.name + ".part")
    partial.write_text(text, encoding="utf-8")
    partial.replace(output)
    console.print(f"wrote {output}")


def backup_command(
    dest: Annotated[Path, typer.Argument(help="A new folder for the backup (it appears only once whole).")],
    data_dir: DataDir = None,
) -> None:
    """Back up the whole data folder and the embedded NATS's streams (and the PostgreSQL schemas), with the system
    stopped, so the stores, their positions and the streams agree."""
    from services.operations.backup import BackupError, backup

    try:
        manifest = backup(_settings(data_dir), dest)
    except BackupError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        raise typer.Exit(1) from e
    console.print(f"backup written to {dest}: {len(manifest['files'])} files"
                  f"{', the PostgreSQL schemas' if manifest['postgres'] else ''}"
                  f"{', the JetStream store' if manifest['jetstream'] else ''}; {manifest['tombstones']} erasures known",
                  highlight=False)


def restore_command(
    src: Annotated[Path, typer.Argument(help="A folder written by `careplan backup`.")],
    tombstones: Annotated[list[Path] | None, typer.Option(
        "--tombstones", help="A tombstones.json of another backup (newer erasures); repeatable.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Restore a backup into the data folder (the current one is moved aside), then erase again every client erased
    since the backup: their keys destroyed, their subjects purged from the streams, the read models rebuilt."""
    import json

    from services.operations.backup import BackupError, restore

    try:
        done = restore(_settings(data_dir), src, extra_tombstones=tombstones or ())
    except BackupError as e:
        console.print(f"[red]{e}[/red]", highlight=False)
        raise typer.Exit(1) from e
    print(json.dumps(done, indent=2))
    console.print("restored; check it with `careplan audit verify` before `careplan up`",
                  highlight=False)


retention_app = typer.Typer(help="Retention: erase clients whose care ended longer ago than the retention period.",
                            no_args_is_help=True)


@retention_app.command("run")
def retention_run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List who would be erased; change nothing.")] = False,
    now: Annotated[str | None, typer.Option("--now", help="Judge at this moment (RFC 3339 with a zone; default: now)."
                                            )] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdicts as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Erase every client whose plans all ended (completed or revoked) more than CAREPLAN_RETENTION_DAYS ago, with no
    open plan and no legal hold; --dry-run lists them (and why the others stay)."""
    import json
    from datetime import UTC

    from rich.table import Table

    from services.operations.retention import run

    settings = _settings(data_dir)
    try:
        moment = datetime.fromisoformat(now) if now else datetime.now(UTC)
    except ValueError as e:
        raise typer.BadParameter("--now must be RFC 3339, e.g. 2046-05-04T09:00:00Z") from e
    if moment.tzinfo is None:
        raise typer.BadParameter("--now needs a time zone (e.g. Z)")
    if not settings.retention_days:
        console.print("no retention period is set (CAREPLAN_RETENTION_DAYS=0): nothing is erased for age",
                      highlight=False)
    judged = run(settings, moment, dry_run=dry_run)
    if as_json:
        print(json.dumps([j.model_dump(mode="json") for j in judged], indent=2))
    else:
        table = Table(title=f"Retention at {moment.isoformat()}" + (" (dry run)" if dry_run else ""))
        for column in ("client", "plans", "care ended", "period passes", "verdict"):
            table.add_column(column)
        for j in judged:
            table.add_row(j.client_id, str(j.plans), j.ended_at.isoformat(timespec="seconds") if j.ended_at else "-",
                          j.due_at.isoformat(timespec="seconds") if j.due_at else "-",
                          j.verdict + (f": {j.detail}" if j.detail else ""))
        console.print(table)
    if any(j.verdict == "refused" for j in judged):
        raise typer.Exit(1)
