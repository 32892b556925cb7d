"""A client's access report (issue 16; GDPR Art. 15, HIPAA's accounting of disclosures):
every read of one client's data in a period, one line each — when, who (actor and role),
why (the purpose, where one was stated), what (route or record ids), and the outcome.

Three sources, read as they are kept:

- the API's access log (``<data dir>/api-access.log``): every ``GET`` whose path or query
  names one of the client's records (by id) or the client itself (``/plans?client=``,
  ``/audit/clients/<client>/...``). A list that does not name the client (``/caseload``,
  ``/outcomes`` unfiltered) is not attributed to it: the log keeps no answers, so which
  rows it held is not known here (docs/data-protection.md, "The access report");
- the auditors' access log (``audit_access``): every audit read (history, replay, diff,
  trace, export, verify of a record of the client, and earlier access reports) with its
  purpose. An audit read made through the API is one line: the API's line (outcome) and
  the recorded read (purpose) are paired by actor and time;
- the subscriptions service's deliveries: every attempt to send a hospital system events of
  the client (its feed numbers the client's events; an attempt names the numbers it sent).
  After the client's erasure the feed's entries and the auditors' entries naming the client
  are erased with the rest (they are under the client's key): only the API's lines remain,
  found by the key store's links.

Only the client's reads, nothing of anyone else's; and the lines carry ids, never content.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote
from uuid import UUID

from pydantic import BaseModel

from services.audit.access import AccessLog
from services.audit.reading import Stores
from services.shared.errors import AggregateMissingError
from services.shared.persistence import paged_notifications
from services.shared.settings import Settings

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: How long after an API request began its recorded audit read may be stamped (pairing).
PAIRING_SLACK = timedelta(seconds=2)


class AccessLine(BaseModel):
    at: datetime
    actor: str | None
    role: str | None
    purpose: str | None
    what: str
    outcome: str
    #: ``api``, ``audit`` (an audit read, through the API or at the machine) or ``delivery``.
    source: str


class AccessReport(BaseModel):
    client_id: str
    period_from: datetime | None
    period_to: datetime | None
    generated_at: datetime
    lines: list[AccessLine]


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _client_records(settings: Settings, stores: Stores, client_id: str) -> set[UUID]:
    """The client's aggregates: those the export finds (by the ids in their first events), and
    those the key store links to any key the client has had — which still names them after an
    erasure, when their events no longer say whose they are."""
    from services.audit.export import members
    from services.shared.privacy.keys import key_store

    try:
        found = {aid for _, aid in members(stores, client_id)}
    except AggregateMissingError:
        found = set()
    # only records of the stores: the auditors' own entries that name the client (under its key too)
    # are not the client's records (a report asked of an unknown client is still a 404)
    linked = {aid for aid in key_store(settings).linked_to_client(client_id) if aid not in found
              and any(store.recorder.select_events(aid, limit=1) for store in stores.all)}
    return found | linked


def _names_client(text: str, client_id: str, records: set[UUID]) -> bool:
    """Whether a path or a query value names the client or one of its records."""
    if any(UUID(found) in records for found in UUID_RE.findall(text)):
        return True
    return client_id in text.split("/")


def _api_lines(path: Path, client_id: str, records: set[UUID]) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as lines:
        for raw in lines:
            try:
                line = json.loads(raw)
            except ValueError:
                continue  # a line cut short by a crash
            if line.get("method") not in ("GET", "HEAD"):
                continue  # commands are recorded as events, with who and why
            query = [unquote(v) for _, v in parse_qsl(line.get("query") or "", keep_blank_values=True)]
            if _names_client(unquote(line.get("path") or ""), client_id, records) or any(
                    _names_client(v, client_id, records) or v == client_id for v in query):
                yield line


def _audit_subject_is_clients(subject: str, client_id: str, records: set[UUID]) -> bool:
    # "client X", "aggregate <id>[ at ...]", "event <id>", "the client of aggregate <id>"
    if subject == f"client {client_id}":
        return True
    return any(UUID(found) in records for found in UUID_RE.findall(subject))


def _event_ids(stores: Stores, records: set[UUID]) -> set[UUID]:
    """The ids of the client's events (a trace names an event)."""
    ids: set[UUID] = set()
    for store in stores.all:
        for aid in records:
            for stored in store.recorder.select_events(aid):
                ids.add(store.mapper.to_domain_event(stored).event_id)
    return ids


