"""Retention in virtual time (issue 16): with a period of 365 days, at a moment 400 days after
most care ended, exactly the clients whose plans all ended (completed or revoked) more than
365 days ago, with no open plan and no legal hold, are erased (their keys destroyed, their
plans read as erased); the dry run lists the same and changes nothing; a client held, one with a plan still open and one whose care ended
recently stay. `careplan up` runs the same by itself and logs counts, never who."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from typer.testing import CliRunner

from services.care import commands as c
from services.care.application import CareApplication, CommandMeta
from services.cli import app as cli
from services.operations import retention
from services.privacy.erasure import set_hold
from services.shared.clock import ManualClock
from services.shared.privacy.erased import is_erased
from services.shared.privacy.keys import key_store
from services.shared.settings import Settings
from tests.conftest import CLINICIAN, SUPERVISOR

META = CommandMeta(actor=CLINICIAN)
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def draft(app: CareApplication, client_id: str) -> UUID:
    return app.handle(c.DraftCarePlan(client_id=client_id, title="Low mood", strategy="short_term_moderate",
                                      therapy_models=["steady_progress"]), META).aggregate_id


def complete(app: CareApplication, plan: UUID) -> None:
    goal = c.AddGoal(plan_id=plan, description="Walk daily")
    for command in (c.RecordConsent(plan_id=plan), c.ExplainConfidentiality(plan_id=plan), goal,
                    c.AgreeGoal(plan_id=plan, goal_id=goal.goal_id), c.ActivatePlan(plan_id=plan),
                    c.CompletePlan(plan_id=plan)):
        app.handle(command, META)


def revoke(app: CareApplication, plan: UUID) -> None:
    app.handle(c.RevokePlan(plan_id=plan, reason="Moved away"), META)


def test_past_the_period_exactly_the_eligible_clients_are_erased(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, retention_days=365)
    clock = ManualClock(T0)
    app = CareApplication(settings, clock=clock)
    plans: dict[str, UUID] = {}

    def first(client: str) -> UUID:
        plans.setdefault(client, plan := draft(app, client))
        return plan

    try:
        complete(app, first("done-long-ago"))            # completed at T0
        revoke(app, first("revoked-long-ago"))           # revoked at T0
        revoke(app, first("held"))                       # revoked at T0, but a legal hold is set
        revoke(app, first("still-open"))                 # one plan revoked at T0 ...
        draft(app, "still-open")                         # ... and another still a draft
        complete(app, first("two-plans"))                # completed at T0 ...
        clock.advance(days=20)
        revoke(app, draft(app, "two-plans"))             # ... and the second revoked 20 days later
        clock.advance(days=180)
        revoke(app, first("ended-recently"))             # revoked at T0 + 200 days
    finally:
        app.close()
    now = T0 + timedelta(days=400)
    hold(settings, "held")

    dry = CliRunner().invoke(cli, ["retention", "run", "--dry-run", "--now", now.isoformat(), "--json",
                                   "--data-dir", str(tmp_path)], env={"CAREPLAN_RETENTION_DAYS": "365"})
    assert dry.exit_code == 0, dry.output
    verdicts = {j["client_id"]: j["verdict"] for j in json.loads(dry.output)}
    assert verdicts == {"done-long-ago": "eligible", "revoked-long-ago": "eligible", "two-plans": "eligible",
                        "held": "held", "still-open": "open plan", "ended-recently": "within period"}
    two_plans = next(j for j in json.loads(dry.output) if j["client_id"] == "two-plans")
    ended = datetime.fromisoformat(two_plans["ended_at"])  # the last plan's end counts (recorded times are
    assert abs(ended - (T0 + timedelta(days=20))) < timedelta(seconds=1)  # kept strictly increasing: a few µs on)

    done = retention.run(settings, now)  # the erasure of services.privacy (no NATS here: stores, keys, views)
    erased = {"done-long-ago", "revoked-long-ago", "two-plans"}
    assert {j.client_id: j.verdict for j in done} == {client: "erased now" if client in erased else verdict
                                                       for client, verdict in verdicts.items()}
    keys = key_store(settings)
    assert {client for client in verdicts if keys.is_destroyed(client)} == erased
    app = CareApplication(settings)
    try:
        for client, plan in plans.items():
            assert is_erased_plan(app, plan) is (client in erased), client
    finally:
        app.close()
    # the erased clients' ids are gone from the store with their content: the next run does not see them
    again = {j.client_id: j.verdict for j in retention.select(settings, now)}
    assert again == {client: verdict for client, verdict in verdicts.items() if client not in erased}
    # a day before the period passes for anyone, nothing goes
    assert not [j for j in retention.select(settings, T0 + timedelta(days=364)) if j.verdict == "eligible"]


def is_erased_plan(app: CareApplication, plan: UUID) -> bool:
    """Whether the plan's events read as erased (their key destroyed)."""
    return all(is_erased(e) for e in app.repository.event_store.get(plan))


def hold(settings: Settings, client_id: str) -> None:
    set_hold(settings, client_id, reason="Litigation 2026-7", actor=SUPERVISOR)


def test_careplan_up_runs_retention_by_itself_and_logs_counts_only(tmp_path: Path, caplog: Any) -> None:
    import logging
    import threading
    import time

    from services.system import System

    settings = Settings(data_dir=tmp_path, retention_days=1, retention_interval_hours=1)
    app = CareApplication(settings, clock=ManualClock(T0))  # care ended long before today
    try:
        revoke(app, draft(app, "gone-client"))
    finally:
        app.close()
    system = System(settings)
    caplog.set_level(logging.INFO, logger="services.system")
    runs = threading.Thread(target=system._retention, args=({**os.environ, "CAREPLAN_DATA_DIR": str(tmp_path)}, 0.0))
    runs.start()
    try:
        deadline = time.monotonic() + 120
        while "retention run:" not in caplog.text:
            assert time.monotonic() < deadline, "no retention run within 120 s"
            time.sleep(0.1)
    finally:
        system._stopping.set()
        runs.join(30)
    assert "retention run: 1 erased, 0 refused" in caplog.text and "gone-client" not in caplog.text
    assert key_store(settings).is_destroyed("gone-client")
