"""The auditors' pages: an aggregate's history as a timeline, its state at a chosen moment, a
diff between two moments, and an event's causation trace as a graph across services.

Every read goes through :class:`services.audit.auditor.Auditor` exactly as the JSON audit
routes do (the token's actor, the stated purpose, the token's clients), so each is
recorded in the audit access log with its purpose before anything is read. The purpose is
asked in a form and sent in the body of a POST (never the address, which the API's access
log keeps).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import TypeAdapter, ValidationError

from domain.base import Moment, Role
from domain.errors import ReasonRequiredError
from services.api.dependencies import MAX_VERSION
from services.api.ui import PREFIX, PageProblem, Ui, parse_uuid
from services.api.ui.charts import Node, trace_graph
from services.audit import reading
from services.audit.auditor import Auditor

AUDITOR = (Role.AUDITOR,)
MOMENT: TypeAdapter[datetime] = TypeAdapter(Moment)


def point(value: str, field: str) -> datetime | int:
    """A version (digits, 1 to MAX_VERSION) or an RFC 3339 moment with a time zone."""
    text = value.strip()
    try:
        if text.isascii() and text.isdigit():
            if 1 <= int(text) <= MAX_VERSION:
                return int(text)
        else:
            return MOMENT.validate_python(text)
    except (ValueError, ValidationError):
        pass
    raise PageProblem(422, "Not a version or a moment",
                      f"{field}: give a version (1, 2, …) or a moment with a time zone, e.g. 2026-05-04T09:30:00Z.")


def include(app: FastAPI, ui: Ui) -> None:
    def auditor(request: Request, purpose: str) -> Auditor:
        principal = ui.signed_in(request, AUDITOR)
        return Auditor(ui.api.care.settings, principal.actor, purpose, principal.may_act_for)

    @app.get("/audit")
    async def start(request: Request) -> Response:
        ui.signed_in(request, AUDITOR)
        return ui.render(request, "audit_start.html", title="Audit")

    @app.post("/audit")
    async def find(request: Request) -> Response:
        """The start page's form: to an aggregate's or an event's page (no read yet)."""
        _, form = await ui.checked_form(request, AUDITOR)
        kind = str(form.get("kind") or "aggregate")
        found = parse_uuid(str(form.get("id") or "").strip(), "record")
        if kind == "event":
            return RedirectResponse(f"{PREFIX}/audit/events/{found}/trace", status_code=303)
        return RedirectResponse(f"{PREFIX}/audit/aggregates/{found}", status_code=303)

    @app.get("/audit/aggregates/{aggregate_id}")
    async def aggregate_form(request: Request, aggregate_id: str) -> Response:
        ui.signed_in(request, AUDITOR)
        found = parse_uuid(aggregate_id, "record")
        return ui.render(request, "audit_aggregate.html", aggregate_id=found, read=None, sent={},
                         title="Audit: an aggregate")

    @app.post("/audit/aggregates/{aggregate_id}")
    async def aggregate_read(request: Request, aggregate_id: str) -> Response:
        _, form = await ui.checked_form(request, AUDITOR)
        found = parse_uuid(aggregate_id, "record")
        sent = {k: str(form.get(k) or "").strip() for k in ("purpose", "at", "from", "to")}
        if not sent["purpose"]:
            return ui.render(request, "audit_aggregate.html", 422, aggregate_id=found, read=None, sent=sent,
                             problem="State the purpose of this read: every audit read is recorded with it.",
                             title="Audit: an aggregate")
        at = point(sent["at"], "State at") if sent["at"] else None
        span = (point(sent["from"], "Diff from"), point(sent["to"], "Diff to")) if sent["from"] or sent["to"] else None
        if span is not None and (not sent["from"] or not sent["to"]):
            raise PageProblem(422, "Diff needs two points", "Give both ends of the diff (a version or a moment each).")
        reader = auditor(request, sent["purpose"])
        try:
            store, entries = reader.history(found)
            read: dict[str, Any] = {"store": store, "events": entries}
            if at is not None:
                read["state"] = (reader.replay(found, version=at) if isinstance(at, int)
                                 else reader.replay(found, at=at))
            if span is not None:
                read["diff"] = reader.diff(found, *span)
        except ReasonRequiredError as refused:
            raise PageProblem(422, "Purpose required", str(refused)) from None
        return ui.render(request, "audit_aggregate.html", aggregate_id=found, read=read, sent=sent,
                         title="Audit: an aggregate")

    @app.get("/audit/events/{event_id}/trace")
    async def trace_form(request: Request, event_id: str) -> Response:
        ui.signed_in(request, AUDITOR)
        return ui.render(request, "audit_trace.html", event_id=parse_uuid(event_id, "event"), traced=None, graph=None,
                         sent={}, title="Audit: causation trace")

    @app.post("/audit/events/{event_id}/trace")
    async def trace_read(request: Request, event_id: str) -> Response:
        _, form = await ui.checked_form(request, AUDITOR)
        found = parse_uuid(event_id, "event")
        sent = {"purpose": str(form.get("purpose") or "").strip()}
        if not sent["purpose"]:
            return ui.render(request, "audit_trace.html", 422, event_id=found, traced=None, graph=None, sent=sent,
                             problem="State the purpose of this read: every audit read is recorded with it.",
                             title="Audit: causation trace")
        traced = auditor(request, sent["purpose"]).trace(found)
        return ui.render(request, "audit_trace.html", event_id=found, traced=traced, graph=graph_of(traced), sent=sent,
                         title="Audit: causation trace")


def graph_of(traced: reading.Trace) -> str:
    hops = sorted({str(h.event_id): h for h in (*traced.causes, traced.event, *traced.effects)}.values(),
                  key=lambda h: h.recorded)
    ids = {str(h.event_id) for h in hops}
    nodes = [Node(str(h.event_id), h.store, h.event_type, f"v{h.version} · {h.actor} · {h.recorded:%d %b %H:%M}",
                  highlighted=h.event_id == traced.event.event_id) for h in hops]
    edges = [(h.causation_id, str(h.event_id)) for h in hops if h.causation_id in ids]
    return trace_graph(nodes, edges, title=f"Causation of {traced.event.event_type} across services")
