"""A client's whole care history: every aggregate of the client in every store (the care
record and the services' decisions about it), as JSON and as a self-contained HTML report
a person can read and print."""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

from pydantic import BaseModel

from domain.base import AggregateRoot, project
from services.audit.reading import HistoryEntry, Store, Stores, entry
from services.shared.errors import AggregateMissingError
from services.shared.persistence import paged_notifications


class ExportedAggregate(BaseModel):
    store: str
    aggregate_type: str
    aggregate_id: UUID
    state: dict[str, Any]
    events: list[HistoryEntry]


class Export(BaseModel):
    client_id: str
    exported_at: datetime
    aggregates: list[ExportedAggregate]

    def timeline(self) -> list[tuple[str, HistoryEntry]]:
        return sorted(((a.aggregate_type, e) for a in self.aggregates for e in a.events), key=lambda pair: pair[1].recorded)

    def of_type(self, aggregate_type: str) -> list[ExportedAggregate]:
        return [a for a in self.aggregates if a.aggregate_type == aggregate_type]


class _First(NamedTuple):
    """What the export needs of an aggregate's first event to decide whether it is the client's."""

    store: Store
    type_name: str
    client_id: Any
    plan_id: Any
    timestamp: datetime


def members(stores: Stores, client_id: str) -> list[tuple[Store, UUID]]:
    """The client's aggregates in every store, oldest first: one pass over the logs that keeps
    each aggregate's first event's ids only (not every event of every store)."""
    firsts: dict[UUID, _First] = {}
    for store in stores.all:
        for notification in paged_notifications(store.recorder):
            if notification.originator_id in firsts:
                continue
            event = store.mapper.to_domain_event(notification)
            firsts[notification.originator_id] = _First(store, type(event).__name__, getattr(event, "client_id", None),
                                                        getattr(event, "plan_id", None), event.timestamp)
    mine = {aid for aid, first in firsts.items() if first.client_id == client_id}
    plans = {aid for aid in mine if firsts[aid].type_name == "CarePlanDrafted"}
    plans |= {p for aid in mine if (p := firsts[aid].plan_id) is not None}
    # service aggregates that name the plan but not the client (e.g. the scheduling service's PlanStrategy)
    mine |= {aid for aid, first in firsts.items() if first.plan_id in plans}
    if not mine:
        msg = f"No aggregate of client {client_id!r} is recorded in any store."
        raise AggregateMissingError(msg)
    return [(firsts[aid].store, aid) for aid in sorted(mine, key=lambda a: firsts[a].timestamp)]


def exported(found: list[tuple[Store, UUID]]) -> Iterator[ExportedAggregate]:
    """Each aggregate with its state and events, read from its store as it is reached: only
    one aggregate's history is held at a time."""
    for store, aid in found:
        aggregate: AggregateRoot | None = None
        entries = []
        for stored in store.recorder.select_events(aid):
            event = store.mapper.to_domain_event(stored)
            aggregate = project(aggregate, (event,))
            entries.append(entry(event))
        assert aggregate is not None
        yield ExportedAggregate(store=store.name, aggregate_type=type(aggregate).__name__, aggregate_id=aid,
                                state=aggregate.model_dump(mode="json"), events=entries)


def export_client(stores: Stores, client_id: str) -> Export:
    return Export(client_id=client_id, exported_at=datetime.now(UTC), aggregates=list(exported(members(stores, client_id))))


def export_json(stores: Stores, client_id: str, *, indent: int | None = None) -> Iterator[str]:
    """:func:`export_client` as JSON text, a piece per aggregate: the same text as
    ``export_client(...).model_dump_json(indent=indent)``, without holding the export. The
    client's aggregates are found first (an unknown client raises here, before any text)."""
    found = members(stores, client_id)
    head = Export(client_id=client_id, exported_at=datetime.now(UTC), aggregates=[]).model_dump_json(indent=indent)
    opening, closing = head.removesuffix("]}" if indent is None else "]\n}"), "]}" if indent is None else "\n" + " " * indent + "]\n}"
    pad = "" if indent is None else "\n" + " " * 2 * indent

    def pieces() -> Iterator[str]:
        yield opening
        for i, aggregate in enumerate(exported(found)):
            text = aggregate.model_dump_json(indent=indent)
            yield ("," if i else "") + (pad + text.replace("\n", pad) if indent is not None else text)
        yield closing

    return pieces()


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1b1b;max-width:1100px}
h1{font-size:1.6rem;margin-bottom:.2rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:2px solid #2b5b84;padding-bottom:.2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0} th,td{border:1px solid #c9d3dc;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#eef3f7} .muted{color:#5a6570} .chain li{margin:.25rem 0} code{font-size:.85em}
@media print{body{margin:0} h2{page-break-after:avoid} tr{page-break-inside:avoid}}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(export: Export) -> str:
    parts = [f"<h1>Care history of client {_e(export.client_id)}</h1>",
             f"<p class='muted'>Exported {_e(export.exported_at.isoformat())} from the careplan event stores; "
             f"{sum(len(a.events) for a in export.aggregates)} recorded events in {len(export.aggregates)} records.</p>"]

    parts.append("<h2>Expectation adjustments</h2>")
    chains = []
    for plan in export.of_type("CarePlan"):
        for expectation in plan.state.get("expectations", {}).values():
            links = "".join(
                f"<li>&rarr; “{_e(a.get('adjusted_statement'))}” <span class='muted'>(v{_e(a.get('version'))}, "
                f"{_e((a.get('actor') or {}).get('id'))}: {_e(a.get('reason'))})</span></li>"
                for a in expectation.get("adjustments", [])
            )
            chains.append(f"<p>“{_e(expectation.get('original_statement'))}”</p><ul class='chain'>{links}</ul>")
    parts.append("".join(chains) or "<p class='muted'>None recorded.</p>")

    strategy_events = ("StrategyChanged", "EmergencySupportActivated", "EmergencySupportEnded", "CarePlanDrafted")
    parts.append("<h2>Strategy changes</h2>")
    parts.append(_table(["recorded", "change", "who", "why"], [
        [e.recorded.isoformat(timespec="seconds"), e.summary, f"{e.actor} ({e.role})", e.reason]
        for _, e in export.timeline() if e.event_type in strategy_events
    ]))

    parts.append("<h2>Assessments</h2>")
    parts.append(_table(["recorded", "result", "by"], [
        [e.recorded.isoformat(timespec="seconds"), e.summary, e.actor]
        for _, e in export.timeline() if e.event_type in ("AssessmentScored", "AssessmentRejected")
    ]))

    parts.append("<h2>Escalations</h2>")
    for crisis in export.of_type("Crisis"):
        parts.append(f"<p><b>Crisis {_e(crisis.aggregate_id)}</b> — {_e(crisis.state.get('status'))}</p>")
        parts.append(_table(["recorded", "step", "who", "why"], [
            [e.recorded.isoformat(timespec="seconds"), e.summary, f"{e.actor} ({e.role})", e.reason] for e in crisis.events
        ]))
    if not export.of_type("Crisis"):
        parts.append("<p class='muted'>None recorded.</p>")

    parts.append("<h2>Timeline</h2>")
    parts.append(_table(["recorded", "record", "v", "what", "who", "why"], [
        [e.recorded.isoformat(timespec="seconds"), kind, e.version, e.summary, f"{e.actor} ({e.role})", e.reason]
        for kind, e in export.timeline()
    ]))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Care history of {_e(export.client_id)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