def _deliveries(stores: Stores, client_id: str) -> Iterator[AccessLine]:
    """Attempts to send a subscriber events of the client: the feeds say which numbers are the
    client's, the attempts which numbers they sent."""
    store = next((s for s in stores.all if s.name == "subscriptions"), None)
    if store is None:
        return
    numbers: dict[UUID, dict[int, str]] = {}  # subscription → number → "Type of aggregate"
    creators: dict[UUID, tuple[str, str, str]] = {}  # subscription → (actor, role, endpoint)
    attempts = []
    for notification in paged_notifications(store.recorder):
        name = notification.topic.rsplit(":", 1)[-1].rsplit(".", 1)[-1]
        if name not in ("SubscriptionCreated", "SubscriptionEventMatched", "SubscriptionDeliveryAttempted"):
            continue
        event = store.mapper.to_domain_event(notification)
        if name == "SubscriptionCreated":
            creators[event.originator_id] = (event.actor.id, event.actor.role.value, event.endpoint)
        elif name == "SubscriptionEventMatched":
            if getattr(event, "client_id", None) == client_id:  # an erased entry names no one any more
                numbers.setdefault(event.subscription_id, {})[event.number] = f"{event.type} of {event.aggregate_id}"
        elif event.attempt_kind.value == "events":
            attempts.append(event)
    for attempt in attempts:
        mine = numbers.get(attempt.subscription_id, {})
        sent = [n for n in range(attempt.first_number, attempt.last_number + 1) if n in mine]
        if not sent:
            continue
        actor, role, endpoint = creators.get(attempt.subscription_id, (None, None, "?"))
        outcome = attempt.outcome.value + (f" ({attempt.status_code})" if attempt.status_code else "") + (
            f" {attempt.error_class}" if attempt.error_class else "")
        yield AccessLine(
            at=_utc(attempt.timestamp), actor=actor, role=role,
            purpose=f"subscription {attempt.subscription_id}",
            what=f"events {', '.join(str(n) for n in sent)} ({'; '.join(mine[n] for n in sent)}) sent to {endpoint}",
            outcome=outcome, source="delivery")


def access_report(settings: Settings, client_id: str, *, start: datetime | None = None,
                  end: datetime | None = None) -> AccessReport:
    """Every read of ``client_id``'s data recorded between ``start`` (inclusive) and ``end``
    (exclusive), oldest first."""
    with Stores(settings) as stores:
        records = _client_records(settings, stores, client_id)
        if not records:  # answered like an export of an unknown client: nothing of it is recorded
            msg = f"No aggregate of client {client_id!r} is recorded in any store."
            raise AggregateMissingError(msg)
        events = _event_ids(stores, records)
        deliveries = list(_deliveries(stores, client_id))
    log = AccessLog(settings)
    try:
        audit_reads = [r for r in log.entries()  # an entry erased with its client names no subject any more
                       if _audit_subject_is_clients(getattr(r, "subject", ""), client_id, records | events)]
    finally:
        log.close()

    lines: list[AccessLine] = []
    paired: set[UUID] = set()
    for line in _api_lines(settings.data_dir / "api-access.log", client_id, records | events):
        at = _utc(datetime.fromisoformat(line["at"]))
        what = line["method"] + " " + line["path"] + (f"?{line['query']}" if line.get("query") else "")
        purpose = None
        if line["path"].startswith("/audit/"):
            until = at + timedelta(milliseconds=line.get("ms") or 0) + PAIRING_SLACK
            match = next((r for r in audit_reads if r.event_id not in paired and r.actor.id == line.get("actor")
                          and at - PAIRING_SLACK <= r.timestamp <= until), None)
            if match is not None:
                paired.add(match.event_id)
                purpose, what = match.purpose, f"{match.function} of {match.subject} ({what})"
                at = _utc(match.timestamp)
        lines.append(AccessLine(at=at, actor=line.get("actor"), role=line.get("role"), purpose=purpose, what=what,
                                outcome=str(line.get("status")), source="api" if purpose is None else "audit"))
    lines += [AccessLine(at=_utc(r.timestamp), actor=r.actor.id, role=r.actor.role.value, purpose=r.purpose,
                         what=f"{r.function} of {r.subject}", outcome="recorded", source="audit")
              for r in audit_reads if r.event_id not in paired]
    lines += deliveries
    lines = sorted((x for x in lines if (start is None or x.at >= _utc(start)) and (end is None or x.at < _utc(end))),
                   key=lambda x: x.at)
    return AccessReport(client_id=client_id, period_from=start, period_to=end, generated_at=datetime.now(UTC),
                        lines=lines)


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1b1b1b;max-width:1100px}
h1{font-size:1.6rem;margin-bottom:.2rem} .muted{color:#5a6570}
table{border-collapse:collapse;width:100%;margin:.5rem 0} th,td{border:1px solid #c9d3dc;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#eef3f7} td{word-break:break-word}
@media print{body{margin:0} tr{page-break-inside:avoid}}
"""


def to_html(report: AccessReport) -> str:
    """A printable page, self-contained (no script, no external asset)."""
    e = html.escape

    def period(moment: datetime | None, none: str) -> str:
        return e(moment.isoformat()) if moment else none

    rows = "".join(
        "<tr>" + "".join(f"<td>{e('' if c is None else str(c))}</td>" for c in (
            line.at.isoformat(timespec="seconds"), line.actor, line.role, line.purpose, line.what, line.outcome,
            line.source)) + "</tr>"
        for line in report.lines)
    body = (f"<table><thead><tr><th>when (UTC)</th><th>who</th><th>role</th><th>purpose</th><th>what</th>"
            f"<th>outcome</th><th>source</th></tr></thead><tbody>{rows}</tbody></table>"
            if report.lines else "<p class='muted'>No read of this client's data was recorded in the period.</p>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>Access report of {e(report.client_id)}</title><style>{_CSS}</style></head><body>"
            f"<h1>Access report of client {e(report.client_id)}</h1>"
            f"<p class='muted'>Every recorded read of the client's data from {period(report.period_from, 'the start')} "
            f"to {period(report.period_to, 'now')}; generated {e(report.generated_at.isoformat())}; "
            f"{len(report.lines)} reads.</p>{body}</body></html>")
