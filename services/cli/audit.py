"""``careplan audit ...``: the auditors' reads (history, replay, diff, trace, export, access log)
and the hash-chain check; every read is recorded."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

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
from services.cli.common import DataDir, Json, _settings, console

app = typer.Typer(
    help="Auditors: history, replay, diff, trace, verify, export (every read is recorded).", no_args_is_help=True
)

Purpose = Annotated[str | None, typer.Option("--purpose", help="Why you read: recorded with the read; required.")]


class _ThroughApi:
    """The auditor's reads through the HTTP API (``/audit/...``): the token's actor is the one
    recorded in the access log, with the purpose; answers the same models as ``Auditor``."""

    def __init__(self, caller: Caller, purpose: str | None) -> None:
        self.caller = caller
        self.headers = {"X-Audit-Purpose": purpose} if purpose else {}

    def _get(self, path: str, **params: Any) -> Any:
        return self.caller.request("GET", path, params=params, headers=self.headers)

    def history(self, aggregate_id: UUID) -> tuple[str, list[Any]]:
        from services.audit.reading import HistoryEntry

        answer = self._get(f"/audit/aggregates/{aggregate_id}/history").json()
        return answer["store"], [HistoryEntry.model_validate(e) for e in answer["events"]]

    def replay(self, aggregate_id: UUID, *, at: Any = None, version: int | None = None) -> Any:
        from services.audit.reading import Replayed

        answer = self._get(f"/audit/aggregates/{aggregate_id}/replay", at=at.isoformat() if at else None,
                           version=version)
        return Replayed.model_validate_json(answer.content)

    def diff(self, aggregate_id: UUID, start: Any, end: Any) -> Any:
        from services.audit.reading import Diff

        point = {k: v.isoformat() if hasattr(v, "isoformat") else str(v) for k, v in (("from", start), ("to", end))}
        return Diff.model_validate_json(self._get(f"/audit/aggregates/{aggregate_id}/diff", **point).content)

    def trace(self, event_id: UUID) -> Any:
        from services.audit.reading import Trace

        return Trace.model_validate_json(self._get(f"/audit/events/{event_id}/trace").content)

    def export_text(self, *, client_id: str | None = None, aggregate_id: UUID | None = None,
                    output_format: str = "json", indent: int | None = None) -> Iterator[str]:
        """The API's export as it arrives (the same text as ``Auditor.export_text``)."""
        if client_id is None:
            raise typer.BadParameter("through the API, name the client (--client); an aggregate id needs --local")
        return self.caller.stream(f"/audit/clients/{client_id}/export", headers=self.headers,
                                  params={"format": output_format, "indent": indent if output_format == "json" else None})


def _auditor(data_dir: Path | None, purpose: str | None, api: str | None, token: str | None,
             token_file: Path | None, local: bool) -> Any:
    """Through the API with the token, or (``--local``) the operator at this machine on the
    stores, recorded in the access log as such with the purpose."""
    if not local:
        return _ThroughApi(Caller(api, token, token_file, data_dir), purpose)
    from services.audit.auditor import Auditor

    return Auditor(_settings(data_dir), operator(), purpose)


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


@app.command("history")
def audit_history(aggregate_id: UUID, purpose: Purpose = None, data_dir: DataDir = None, as_json: Json = False,
    api: ApiUrl = None, token: Token = None, token_file: TokenFile = None, local: Local = False,
    actor: Forged = None, role: ForgedRole = None,
) -> None:
    """Every event of one aggregate: version, time, who (role), why, and what, in a line."""
    refuse_typed_identity(actor, role)
    import json

    from rich.table import Table

    store, entries = _audit(lambda: _auditor(data_dir, purpose, api, token, token_file, local).history(aggregate_id))
    if as_json:
        print(json.dumps({"store": store, "events": [e.model_dump(mode="json") for e in entries]}, indent=2))
        return
    table = Table(title=f"History of {aggregate_id} ({store} store)")
    for column in ("v", "recorded", "who", "what", "why"):
        table.add_column(column)
    for e in entries:
        table.add_row(str(e.version), e.recorded.isoformat(timespec="seconds"), f"{e.actor} ({e.role})", e.summary, e.reason or "")
    console.print(table)


