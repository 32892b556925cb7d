"""``careplan bench api``: commands through the HTTP API against the same commands called on
the Python application directly, same backend, same run.

(a) throughput: N commands from a few clients at once (keep-alive) through a real uvicorn
    process vs. ``CareApplication.handle`` in this process, from one thread or as many as
    the clients, whichever is faster. Target ≥ 0.5×.
(b) latency at a steady 100 commands/s through HTTP: p50, p99.

The commands are a clinician's ordinary mix on many plans: skill progress notes, goals,
questionnaire submissions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from rich.console import Console
from rich.table import Table

from domain.base import Actor, Role
from domain.catalogues.care import CopingSkill
from domain.catalogues.modalities import Modality
from services.api.auth import add_token
from services.bench.relay import _percentile
from services.care import commands as c
from services.care.application import CareApplication
from services.shared.commands import CommandMeta
from services.shared.persistence import drop_postgres_schemas
from services.shared.settings import Settings

THROUGHPUT_TARGET = 0.5
PLANS = 20
ACTOR = Actor(id="clinician-17", role=Role.CLINICIAN)


def _seed(app: CareApplication, part: str = "") -> list[tuple[UUID, UUID]]:
    """``PLANS`` plans, each with a course: the aggregates one measured part works on."""
    meta = CommandMeta(actor=ACTOR)
    seeded = []
    for i in range(PLANS):
        plan = app.handle(c.DraftCarePlan(client_id=f"client-{part}{i}", title="Bench", strategy="short_term_moderate",
                                          therapy_models=["steady_progress"]), meta).aggregate_id
        app.handle(c.TargetCopingSkill(plan_id=plan, skill=CopingSkill.COMMUNICATION), meta)
        course = app.handle(c.StartCourse(plan_id=plan, modality=Modality.INTERPERSONAL, planned_sessions=12),
                            meta).aggregate_id
        seeded.append((plan, course))
    return seeded


def _mix(i: int, plan: UUID, course: UUID) -> tuple[str, dict[str, Any], c.Command]:
    """The i-th command: its HTTP path and body, and the same command as a class."""
    kind = i % 3
    if kind == 0:
        body: dict[str, Any] = {"skill": "communication", "note": f"Practised assertive phrasing, note {i}"}
        return f"/plans/{plan}/record-skill-progress", body, c.RecordSkillProgress(plan_id=plan, **body)
    if kind == 1:
        body = {"description": f"Walk for twenty minutes on {i % 7 + 1} days a week"}
        return f"/plans/{plan}/add-goal", body, c.AddGoal(plan_id=plan, **body)
    body = {"instrument": "PHQ-9", "answers": [1, 2, 1, 0, 1, 1, 0, 1, 0], "answered_at": "2026-05-04T09:00:00+00:00"}
    return f"/courses/{course}/submit-questionnaire", body, c.SubmitQuestionnaire(course_id=course, **body)


@contextmanager
def _api_process(settings: Settings, data_dir: Path, workers: int) -> Iterator[tuple[str, str]]:
    token = add_token(data_dir / "api-tokens.json", actor_id=ACTOR.id, role=Role.CLINICIAN, clients=("*",))
    ready = data_dir / "api.ready"
    env = {**os.environ, **settings.as_environment()}
    env |= {"CAREPLAN_DATA_DIR": str(data_dir), "CAREPLAN_API_TOKENS_FILE": str(data_dir / "api-tokens.json"),
            "CAREPLAN_API_WORKERS": str(workers)}
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "api", "serve", "--ready-file", str(ready)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if time.monotonic() > deadline or process.poll() is not None:
                msg = "the API process did not start"
                raise RuntimeError(msg)
            time.sleep(0.05)
        yield json.loads(ready.read_text())["api"], token
    finally:
        process.terminate()
        process.wait(timeout=15)


def _rate(count: int, send: Callable[[int, int], None], clients: int) -> float:
    """Commands per second with ``clients`` callers at once, each sending its share in a row."""
    import threading

    def caller(k: int) -> None:
        for i in range(k, count, clients):
            send(k, i)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / (time.perf_counter() - start)


def measure(base: Settings, commands: int, rate: float, seconds: float, clients: int, workers: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="careplan-bench-api-") as tmp:
        settings = base.model_copy(update={"data_dir": Path(tmp), "postgres_schema_prefix": f"bench{os.getpid()}"})
        try:
            app = CareApplication(settings)
            # Each measured part works on aggregates of its own, seeded alike: a command's cost
            # grows with its aggregate (the cached aggregate is copied for every decision), so
            # HTTP working on the plans the direct calls had grown by 2 × ``commands`` events
            # compared unlike things (issue 17, docs/decisions.md).
            alone, together, seeded = _seed(app, "a"), _seed(app, "b"), _seed(app, "c")
            meta = CommandMeta(actor=ACTOR)

            def direct_on(plans: list[tuple[UUID, UUID]]) -> Callable[[int, int], None]:
                def direct(_: int, i: int) -> None:
                    plan, course = plans[i % PLANS]
                    app.handle(_mix(i, plan, course)[2], meta)

                return direct

            direct_rate = max(_rate(commands, direct_on(alone), 1), _rate(commands, direct_on(together), clients))
            app.close()
            with _api_process(settings, Path(tmp), workers) as (url, token):
                https = [httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
                         for _ in range(clients)]

                def over_http(k: int, i: int) -> None:
                    plan, course = seeded[i % PLANS]
                    path, body, _ = _mix(i, plan, course)
                    response = https[k].post(path, json=body)
                    if response.status_code >= 300:
                        msg = f"{path}: {response.status_code} {response.text}"
                        raise RuntimeError(msg)

                for i in range(50):  # warm the server's caches, as the direct path's are
                    over_http(0, 2 * commands + i)
                http_rate = _rate(commands, over_http, clients)
                latencies = []
                start = time.monotonic()
                for i in range(int(rate * seconds)):
                    delay = start + i / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    sent = time.perf_counter()
                    over_http(0, 3 * commands + i)
                    latencies.append((time.perf_counter() - sent) * 1000)
                for http in https:
                    http.close()
        finally:
            if settings.database == "postgres":
                drop_postgres_schemas(settings)
    return {"direct": direct_rate, "http": http_rate, "latencies": latencies}


def run_api_benchmark(
    base: Settings, *, commands: int, rate: float, seconds: float, clients: int, workers: int, console: Console
) -> dict[str, float]:
    figures = measure(base, commands, rate, seconds, clients, workers)
    ratio = figures["http"] / figures["direct"]
    p50, p99 = _percentile(figures["latencies"], 50), _percentile(figures["latencies"], 99)
    table = Table(title=f"careplan bench api ({base.database}; uvicorn, {workers} worker(s), {clients} keep-alive clients at once; "
                        "the Python application at its better of 1 or as many threads)")
    for column in ("measure", "HTTP API", "Python application", "ratio", "target"):
        table.add_column(column)
    table.add_row(f"commands/s, {commands:,} in a row", f"{figures['http']:,.0f}", f"{figures['direct']:,.0f}",
                  f"{ratio:.2f}", f"≥ {THROUGHPUT_TARGET}")
    table.add_row(f"latency at {rate:.0f} commands/s", f"p50 {p50:.1f} ms, p99 {p99:.1f} ms", "", "", "")
    console.print(table)
    print(f"RESULT api_throughput ratio={ratio:.2f} target={THROUGHPUT_TARGET}")
    print(f"RESULT api_latency_at_{rate:.0f}_per_s p50_ms={p50:.2f} p99_ms={p99:.2f}")
    return {"ratio": ratio, "p50": p50, "p99": p99}
