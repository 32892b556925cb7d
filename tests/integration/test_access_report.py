"""A client's access report (issue 16): a known set of reads of client A's data — a
clinician's GET of the plan, an auditor's history with a purpose, an auditor's export, a
webhook delivery of one of A's events — among reads of client B's and an unattributable
caseload, and the report (over the API, as an auditor; and at the machine, as HTML) lists
exactly A's reads with actor, role, purpose and time, itself included. After A's erasure
the API's lines remain; the purposes and deliveries, under A's key, are gone with A's data."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from domain.base import Actor, CommandContext, Role
from domain.events.subscription_deliveries import AttemptOutcome
from domain.subscriptions.feed import SubscriptionFeed
from services.api.auth import add_token
from services.api.server import build
from services.privacy.erasure import erase_client
from services.shared.settings import Settings
from services.subscriptions.kinds import Scope
from services.subscriptions.service import SubscriptionsApplication

A, B = "client-a", "client-b"
HOSPITAL = Actor(id="ehr-integration", role=Role.INTEGRATION)


def test_the_access_report_lists_exactly_the_clients_reads(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    tokens = {name: add_token(settings.tokens_path(), actor_id=name, role=role, clients=("*",))
              for name, role in (("clin-1", Role.CLINICIAN), ("aud-1", Role.AUDITOR))}
    api, app = build(settings)
    http = TestClient(app)

    def get(who: str, path: str, purpose: str | None = None, **params: str) -> object:
        headers = {"Authorization": f"Bearer {tokens[who]}"} | ({"X-Audit-Purpose": purpose} if purpose else {})
        response = http.get(path, headers=headers, params=params)
        assert response.status_code == 200, response.text
        return response

    try:
        plans = {}
        for client in (A, B):
            made = http.post("/plans", headers={"Authorization": f"Bearer {tokens['clin-1']}"},
                             json={"client_id": client, "title": "Low mood", "strategy": "short_term_moderate",
                                   "therapy_models": ["steady_progress"]})
            assert made.status_code == 201, made.text
            plans[client] = made.json()["aggregate_id"] if "aggregate_id" in made.json() else made.json()["id"]
        started = datetime.now(UTC)
        get("clin-1", f"/plans/{plans[A]}")                                                   # 1: A's plan
        get("clin-1", f"/plans/{plans[B]}")                                                   # B's: not listed
        get("aud-1", f"/audit/aggregates/{plans[A]}/history", "Complaint 2026-114")           # 2: with purpose
        get("aud-1", f"/audit/aggregates/{plans[B]}/history", "Complaint 2026-999")           # B's: not listed
        get("aud-1", f"/audit/clients/{A}/export", "Subject access request")                  # 3: the export
        get("clin-1", "/caseload")                                                            # names no client
        # 4: a webhook delivery of A's plan's first event (the service's records, as it writes them)
        subs = SubscriptionsApplication(settings)
        try:
            sid = subs.subscribe("webhook", {"endpoint": "https://ehr.example/hook", "filter": "care.>"},
                                 Scope(("*",)), HOSPITAL).subscription.id
            ctx = CommandContext(actor=subs.actor, at=subs.clock(), correlation_id=sid)
            feed = SubscriptionFeed.open(sid, ctx=ctx)
            for number, client in enumerate((B, A), 1):
                feed.match(ctx=ctx, matched_event_id=f"e-{number}", source="care", sequence=number,
                           type="CarePlanDrafted", subject=f"care.clinical.v1.care_plan.{plans[client]}.CarePlanDrafted",
                           aggregate_id=plans[client], time=ctx.at.isoformat(), dataschema="", client_id=client,
                           body="{}")
            subs.save(feed)
            delivery = subs.delivery(sid)
            delivery.attempted(ctx=ctx, attempt_kind="events", first_number=1, last_number=2, message_id="m-1",
                               status_code=204, latency_ms=5, outcome=AttemptOutcome.DELIVERED)
            subs.save(delivery)
        finally:
            subs.close()
        reported = get("aud-1", f"/audit/clients/{A}/access-report", "Art. 15 request", format="json").json()
        finished = datetime.now(UTC)
    finally:
        for part in (api.care, api.escalation, api.assessment, api.dead_letters, api.readiness, api.subscriptions):
            part.close()
        api.access_log.close()

    lines = reported["lines"]
    rows = [(x["actor"], x["role"], x["purpose"], x["source"], x["outcome"]) for x in lines]
    assert rows == [
        ("clin-1", "clinician", None, "api", "200"),
        ("aud-1", "auditor", "Complaint 2026-114", "audit", "200"),
        ("aud-1", "auditor", "Subject access request", "audit", "200"),
        ("ehr-integration", "integration", f"subscription {sid}", "delivery", "delivered (204)"),
        ("aud-1", "auditor", "Art. 15 request", "audit", "recorded"),  # the report's own request, recorded first
    ], lines
    assert lines[0]["what"] == f"GET /plans/{plans[A]}"
    assert lines[1]["what"].startswith(f"history of aggregate {plans[A]}")
    assert lines[2]["what"].startswith(f"export of client {A}")
    assert f"events 2 (CarePlanDrafted of {plans[A]})" in lines[3]["what"] and "ehr.example" in lines[3]["what"]
    assert all(plans[B] not in x["what"] for x in lines)
    times = [datetime.fromisoformat(x["at"]) for x in lines]
    assert times == sorted(times) and started - timedelta(seconds=1) <= times[0] and times[-1] <= finished

    # at the machine, as a printable page, from the delivery on: the earlier reads are left out
    from services.cli import app as cli

    page = tmp_path / "report.html"
    made = CliRunner().invoke(cli, ["client", "access-report", A, "--local", "--purpose", "Art. 15 copy",
                                    "--from", lines[3]["at"], "--format", "html", "-o", str(page),
                                    "--data-dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "http" not in text.replace("https://ehr.example/hook", "")
    assert "Complaint 2026-114" not in text and "Art. 15 request" in text and "Art. 15 copy" in text
    assert text.count("<tr>") == 1 + 3  # header; the delivery, the API report (its recorded read and its API line
    # paired), and this one

    # after the client's erasure the account of who read their record is still given (ids only)
    erase_client(settings, A, reason="Art. 17 request", actor=Actor(id="sup-1", role=Role.SUPERVISOR))
    made = CliRunner().invoke(cli, ["client", "access-report", A, "--local", "--purpose", "After erasure",
                                    "--data-dir", str(tmp_path)])
    assert made.exit_code == 0, made.output
    after = json.loads(made.output)["lines"]
    # the API's lines stay (ids, actors, statuses); what was under A's key went with it: the audit reads'
    # purposes (the auditors' entries that name A) and the feed's entries behind the deliveries
    api_lines = [(x["actor"], x["what"], x["outcome"]) for x in after if x["source"] == "api"]
    assert api_lines == [("clin-1", f"GET /plans/{plans[A]}", "200"),
                         ("aud-1", f"GET /audit/aggregates/{plans[A]}/history", "200"),
                         ("aud-1", f"GET /audit/clients/{A}/export", "200"),
                         ("aud-1", f"GET /audit/clients/{A}/access-report?format=json", "200")]
    assert not {"Complaint 2026-114", "Subject access request", "Art. 15 request"} & {x["purpose"] for x in after}
    assert "delivery" not in {x["source"] for x in after}
