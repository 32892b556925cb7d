"""Auditor tokens keep to their clients on /audit (issue 13): another client's aggregate,
event or export is the same 404 as a missing one, and nothing of it is in the answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from domain.base import Role
from tests.integration import test_api
from tests.integration.test_api import CLIENT, Setup, make_setup

OTHER = "client-2"
PURPOSE = {"X-Audit-Purpose": "Complaint 2026-114"}


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    monkeypatch.setitem(test_api.CALLERS, "other-auditor", (Role.AUDITOR, (OTHER,)))
    setup = make_setup(tmp_path)
    yield setup
    setup.close()


def test_an_auditor_of_client_b_reads_nothing_of_client_a(api: Setup) -> None:
    other_plan = UUID(api.post("/plans", {"client_id": OTHER, "title": "Grief", "strategy": "short_term_moderate",
                                          "therapy_models": ["steady_progress"]}, "supervisor").json()["aggregate_id"])
    all_clients, scoped = api.headers("auditor", **PURPOSE), api.headers("other-auditor", **PURPOSE)
    first_event = api.client.get(f"/audit/aggregates/{api.plan}/history", headers=all_clients).json()["events"][0]
    theirs = api.client.get(f"/audit/aggregates/{other_plan}/history", headers=all_clients).json()["events"][0]

    def reads(plan: UUID, event: str, client: str) -> list[str]:
        return [f"/audit/aggregates/{plan}/history", f"/audit/aggregates/{plan}/replay?version=1",
                f"/audit/aggregates/{plan}/diff?from=1&to=1", f"/audit/events/{event}/trace",
                f"/audit/clients/{client}/export", f"/audit/clients/{client}/export?format=html"]

    a_reads = reads(api.plan, first_event["event_id"], CLIENT)
    # the plan's course and inventory (and the unknown ids) are refused alike
    a_reads += [f"/audit/aggregates/{api.course}/history", f"/audit/aggregates/{api.inventory}/replay?version=1"]
    missing = api.client.get(f"/audit/aggregates/{uuid4()}/history", headers=scoped)
    for path in a_reads:
        refused = api.client.get(path, headers=scoped)
        assert refused.status_code == 404 == missing.status_code, (path, refused.text)
        assert refused.json()["type"] == missing.json()["type"] == "/problems/not-found"
        # nothing but what the caller asked with: the id in the path, echoed as for a missing one
        told = refused.text.replace(path.split("?")[0], "").replace(path.split("/")[3], "")
        assert CLIENT not in told and str(api.plan) not in told, told
        assert "Low mood" not in told and "clinician-1" not in told
    unknown = api.client.get("/audit/clients/client-nobody/export", headers=scoped)
    refused = api.client.get(f"/audit/clients/{CLIENT}/export", headers=scoped)
    assert refused.text.replace(CLIENT, "?") == unknown.text.replace("client-nobody", "?")
    for path in reads(other_plan, theirs["event_id"], OTHER):
        read = api.client.get(path, headers=scoped)
        assert read.status_code == 200, (path, read.text)
        assert CLIENT not in read.text.replace(OTHER, "")
    for path in a_reads:
        assert api.client.get(path, headers=all_clients).status_code == 200, path
    # verify has no client data: any auditor gets the same report
    verified = api.client.get("/audit/verify", headers=scoped)
    everyone = api.client.get("/audit/verify", headers=all_clients)
    assert verified.status_code == everyone.status_code and verified.status_code in (200, 409)
    assert [r["store"] for r in verified.json()] == [r["store"] for r in everyone.json()]


def test_an_aggregate_of_no_known_client_is_for_all_clients_auditors_only(
        api: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.api.auth import Principal
    from services.audit import reading
    from services.audit.auditor import Auditor
    from services.shared.errors import AggregateMissingError

    crisis = test_api.raise_crisis(api, None)  # names its plan only: the plan's client
    assert reading.client_of(reading.Stores(api.care.settings), crisis) == CLIENT
    scoped = api.headers("other-auditor", **PURPOSE)
    assert api.client.get(f"/audit/aggregates/{crisis}/history", headers=scoped).status_code == 404
    assert api.client.get(f"/audit/aggregates/{crisis}/history",
                          headers=api.headers("auditor", **PURPOSE)).status_code == 200
    # a client that cannot be determined (a dead letter, say): all-clients auditors only
    monkeypatch.setattr(reading, "client_of", lambda stores, aggregate_id: None)
    for clients, allowed in (((OTHER,), False), (("*",), True)):
        who = Principal(actor_id="auditor-9", role=Role.AUDITOR, clients=clients)
        auditor = Auditor(api.care.settings, who.actor, "Check", who.may_act_for)
        if allowed:
            assert auditor.history(api.plan)[1]
        else:
            with pytest.raises(AggregateMissingError):
                auditor.history(api.plan)
