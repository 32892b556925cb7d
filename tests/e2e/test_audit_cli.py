"""careplan audit ... on the demo's stores, through the API with an auditor's token: the crisis
traced both ways across services, the HTML report opened in a real browser, every read in the
access log (the token's actor, or the operator at the machine with --local), every chain intact."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.demo import demo_copy
from tests.support.served import add_token, environment, serving

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def careplan(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")} | {"COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True, timeout=180)


#: The API serving the demo's stores and an auditor's token, per data folder.
SERVED: dict[Path, tuple[str, str]] = {}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data = tmp_path_factory.mktemp("audit") / "data"
    demo_copy(tmp_path_factory, data)  # the demo's folder, as `careplan demo --data-dir` leaves it
    token = add_token(environment(data), "governance-2", "auditor", "--all-clients")
    with serving(data) as api:
        SERVED[data] = (api, token)
        yield data


def audit(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    api, token = SERVED[data]
    return careplan("audit", *args, "--api", api, "--token", token, "--purpose", "Serious incident review",
                    "--data-dir", str(data))


def plan_id(data: Path) -> str:
    import sqlite3

    with sqlite3.connect(data / "care.sqlite") as db:
        (raw,) = db.execute("SELECT originator_id FROM stored_events WHERE topic LIKE '%CarePlanDrafted'").fetchone()
    return str(__import__("uuid").UUID(raw))


def test_the_crisis_is_traced_in_both_directions_across_the_services(demo: Path) -> None:
    history = json.loads(audit(demo, "history", plan_id(demo), "--json").stdout)
    activated = next(e for e in history["events"] if e["event_type"] == "EmergencySupportActivated")
    traced = audit(demo, "trace", activated["event_id"], "--json")
    assert traced.returncode == 0, traced.stdout + traced.stderr
    chain = json.loads(traced.stdout)
    assert [(h["store"], h["event_type"]) for h in chain["causes"]] == [
        ("care", "QuestionnaireSubmitted"), ("assessment", "AssessmentScored"), ("escalation", "EscalationRaised")]
    assert chain["causes"][0]["actor"] == "intake-portal"
    assert {("scheduling", "ScheduleFollowsStrategy")} <= {(h["store"], h["event_type"]) for h in chain["effects"]}
    # from the origin forward: scored, raised, level 1, no ack, level 2, acknowledged, resolved, and the plan's reactions
    origin = chain["causes"][0]["event_id"]
    forward = json.loads(audit(demo, "trace", origin, "--json").stdout)
    kinds = [h["event_type"] for h in forward["effects"]]
    for expected in ("AssessmentScored", "EscalationRaised", "EscalationLevelNotified", "EscalationAcknowledged",
                     "CrisisResolved", "RiskLevelRaised", "EmergencySupportActivated", "CrisisResolutionRecorded"):
        assert expected in kinds, (expected, kinds)
    assert kinds.index("AssessmentScored") < kinds.index("EscalationRaised") < kinds.index("EscalationAcknowledged")
    assert forward["causes"] == []  # the submission came from a command: the origin


def test_the_html_report_opens_in_a_real_browser_and_shows_the_history(demo: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "Debian's chromium is required (.ci/run installs it: apt-get install chromium)"
    report = tmp_path / "report.html"
    written = audit(demo, "export", "--client", "client-0042", "--format", "html", "--output", str(report))
    assert written.returncode == 0, written.stdout + written.stderr
    assert "<script" not in report.read_text() and "http" not in report.read_text().split("<body>")[0]  # self-contained
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,1800"]
    dom = subprocess.run([browser, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = dom.stdout
    assert "Care history of client client-0042" in text
    assert "I should never feel anxious or low again" in text and "Notice low moments early" in text
    assert "Strategy changed: short_term_moderate → mid_term_in_depth" in text
    assert "PHQ-9 scored: total 17" in text and "Escalation raised (urgent)" in text and "Crisis resolved" in text
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "audit-report.png"
    shot.unlink(missing_ok=True)
    subprocess.run([browser, *flags, f"--screenshot={shot}", report.as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.exists() and shot.stat().st_size > 10_000
    exported = json.loads(audit(demo, "export", "--client", "client-0042", "--format", "json").stdout)
    # the subscriptions store holds a link from each of the client's aggregates to the client (which
    # subscriptions match by): a record of the client's, so it is in the export too
    assert {a["store"] for a in exported["aggregates"]} == {"care", "assessment", "escalation", "scheduling",
                                                             "subscriptions"}


def test_reads_are_in_the_access_log_and_every_store_verifies(demo: Path) -> None:
    api, token = SERVED[demo]
    refused = careplan("audit", "history", plan_id(demo), "--api", api, "--token", token, "--data-dir", str(demo))
    assert refused.returncode == 1 and "purpose" in refused.stdout
    forged = careplan("audit", "history", plan_id(demo), "--actor", "x", "--purpose", "p", "--data-dir", str(demo))
    assert forged.returncode == 2 and "--actor/--role are gone" in forged.stdout
    before = json.loads(careplan("audit", "access-log", "--json", "--data-dir", str(demo)).stdout)
    assert audit(demo, "replay", plan_id(demo), "--version", "3").returncode == 0
    diffed = audit(demo, "diff", plan_id(demo), "1", "3", "--json")
    assert diffed.returncode == 0 and json.loads(diffed.stdout)["to_version"] == 3, diffed.stdout + diffed.stderr
    assert audit(demo, "replay", plan_id(demo), "--at", "2000-01-01T00:00:00+00:00").returncode == 1  # did not exist yet
    local = careplan("audit", "history", plan_id(demo), "--local", "--purpose", "Restore check", "--data-dir", str(demo))
    assert local.returncode == 0, local.stdout + local.stderr
    after = json.loads(careplan("audit", "access-log", "--json", "--data-dir", str(demo)).stdout)
    assert len(after) == len(before) + 4
    assert after[-4]["function"] == "replay" and after[-4]["purpose"] == "Serious incident review"
    assert after[-3]["function"] == "diff"
    assert {(e["actor"], e["role"]) for e in after[-4:-1]} == {("governance-2", "auditor")}  # the token's, not typed
    me = f"operator:{getpass.getuser()}@{socket.gethostname()}"
    assert (after[-1]["actor"], after[-1]["role"], after[-1]["function"], after[-1]["purpose"]) == (
        me, "operator", "history", "Restore check")
    verified = careplan("audit", "verify", "--json", "--data-dir", str(demo))
    assert verified.returncode == 0, verified.stdout
    reports = json.loads(verified.stdout)
    assert {r["store"] for r in reports} >= {"care", "assessment", "escalation", "scheduling", "audit_access"}
    assert all(r["ok"] and r["events"] > 0 for r in reports)
