"""``careplan plan|course|inventory|assess ...``: the HTTP API for people at a terminal.

Every command goes through the API with the caller's token (``--token`` or
``CAREPLAN_API_TOKEN``) to ``--api`` or ``CAREPLAN_API_URL``, so the API's roles, versions
and audit apply exactly as for any other client. Output is a readable table, or the API's
JSON with ``--json``; a refusal prints the problem's title and detail and exits 1.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.table import Table

from services.cli.common import print_problem

console = Console()

Api = Annotated[str, typer.Option("--api", envvar="CAREPLAN_API_URL", help="The API's address (the ready line says it).")]
Token = Annotated[str, typer.Option("--token", envvar="CAREPLAN_API_TOKEN", help="Your bearer token.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of a table.")]
IfMatch = Annotated[int | None, typer.Option("--if-match", help="The version you read: refused if it moved on.")]
Key = Annotated[str | None, typer.Option("--key", help="Idempotency key: sending it again records nothing new.")]
Fields = Annotated[list[str] | None, typer.Argument(help="The command's fields as name=value (JSON values allowed).")]


def _request(method: str, api: str, token: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    try:
        response = httpx.request(method, f"{api.rstrip('/')}{path}", json=body, timeout=30,
                                 headers={"Authorization": f"Bearer {token}", **(headers or {})})
    except httpx.HTTPError as e:
        console.print(f"[red]Cannot reach the API at {api}: {e}[/red]")
        raise typer.Exit(2) from e
    if response.status_code >= 400:
        problem = print_problem(response)
        for error in problem.get("errors", []):
            console.print(f"  {'.'.join(error['loc'])}: {error['msg']}")
        raise typer.Exit(1)
    return response.json() if response.content else None


def fields_to_body(fields: list[str] | None) -> dict[str, Any]:
    """``name=value`` pairs as a JSON body: a value that parses as JSON is taken as such
    (numbers, lists, null), anything else as text; ``name=a,b`` stays text."""
    body: dict[str, Any] = {}
    for item in fields or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            msg = f"{item!r}: write fields as name=value"
            raise typer.BadParameter(msg)
        try:
            body[name] = json.loads(value)
        except ValueError:
            body[name] = value
    return body


def _print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table(show_header=False)
    table.add_row("aggregate", str(result["aggregate_id"]))
    table.add_row("version", str(result["version"]))
    table.add_row("events", ", ".join(result["event_types"]))
    console.print(table)


def _print_state(state: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(state, indent=2))
        return
    table = Table(show_header=False)
    for name, value in state.items():
        shown = value if isinstance(value, str | int | float | bool) or value is None else json.dumps(value)
        table.add_row(name, str(shown))
    console.print(table)


def _print_history(events: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(events, indent=2))
        return
    table = Table()
    for column in ("v", "recorded", "who", "what", "why"):
        table.add_column(column)
    for e in events:
        table.add_row(str(e["originator_version"]), e["timestamp"][:19], f"{e['actor']['id']} ({e['actor']['role']})",
                      e["summary"], e.get("reason") or "")
    console.print(table)


def collection_app(path: str, noun: str) -> typer.Typer:
    """show / history / create / do for one aggregate type."""
    app = typer.Typer(help=f"{noun.capitalize()}s through the HTTP API.", no_args_is_help=True)

    @app.command("show")
    def show(item_id: str, api: Api, token: Token, version: Annotated[int | None, typer.Option()] = None,
             at: Annotated[str | None, typer.Option(help="RFC 3339 moment.")] = None, as_json: AsJson = False) -> None:
        """The current state (or at a version or moment)."""
        query = f"?version={version}" if version else f"?at={at}" if at else ""
        _print_state(_request("GET", api, token, f"/{path}/{item_id}{query}"), as_json)

    @app.command("history")
    def history(item_id: str, api: Api, token: Token, as_json: AsJson = False) -> None:
        """Every event: version, when, who, what, why."""
        _print_history(_request("GET", api, token, f"/{path}/{item_id}/history"), as_json)

    @app.command("create")
    def create(api: Api, token: Token, fields: Fields = None, key: Key = None, as_json: AsJson = False) -> None:
        """Make a new one from name=value fields (e.g. plan_id=... for a course)."""
        headers = {"Idempotency-Key": key} if key else {}
        _print_result(_request("POST", api, token, f"/{path}", fields_to_body(fields), headers), as_json)

    @app.command("do")
    def do(item_id: str, command: Annotated[str, typer.Argument(help="e.g. record-consent, add-goal (see /docs).")],
           api: Api, token: Token, fields: Fields = None, if_match: IfMatch = None, key: Key = None,
           as_json: AsJson = False) -> None:
        """Send one command with name=value fields."""
        headers = {**({"If-Match": f'"{if_match}"'} if if_match else {}), **({"Idempotency-Key": key} if key else {})}
        _print_result(_request("POST", api, token, f"/{path}/{item_id}/{command}", fields_to_body(fields), headers), as_json)

    return app


assess_app = typer.Typer(help="Questionnaires through the HTTP API.", no_args_is_help=True)


@assess_app.command("submit")
def assess_submit(
    course_id: str,
    instrument: Annotated[str, typer.Option(help="PHQ-9, GAD-7 or C-SSRS-screener.")],
    answers: Annotated[str, typer.Option(help="Comma-separated item scores; an empty item is unanswered.")],
    answered_at: Annotated[str, typer.Option(help="RFC 3339 moment the client answered.")],
    api: Api,
    token: Token,
    key: Key = None,
    as_json: AsJson = False,
) -> None:
    """Submit a questionnaire; the assessment service scores it (or rejects it, saying why)."""
    try:
        items = [int(a) if a.strip() else None for a in answers.split(",")]
    except ValueError as e:
        msg = f"answers must be whole numbers separated by commas, not {answers!r}"
        raise typer.BadParameter(msg) from e
    body = {"instrument": instrument, "answers": items, "answered_at": answered_at}
    headers = {"Idempotency-Key": key} if key else {}
    _print_result(_request("POST", api, token, f"/courses/{course_id}/submit-questionnaire", body, headers), as_json)