@app.command("replay")
def audit_replay(
    aggregate_id: UUID, purpose: Purpose = None,
    at: Annotated[str | None, typer.Option(help="RFC 3339 moment: the state after every event recorded by then.")] = None,
    version: Annotated[int | None, typer.Option(help="The state at this version.")] = None,
    data_dir: DataDir = None, as_json: Json = False,
    api: ApiUrl = None, token: Token = None, token_file: TokenFile = None, local: Local = False,
    actor: Forged = None, role: ForgedRole = None,
) -> None:
    """The aggregate's state at a moment or version, readably or as JSON."""
    refuse_typed_identity(actor, role)
    import json
    from datetime import datetime

    from rich.table import Table

    moment = datetime.fromisoformat(at) if at else None
    replayed = _audit(lambda: _auditor(data_dir, purpose, api, token, token_file, local).replay(aggregate_id, at=moment, version=version))
    if as_json:
        print(replayed.model_dump_json(indent=2))
        return
    table = Table(title=f"{replayed.aggregate_type} {aggregate_id} at version {replayed.version} "
                        f"(as recorded {replayed.as_recorded_at.isoformat(timespec='seconds')})", show_header=False)
    for name, value in replayed.state.items():
        table.add_row(name, value if isinstance(value, str) else json.dumps(value))
    console.print(table)


@app.command("diff")
def audit_diff(
    aggregate_id: UUID,
    start: Annotated[str, typer.Argument(metavar="FROM", help="Version or RFC 3339 moment.")],
    end: Annotated[str, typer.Argument(metavar="TO", help="Version or RFC 3339 moment.")],
    purpose: Purpose = None, data_dir: DataDir = None, as_json: Json = False,
    api: ApiUrl = None, token: Token = None, token_file: TokenFile = None, local: Local = False,
    actor: Forged = None, role: ForgedRole = None,
) -> None:
    """What changed between two versions or moments, field by field, and the events between."""
    refuse_typed_identity(actor, role)
    from rich.table import Table

    result = _audit(lambda: _auditor(data_dir, purpose, api, token, token_file, local).diff(aggregate_id, _point(start), _point(end)))
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


@app.command("trace")
def audit_trace(event_id: UUID, purpose: Purpose = None, data_dir: DataDir = None, as_json: Json = False,
    api: ApiUrl = None, token: Token = None, token_file: TokenFile = None, local: Local = False,
    actor: Forged = None, role: ForgedRole = None,
) -> None:
    """The causation chain of an event: back to its origin and forward to its effects, across stores."""
    refuse_typed_identity(actor, role)
    from rich.table import Table

    result = _audit(lambda: _auditor(data_dir, purpose, api, token, token_file, local).trace(event_id))
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


@app.command("export")
def audit_export(
    aggregate_id: Annotated[UUID | None, typer.Argument(help="Any aggregate of the client.")] = None,
    client: Annotated[str | None, typer.Option("--client", help="The client's id.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="json or html.")] = "json",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: standard output).")] = None,
    purpose: Purpose = None, data_dir: DataDir = None, api: ApiUrl = None, token: Token = None,
    token_file: TokenFile = None, local: Local = False, actor: Forged = None, role: ForgedRole = None,
) -> None:
    """A client's whole care history (all records, with the services' decisions) as JSON or a printable HTML report."""
    refuse_typed_identity(actor, role)
    if (aggregate_id is None) == (client is None):
        raise typer.BadParameter("name either an aggregate id or --client")
    if output_format not in ("json", "html"):
        raise typer.BadParameter("--format must be json or html")
    # written a piece at a time as it is read (from the API, or from the stores), never held whole (issue 13)
    auditor = _auditor(data_dir, purpose, api, token, token_file, local)
    pieces = _audit(lambda: auditor.export_text(client_id=client, aggregate_id=aggregate_id,
                                                output_format=output_format, indent=2))
    first = _audit(lambda: next(pieces, ""))  # a refusal is told before anything is written
    if output is None:
        sys.stdout.write(first)
        for piece in pieces:
            sys.stdout.write(piece)
        sys.stdout.write("\n")
        return
    partial = output.with_name(output.name + ".part")  # the report appears whole, or not at all
    try:
        with partial.open("w", encoding="utf-8") as out:
            out.write(first)
            out.writelines(pieces)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    console.print(f"wrote {output}")


