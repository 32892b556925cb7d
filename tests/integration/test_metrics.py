"""``GET /metrics``: the whole system's metrics in one scrape (the processes of `careplan up`
in multiprocess mode, plus what the API computes when scraped), what they show while NATS is
down or a service is kept down, and that no label ever carries an id."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
import nats
import pytest
from eventsourcing.cipher import AESCipher
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from domain.base import Actor, Role
from services.care import commands as c
from services.care.application import CareApplication
from services.demo import DEMO_POLICY, _story
from services.registry import SERVICE_NAMES, STORES
from services.shared import metrics
from services.shared.bus import EmbeddedNats
from services.shared.commands import CommandMeta
from services.shared.health import relay_status
from services.shared.settings import Settings
from tests.integration.test_health import status_cli, wait_for
from tests.support.bus import InProcessRelay, with_streams

UUID_RE = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
#: The story's client (services.demo) and this test's own.
CLIENTS = ("client-0042", "client-metrics-7d3a")
#: Every declared metric must be present after the story (nothing excused).
OTHERS: set[str] = set()


def declared() -> set[str]:
    """Every metric name services/shared/metrics.py declares, as the parser names families."""
    names = {m._name for m in vars(metrics).values() if isinstance(m, MetricWrapperBase)}
    names |= {name.removesuffix("_total") for name in metrics.SCRAPED}
    return names


def scrape(url: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """family name → its samples (name, labels, value)."""
    text = httpx.get(f"{url}/metrics", timeout=15).text
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in text_string_to_metric_families(text)}


def value(found: dict[str, Any], family: str, **labels: str) -> float | None:
    for _, sample_labels, sample_value in found.get(family, []):
        if all(sample_labels.get(k) == v for k, v in labels.items()):
            return sample_value
    return None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    with EmbeddedNats(store_dir=tmp_path / "nats") as server:
        yield with_streams(server)


@pytest.fixture
def system(tmp_path: Path, nats_server: EmbeddedNats) -> Iterator[dict[str, Any]]:
    """`careplan up` (with the demo's escalation policy: 3 s acknowledgement timeouts)
    against the test's own NATS server, and a supervisor's token."""
    data, ready = tmp_path / "data", tmp_path / "ready.json"
    policy = tmp_path / "policy.json"
    policy.write_text(DEMO_POLICY.model_dump_json())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAREPLAN_", "PROMETHEUS_"))}
    made = subprocess.run(
        [sys.executable, "-m", "services.cli", "api", "add-token", "--actor", "supervisor-3", "--role", "supervisor",
         "--all-clients", "--data-dir", str(data)], env=env, capture_output=True, text=True, check=True,
    )
    token = made.stdout.strip().splitlines()[-1]
    with (tmp_path / "up.log").open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "up", "--data-dir", str(data), "--ready-file", str(ready)],
            env={**env, "CAREPLAN_NATS_URL": nats_server.url, "CAREPLAN_ESCALATION_POLICY_FILE": str(policy),
                 "COLUMNS": "300"},
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        wait_for(ready.exists, 60, "careplan up")
        info = json.loads(ready.read_text())
        yield {**info, "token": token, "headers": {"Authorization": f"Bearer {token}"},
               "settings": Settings(data_dir=data, nats_url=nats_server.url)}
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def create_plan_and_course(url: str, headers: dict[str, str], client: str = CLIENTS[1]) -> tuple[str, str]:
    plan = httpx.post(f"{url}/plans", headers=headers, timeout=30, json={
        "client_id": client, "title": "Metrics", "strategy": "short_term_moderate", "therapy_models": ["steady_drive"]})
    assert plan.status_code == 201, plan.text
    plan_id = plan.json()["aggregate_id"]
    for step in ("record-consent", "explain-confidentiality"):
        answer = httpx.post(f"{url}/plans/{plan_id}/{step}", headers=headers, timeout=30, json={"note": "Agreed"})
        assert answer.status_code == 200, answer.text
    course = httpx.post(f"{url}/courses", headers=headers, timeout=30,
                        json={"plan_id": plan_id, "modality": "interpersonal", "planned_sessions": 12})
    assert course.status_code == 201, course.text
    return plan_id, course.json()["aggregate_id"]


def submit(url: str, headers: dict[str, str], course_id: str, answers: list[int]) -> None:
    answer = httpx.post(f"{url}/courses/{course_id}/submit-questionnaire", headers=headers, timeout=30,
                        json={"instrument": "PHQ-9", "answers": answers, "answered_at": datetime.now(UTC).isoformat()})
    assert answer.status_code == 200, answer.text


async def publish_garbage(nats_url: str) -> None:
    """A message the assessment service cannot read, on a subject it consumes: a dead letter
    (and, since a submission may carry a risk signal, a fail-safe escalation)."""
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().publish(f"care.clinical.v1.therapy_course.{uuid4()}.questionnaire_submitted", b"not json")
    finally:
        await nc.close()


def test_one_scrape_shows_every_metric_of_the_system_after_the_demo_story_with_no_id_in_any_label(
    system: dict[str, Any],
) -> None:
    url, headers, settings = system["api"], system["headers"], system["settings"]
    app = CareApplication(settings)
    try:
        _story(app)  # the demo's story, as `careplan demo` tells it (in this process)
    finally:
        app.close()
    # Through the API (whose process records into the system's metrics): a crisis, its
    # timeout to the next level, its acknowledgement and resolution, a refused command.
    plan_id, course_id = create_plan_and_course(url, headers)
    refused = httpx.post(f"{url}/plans/{plan_id}/record-consent", headers=headers, timeout=30, json={"note": "Again"})
    assert refused.status_code >= 400
    submit(url, headers, course_id, [2, 2, 2, 2, 2, 2, 2, 2, 1])

    def crisis() -> dict[str, Any] | None:
        crises = httpx.get(f"{url}/escalations", headers=headers, timeout=30).json()
        return next((x for x in crises if x["client_id"] == CLIENTS[1] and x["level"] >= 2), None)

    found = wait_for(crisis, 60, "the crisis escalated to level 2 by its timeout")
    for step, body in (("acknowledge", {"reason": "Phoned the client"}),
                       ("resolve", {"outcome": "Safe", "reason": "Reassessed"})):
        answer = httpx.post(f"{url}/escalations/{found['id']}/{step}", headers=headers, timeout=30, json=body)
        assert answer.status_code == 200, answer.text
    asyncio.run(publish_garbage(system["nats"]))

    def settled() -> dict[str, Any] | None:
        found = scrape(url)
        lags = [value(found, "careplan_relay_lag_events", store=store) for store in STORES]
        backlog = [value(found, "careplan_consumer_pending_messages", service=s) for s in SERVICE_NAMES]
        ready = (all(lag == 0 for lag in lags) and all(b == 0 for b in backlog)
                 and (value(found, "careplan_dead_letters_open", service="assessment") or 0) >= 1
                 and (value(found, "careplan_escalations_open", severity="immediate") or 0) >= 1)
        return found if ready else None

    found = wait_for(settled, 60, "every event relayed and consumed, the dead letter recorded")
    missing = declared() - OTHERS - set(found)
    assert not missing, f"not in /metrics: {sorted(missing)}"

    assert value(found, "careplan_commands", application="care", command="DraftCarePlan", outcome="accepted")
    assert value(found, "careplan_commands", application="care", command="RecordConsent", outcome="refused")
    assert value(found, "careplan_commands", application="escalation", command="AcknowledgeEscalation",
                 outcome="accepted")
    assert value(found, "careplan_http_requests", method="POST", route="/plans/{plan_id}/record-consent", status="200")
    assert value(found, "careplan_escalation_timeouts", severity="urgent")
    acknowledged = [v for name, labels, v in found["careplan_escalation_acknowledge_seconds"]
                    if name.endswith("_count") and labels.get("severity") == "urgent"]
    assert acknowledged == [1.0], found["careplan_escalation_acknowledge_seconds"]
    assert value(found, "careplan_dead_letters", service="assessment") == 1
    assert value(found, "careplan_relay_published_events", store="care")
    assert value(found, "careplan_consumer_messages", service="assessment", outcome="processed")
    assert value(found, "careplan_consumer_messages", service="assessment", outcome="dead_lettered") == 1
    assert value(found, "careplan_process_restarts", process="api") == 0
    assert value(found, "careplan_relay_errors", store="care", kind="event") == 0

    every_label = [(family, label, v) for family, samples in found.items()
                   for _, labels, _ in samples for label, v in labels.items()]
    assert every_label
    for family, label, v in every_label:
        assert not UUID_RE.search(v), (family, label, v)
        assert not any(client in v for client in CLIENTS), (family, label, v)
    routes = {v for family, label, v in every_label if label == "route"}
    assert "/plans/{plan_id}" in routes or "/plans/{plan_id}/record-consent" in routes
    assert all(r.startswith("/") or r == "unmatched" for r in routes), routes

    # Prometheus's own linter accepts the exposition (names, units, _total, help texts).
    if shutil.which("promtool"):
        text = httpx.get(f"{url}/metrics", timeout=30).text
        linted = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                                timeout=60, check=False)
        assert linted.returncode == 0, linted.stdout + linted.stderr
    # Prometheus finds the API through the file `up` writes (deploy/monitoring/prometheus.yml).
    targets = json.loads((settings.data_dir / "prometheus-targets.json").read_text())
    assert targets == [{"targets": [url.split("://", 1)[1]]}]

    # `careplan status` shows the figures (and in --json) under the components.
    shown = status_cli(url, "--json")
    figures = json.loads(shown.stdout)["figures"]
    assert figures["relay_lag_events"]["care"] == 0
    assert set(figures["views_lag_events"]) == {"care", "assessment", "scheduling", "escalation"}
    assert set(figures["consumer_lag_messages"]) == set(SERVICE_NAMES)
    assert figures["dead_letters_open"]["assessment"] >= 1
    assert figures["escalations_open"]["immediate"] >= 1
    assert figures["oldest_unacknowledged_escalation_seconds"] is not None
    table = status_cli(url)
    assert "relay lag" in table.stdout and "open escalations" in table.stdout, table.stdout


def test_relay_lag_grows_while_nats_is_down_and_returns_to_zero_with_nothing_lost(
    system: dict[str, Any], nats_server: EmbeddedNats,
) -> None:
    url, headers, settings = system["api"], system["headers"], system["settings"]
    wait_for(lambda: value(scrape(url), "careplan_relay_lag_events", store="care") == 0, 30, "care relay caught up")
    nats_server.stop()
    try:
        started = time.monotonic()
        during = scrape(url)
        assert time.monotonic() - started < 10, "a scrape hangs while NATS is down"
        assert "careplan_consumer_pending_messages" not in during or not during["careplan_consumer_pending_messages"]
        plan_ids = []
        for _ in range(3):
            plan = httpx.post(f"{url}/plans", headers=headers, timeout=30, json={
                "client_id": CLIENTS[1], "title": "Outage", "strategy": "short_term_moderate",
                "therapy_models": ["steady_drive"]})
            assert plan.status_code == 201, plan.text
            plan_ids.append(plan.json()["aggregate_id"])
        first = wait_for(lambda: (v := value(scrape(url), "careplan_relay_lag_events", store="care")) and v >= 3 and v,
                         15, "relay lag while NATS is down")
        httpx.post(f"{url}/plans", headers=headers, timeout=30, json={
            "client_id": CLIENTS[1], "title": "Outage", "strategy": "short_term_moderate",
            "therapy_models": ["steady_drive"]})
        wait_for(lambda: (value(scrape(url), "careplan_relay_lag_events", store="care") or 0) > first, 15,
                 "relay lag growing while NATS is down")
        assert (value(scrape(url), "careplan_relay_errors", store="care", kind="nats") or 0) > 0
    finally:
        nats_server.start()
    wait_for(lambda: value(scrape(url), "careplan_relay_lag_events", store="care") == 0, 60, "relay lag back to 0")

    app = CareApplication(settings)
    try:
        last = app.recorder.max_notification_id()
    finally:
        app.close()

    async def last_on_stream() -> int:
        nc = await nats.connect(system["nats"])
        try:
            message = await nc.jetstream().get_last_msg("CARE", "care.clinical.>")
            return int((message.headers or {})["ce-sequence"])
        finally:
            await nc.close()

    assert asyncio.run(last_on_stream()) == last, "the stream lacks what was written during the outage"


def test_a_service_kept_down_shows_its_backlog_growing(system: dict[str, Any]) -> None:
    url, headers = system["api"], system["headers"]
    _, course_id = create_plan_and_course(url, headers)
    wait_for(lambda: value(scrape(url), "careplan_consumer_pending_messages", service="assessment") == 0, 30,
             "assessment caught up")
    pid = system["processes"]["service:assessment"]
    os.kill(pid, signal.SIGSTOP)  # down, and kept down: the supervisor restarts only what exits
    try:
        def backlog() -> float:
            found = scrape(url)
            return ((value(found, "careplan_consumer_pending_messages", service="assessment") or 0)
                    + (value(found, "careplan_consumer_ack_pending_messages", service="assessment") or 0))

        for _ in range(3):
            submit(url, headers, course_id, [0] * 9)
        first = wait_for(lambda: (b := backlog()) >= 3 and b, 30, "assessment's backlog in /metrics")
        submit(url, headers, course_id, [0] * 9)
        wait_for(lambda: backlog() > first, 30, "assessment's backlog growing")
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: value(scrape(url), "careplan_consumer_pending_messages", service="assessment") == 0
             and value(scrape(url), "careplan_consumer_ack_pending_messages", service="assessment") == 0,
             60, "the backlog worked off")


async def test_a_relay_that_cannot_decode_its_events_counts_event_errors_not_nats(
    tmp_path: Path, nats_server: EmbeddedNats,
) -> None:
    """Events written under one cipher key, relayed under another: the relay says an event
    cannot be read (status and errors{kind="event"}), not that NATS is away. (The single key:
    per-client keys off, since a client's event is under the client's key.)"""
    written = Settings(data_dir=tmp_path, cipher_key=AESCipher.create_key(32), client_keys=False)
    app = CareApplication(written)
    try:
        app.handle(c.DraftCarePlan(client_id=CLIENTS[1], title="Cipher", strategy="short_term_moderate",
                                   therapy_models=["steady_drive"]), CommandMeta(actor=Actor(id="c-1", role=Role.CLINICIAN)))
    finally:
        app.close()
    store = "care"

    def errors(kind: str) -> float:
        return REGISTRY.get_sample_value("careplan_relay_errors_total", {"store": store, "kind": kind}) or 0.0

    before = {kind: errors(kind) for kind in ("event", "nats")}
    wrong = Settings(data_dir=tmp_path, cipher_key=AESCipher.create_key(32), client_keys=False)
    async with InProcessRelay(wrong, nats_server.url) as relay:
        deadline = time.monotonic() + 20
        while not relay.relay.stats.state.startswith("failing") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        status = relay_status("relay:care", relay.relay.stats)
    assert status.reason == "an event in the store cannot be read", status
    assert errors("event") > before["event"]
    assert errors("nats") == before["nats"]


# --------------------------------------------------------------------- unit level


def test_commands_are_counted_by_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.shared.errors import AggregateMissingError

    def count(command: str, outcome: str) -> float:
        return REGISTRY.get_sample_value("careplan_commands_total",
                                         {"application": "care", "command": command, "outcome": outcome}) or 0.0

    before = {(k, o): count(k, o) for k in ("DraftCarePlan", "RecordConsent") for o in ("accepted", "refused", "failed")}
    app = CareApplication(Settings(data_dir=tmp_path))
    meta = CommandMeta(actor=Actor(id="c-1", role=Role.CLINICIAN))
    try:
        app.handle(c.DraftCarePlan(client_id=CLIENTS[1], title="Counted", strategy="short_term_moderate",
                                   therapy_models=["steady_drive"]), meta)
        with pytest.raises(AggregateMissingError):
            app.handle(c.RecordConsent(plan_id=UUID(int=7)), meta)

        def broken(*_: object, **__: object) -> None:
            raise RuntimeError("disk on fire")

        monkeypatch.setattr(app, "save", broken)
        with pytest.raises(RuntimeError):
            app.handle(c.DraftCarePlan(client_id=CLIENTS[1], title="Counted", strategy="short_term_moderate",
                                       therapy_models=["steady_drive"]), meta)
    finally:
        app.close()
    assert count("DraftCarePlan", "accepted") == before[("DraftCarePlan", "accepted")] + 1
    assert count("RecordConsent", "refused") == before[("RecordConsent", "refused")] + 1
    assert count("DraftCarePlan", "failed") == before[("DraftCarePlan", "failed")] + 1


def test_http_requests_are_labelled_by_route_template_never_the_path(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from services.api.app import create_app
    from services.api.auth import TokenRegistry
    from services.api.dependencies import Api

    app = CareApplication(Settings(data_dir=tmp_path))
    try:
        client = TestClient(create_app(Api(app, TokenRegistry.load(tmp_path / "tokens.json"))))
        plan_id = uuid4()
        assert client.get(f"/plans/{plan_id}").status_code == 401
        assert client.get(f"/no/such/{plan_id}").status_code == 404
        text = client.get("/metrics").text
    finally:
        app.close()
    assert str(plan_id) not in text
    samples = {(s.labels.get("route"), s.labels.get("status")) for f in text_string_to_metric_families(text)
               if f.name == "careplan_http_requests" for s in f.samples}
    assert ("/plans/{plan_id}", "401") in samples
    assert ("unmatched", "404") in samples


def test_a_failing_metric_update_is_logged_once_and_never_fails_the_work(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def inc(self, *_: object) -> None:
            raise RuntimeError("mmap gone")

        observe = inc

    figures = metrics.EscalationFigures(["urgent"])
    figures._timeouts["urgent"] = Broken()  # type: ignore[assignment]
    figures._acknowledge["urgent"] = Broken()  # type: ignore[assignment]
    with caplog.at_level("WARNING", logger="services.shared.metrics"):
        for _ in range(3):
            figures.timed_out("urgent")  # an escalation's timeout: nothing may stop it
            figures.acknowledged("urgent", 12.0)
    warned = [r for r in caplog.records if "metrics: updating" in r.getMessage()]
    assert len(warned) == 2, [r.getMessage() for r in warned]  # once per place
