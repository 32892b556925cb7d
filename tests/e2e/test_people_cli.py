"""careplan plan|course|assess ...: people at a terminal, through the real HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def careplan(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], env={**env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")} | {"CAREPLAN_DATA_DIR": str(tmp_path)}
    token = careplan("api", "add-token", "--actor", "clinician-17", "--role", "clinician", "--all-clients",
                     env=env).stdout.split()[-1]
    ready = tmp_path / "api.ready"
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "api", "serve", "--ready-file", str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.05)
        yield env | {"CAREPLAN_API_URL": json.loads(ready.read_text())["api"], "CAREPLAN_API_TOKEN": token}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_clinician_works_a_plan_from_the_terminal(served: dict[str, str]) -> None:
    made = careplan("plan", "create", "client_id=client-9", "title=Low mood", "strategy=short_term_moderate",
                    'therapy_models=["steady_progress"]', "--json", env=served)
    assert made.returncode == 0, made.stdout + made.stderr
    plan = json.loads(made.stdout)["aggregate_id"]
    consent = careplan("plan", "do", plan, "record-consent", "note=Signed in session", "--if-match", "1", env=served)
    assert consent.returncode == 0 and "ConsentRecorded" in consent.stdout
    stale = careplan("plan", "do", plan, "explain-confidentiality", "--if-match", "1", env=served)
    assert stale.returncode == 1 and "412" in stale.stdout and "version 2" in stale.stdout
    goal = careplan("plan", "do", plan, "add-goal", "description=Walk daily", "--key", "walk", env=served)
    again = careplan("plan", "do", plan, "add-goal", "description=Walk daily", "--key", "walk", env=served)
    assert goal.returncode == again.returncode == 0 and goal.stdout == again.stdout
    shown = json.loads(careplan("plan", "show", plan, "--json", env=served).stdout)
    assert shown["version"] == 3 and len(shown["goals"]) == 1
    history = careplan("plan", "history", plan, env=served)
    assert history.returncode == 0 and "clinician-17 (clinician)" in history.stdout and "Client consent to treatment recorded" in history.stdout
    course = json.loads(careplan("course", "create", f"plan_id={plan}", "modality=interpersonal", "planned_sessions=12",
                                 "--json", env=served).stdout)["aggregate_id"]
    submitted = careplan("assess", "submit", course, "--instrument", "PHQ-9", "--answers", "1,1,2,0,1,,1,0,0",
                         "--answered-at", "2026-05-04T09:00:00+00:00", env=served)
    assert submitted.returncode == 0 and "QuestionnaireSubmitted" in submitted.stdout
    refused = careplan("plan", "do", plan, "lower-risk", "level=low", "reason=Better", env=served)
    assert refused.returncode == 1 and "403" in refused.stdout
    no_token = careplan("plan", "show", plan, env=served | {"CAREPLAN_API_TOKEN": "wrong"})
    assert no_token.returncode == 1 and "401" in no_token.stdout
    # every request, allowed or refused, is in the API's access log with who and the answer
    access = [json.loads(line) for line in (Path(served["CAREPLAN_DATA_DIR"]) / "api-access.log").read_text().splitlines()]
    assert {(a["actor"], a["status"]) for a in access} >= {("clinician-17", 201), ("clinician-17", 412),
                                                           ("clinician-17", 403), (None, 401)}
    assert all(a["path"].startswith(("/plans", "/courses")) for a in access)


def test_several_api_workers_share_one_store(tmp_path: Path) -> None:
    """CAREPLAN_API_WORKERS=2: two processes behind one port; commands without If-Match that
    meet the other worker's write are decided again on it, so none is refused or lost."""
    import concurrent.futures

    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREPLAN_")} | {"CAREPLAN_DATA_DIR": str(tmp_path)}
    token = careplan("api", "add-token", "--actor", "clinician-17", "--role", "clinician", "--all-clients",
                     env=env).stdout.split()[-1]
    ready = tmp_path / "api.ready"
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "api", "serve", "--ready-file", str(ready)],
                              env=env | {"CAREPLAN_API_WORKERS": "2"})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.05)
        url = json.loads(ready.read_text())["api"]
        headers = {"Authorization": f"Bearer {token}"}
        for _ in range(50):  # both workers up
            try:
                httpx.get(f"{url}/openapi.json", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        plan = httpx.post(f"{url}/plans", headers=headers, json={
            "client_id": "c", "title": "T", "strategy": "short_term_moderate", "therapy_models": ["steady_drive"]}).json()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: httpx.post(f"{url}/plans/{plan['aggregate_id']}/add-goal", headers=headers,
                                                       json={"description": f"goal {i}"}, timeout=30).status_code, range(40)))
        assert codes == [200] * 40
        shown = httpx.get(f"{url}/plans/{plan['aggregate_id']}", headers=headers).json()
        assert shown["version"] == 41 and len(shown["goals"]) == 40
    finally:
        server.terminate()
        server.wait(timeout=30)