@app.command("access-log")
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


@app.command("verify")
def audit_verify(
    data_dir: Annotated[Path | None, typer.Option(help="Data folder whose stores to check.")] = None,
    anchor: Annotated[Path | None, typer.Option(help="JSON list of published chain heads to check against.")] = None,
    nats_url: Annotated[str | None, typer.Option("--nats", help="The NATS server: its published chain heads anchor "
                                                 "the stores (default: CAREPLAN_NATS_URL; without it: not checked).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the reports as JSON.")] = False,
    first_anchoring: Annotated[bool, typer.Option(
        "--first-anchoring", help="Accept stores that hold events but have no published chain head (only the first "
        "time, before the relays published any); without it such a store fails.")] = False,
) -> None:
    """Recompute every store's hash chain; exit 1 at the first edited, deleted, inserted or
    reordered stored event, a chain that no longer matches a published head, a store that
    must exist and is missing, or (with --nats or --anchor) a store holding events of which
    no head was published; exit 2 if the NATS server named cannot be read."""
    import json

    from rich.table import Table

    from services.audit.integrity import Anchor, check_positions, published_heads, verify_all, with_positions

    settings = _settings(data_dir)
    anchors = [Anchor.model_validate(a) for a in json.loads(anchor.read_text())] if anchor else []
    url = nats_url or settings.nats_url
    if url:
        anchors += _from_nats(url, published_heads)
    reports = verify_all(settings, anchors, anchored=bool(url or anchor) and not first_anchoring)
    if url:
        reports = with_positions(reports, _from_nats(url, lambda js: check_positions(settings, js)))
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in reports], indent=2))
    else:
        table = Table(title="Hash chains of the notification logs")
        for column in ("store", "events", "head", "result"):
            table.add_column(column)
        for r in reports:
            result = "[green]OK[/green]" if r.first_break is None else (
                f"[red]{r.first_break.kind} at position {r.first_break.position}[/red]: {r.first_break.detail}"
            )
            for p in r.snapshot_problems:
                result += f"\n[red]snapshot of {p.aggregate_id} v{p.version}[/red]: {p.detail}"
            for c in r.positions or ():
                if not c.ok:
                    result += (f"\n[red]{c.who} position of {c.of} {c.recorded} is ahead of the stream ({c.on_stream})"
                               "[/red]: moved forward by hand, the events between were dropped")
            table.add_row(r.store, str(r.events), f"{r.head_position} {r.head_link[:16]}…", result)
        console.print(table)
        if not reports:
            console.print("No store exists here: nothing was ever recorded (a fresh install).")
        if not url:
            console.print("Published chain heads, relay and consumer positions: not checked (no --nats).")
        if (url or anchor) and first_anchoring:
            console.print("First anchoring: stores without a published chain head were accepted (--first-anchoring).")
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


def _from_nats(url: str, read_with: Callable[[Any], Any]) -> Any:
    """What ``read_with`` reads from the NATS server (heads, positions); exit 2 if it cannot."""
    import asyncio

    from services.shared.bus import connect

    async def read() -> Any:
        nc = await connect(url, name="careplan-audit-verify", reconnect=False)
        try:
            return await read_with(nc.jetstream())
        finally:
            await nc.close()

    try:
        return asyncio.run(read())
    except Exception as e:  # noqa: BLE001 - any failure to read the anchors is reported, not a traceback
        console.print(f"[red]Cannot read the published chain heads and positions from {url}: {type(e).__name__} {e}[/red]")
        raise typer.Exit(2) from None
