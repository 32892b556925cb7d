"""Bounded requests (issue 13, finding 5): bodies limited before parsing, command fields
bounded, open crises from a maintained view, FHIR _history in one pass, the audit export
streamed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from tests.integration.test_api import CLIENT, Setup, make_setup

LIMIT = 1024 * 1024


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Setup]:
    setup = make_setup(tmp_path)
    yield setup
    setup.close()


# --------------------------------------------------------------------------- body size


def _drive(app: Any, headers: list[tuple[bytes, bytes]], chunks: int, chunk: bytes) -> tuple[int, dict[str, Any], int]:
    """Sends an anonymous POST to ``app`` as ASGI, ``chunks`` chunks of ``chunk``; returns the
    status, the problem detail and how many bytes the application pulled."""
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        if pulled >= chunks * len(chunk):
            return {"type": "http.disconnect"}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": pulled < chunks * len(chunk)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/plans", "raw_path": b"/plans", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    import json

    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body), pulled


def test_a_chunked_anonymous_upload_of_many_mb_is_refused_after_the_limit_and_not_read(api: Setup) -> None:
    chunk = b" " * 65536
    status, problem, pulled = _drive(api.client.app, [(b"transfer-encoding", b"chunked")], chunks=800, chunk=chunk)  # 50 MiB
    assert status == 413, problem
    assert problem["type"] == "/problems/payload-too-large"
    assert pulled <= LIMIT + len(chunk)  # never more than the limit and one chunk


def test_a_declared_length_above_the_limit_is_refused_before_reading(api: Setup) -> None:
    status, problem, pulled = _drive(api.client.app, [(b"content-length", str(5 * 2**30).encode())], chunks=1,
                                     chunk=b"{}")
    assert (status, problem["status"], pulled) == (413, 413, 0)
    response = api.client.post("/plans", content=b"x" * (LIMIT + 1), headers=api.headers("clinician"))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"


def test_a_body_under_the_limit_is_served_as_before(api: Setup) -> None:
    status, problem, _ = _drive(api.client.app, [(b"transfer-encoding", b"chunked")], chunks=4, chunk=b" " * 1000)
    assert status in (401, 422), problem  # allowed through: FastAPI parses, authentication refuses
    made = api.post("/plans", {"client_id": CLIENT, "title": "t", "strategy": "short_term_moderate",
                               "therapy_models": ["steady_progress"]}, "clinician")
    assert made.status_code in (200, 201), made.text


def test_a_refused_body_is_in_the_access_log_with_its_status_and_nothing_of_its_content(tmp_path: Path) -> None:
    """The body limit sits outside routing; the access log sits outside the body limit, so a
    413 is logged like any answer: who (nobody: refused before authentication), what, 413."""
    import json

    from fastapi.testclient import TestClient

    from services.api.server import build
    from services.shared.settings import Settings

    api, app = build(Settings(data_dir=tmp_path))
    try:
        sentinel = b"SENTINEL-" + b"x" * 64
        declared = _drive(app, [(b"content-length", str(5 * 2**30).encode())], chunks=1, chunk=sentinel)
        chunked = _drive(app, [(b"transfer-encoding", b"chunked")], chunks=40, chunk=sentinel + b" " * 65536)
        assert declared[0] == chunked[0] == 413
        served = TestClient(app).post("/courses/x/submit-questionnaire", content=b"{" + sentinel * 20000 + b"}",
                                      headers={"Authorization": "Bearer not-a-token"})
        assert served.status_code == 413
        assert TestClient(app).get("/healthz").status_code == 200  # an answer of the routes, after them
    finally:
        for part in (api.care, api.escalation, api.assessment, api.dead_letters, api.readiness):
            part.close()
        api.access_log.close()
    text = (tmp_path / "api-access.log").read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(e["method"], e["path"], e["status"], e["actor"]) for e in lines] == [
        ("POST", "/plans", 413, None), ("POST", "/plans", 413, None),
        ("POST", "/courses/x/submit-questionnaire", 413, None), ("GET", "/healthz", 200, None)]
    assert "SENTINEL" not in text


def test_an_answer_the_handler_never_gave_is_logged_as_the_500_the_client_got(tmp_path: Path) -> None:
    """The access log is part of the one middleware at the door (issue 17): a handler that
    raises leaves the server's 500 as the answer, and that answer has its line too."""
    import json

    from fastapi.testclient import TestClient

    from services.api.server import build
    from services.shared.settings import Settings

    api, app = build(Settings(data_dir=tmp_path))

    def broken() -> None:
        msg = "a handler's bug"
        raise RuntimeError(msg)

    app.router.add_api_route("/broken", broken)
    try:
        answered = TestClient(app, raise_server_exceptions=False).get("/broken?x=1")
        assert answered.status_code == 500
    finally:
        for part in (api.care, api.escalation, api.assessment, api.dead_letters, api.readiness):
            part.close()
        api.access_log.close()
    lines = [json.loads(line) for line in (tmp_path / "api-access.log").read_text().splitlines()]
    assert [(e["method"], e["path"], e["query"], e["status"], e["actor"]) for e in lines] == [
        ("GET", "/broken", "x=1", 500, None)]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/courses/{course}/submit-questionnaire",
     {"instrument": "PHQ-9", "answers": [0] * 101, "answered_at": "2026-01-01T00:00:00Z"}, "answers"),
    ("/courses/{course}/submit-questionnaire",
     {"instrument": "P" * 16_001, "answers": [0] * 9, "answered_at": "2026-01-01T00:00:00Z"}, "instrument"),
    ("/plans", {"client_id": "client-1", "title": "t", "strategy": "short_term_moderate",
                "therapy_models": ["steady_progress"] * 21}, "therapy_models"),
    ("/plans", {"client_id": "client-1", "title": "t" * 16_001, "strategy": "short_term_moderate",
                "therapy_models": ["steady_progress"]}, "title"),
    ("/inventories/{inventory}/choose-problem-area-focus", {"areas": ["grief"] * 21}, "areas"),
])
def test_lists_and_strings_in_commands_are_bounded_at_the_door(api: Setup, path: str, body: dict[str, Any],
                                                               field: str) -> None:
    before = api.written()
    url = path.format(course=api.course, inventory=api.inventory)
    refused = api.post(url, body, "clinician")
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["type"] == "/problems/invalid-request"
    assert any(field in error["loc"] for error in problem["errors"]), problem
    assert api.written() == before


# --------------------------------------------------------------------------- FHIR _history


def test_fhir_history_reads_each_event_once(api: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(30):
        added = api.post(f"/plans/{api.plan}/add-goal", {"description": f"Goal {i}"}, "clinician")
        assert added.status_code == 200, added.text
    n = api.care.get_plan(api.plan).version
    store = api.care.events
    read = 0
    original = store.get

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal read
        for event in original(*args, **kwargs):
            read += 1
            yield event

    monkeypatch.setattr(store, "get", counted)
    history = api.client.get(f"/fhir/CarePlan/{api.plan}/_history", headers=api.headers("clinician"))
    assert history.status_code == 200, history.text
    bundle = history.json()
    assert bundle["total"] == n and bundle["entry"][0]["resource"]["meta"]["versionId"] == str(n)
    assert [e["resource"]["meta"]["versionId"] for e in bundle["entry"]] == [str(v) for v in range(n, 0, -1)]
    assert read <= n + 2, (read, n)  # each event once (31 for 31 versions); was n(n+1)/2


# --------------------------------------------------------------------------- open crises


def test_open_crises_are_listed_from_the_view_reading_only_the_open_ones(
        api: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    from domain.base import Actor, Role
    from services.escalation.commands import ResolveCrisis
    from services.escalation.service import EscalationApplication
    from services.shared.commands import CommandMeta
    from tests.integration.test_api import raise_crisis

    escalation = api.escalation
    supervisor = CommandMeta(actor=Actor(id="supervisor-1", role=Role.SUPERVISOR))
    raised = [raise_crisis(api, "client-1") for _ in range(40)]
    for cid in raised[:36]:
        escalation.handle(ResolveCrisis(crisis_id=cid, outcome="Safe at home", reason="Seen today"), supervisor)
    still_open = raised[36:]
    assert [UUID(c["id"]) for c in api.client.get("/escalations", headers=api.headers("clinician")).json()] == still_open

    loaded: list[UUID] = []
    load = escalation.load
    monkeypatch.setattr(escalation, "load", lambda aggregate_id, version=None: loaded.append(aggregate_id) or load(
        aggregate_id, version))
    newer = raise_crisis(api, "client-1")
    escalation.handle(ResolveCrisis(crisis_id=still_open[0], outcome="Seen", reason="Seen today"), supervisor)
    before, loaded[:] = escalation.open_view.read, []
    listed = api.client.get("/escalations", headers=api.headers("clinician"))
    assert [UUID(c["id"]) for c in listed.json()] == [*still_open[1:], newer]
    assert escalation.open_view.read - before == 2  # what was recorded since the last call
    assert sorted(loaded) == sorted([*still_open[1:], newer])  # the open crises only, not the 41 raised

    # paged, with a link to the next page and the total
    first = api.client.get("/escalations?limit=2", headers=api.headers("clinician"))
    assert [UUID(c["id"]) for c in first.json()] == still_open[1:3]
    assert first.headers["X-Total-Count"] == "4" and 'page=2&limit=2' in first.headers["Link"]
    second = api.client.get("/escalations?limit=2&page=2", headers=api.headers("clinician"))
    assert [UUID(c["id"]) for c in second.json()] == [still_open[3], newer] and "Link" not in second.headers
    assert api.client.get("/escalations?status=acknowledged", headers=api.headers("clinician")).json() == []
    assert len(api.client.get("/escalations?status=escalating", headers=api.headers("clinician")).json()) == 4
    assert api.client.get("/escalations?status=resolved", headers=api.headers("clinician")).status_code == 422

    # a restart rebuilds the same view from the store's index of open items: a row per open crisis, no crisis loaded
    restarted = EscalationApplication(escalation.settings)
    try:
        monkeypatch.setattr(restarted, "load", lambda *a, **k: pytest.fail("the view loads no crisis"))
        assert list(restarted.open_crisis_ids()) == [*still_open[1:], newer]
        assert restarted.open_view.read == 4
    finally:
        restarted.close()


# --------------------------------------------------------------------------- audit export


def test_the_audit_export_is_streamed_a_record_at_a_time_with_the_same_text(
        api: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import tracemalloc

    from services.audit.export import export_client, export_json
    from services.audit.reading import Stores
    from tests.integration.test_api import CLIENT, raise_crisis

    for _ in range(120):  # a long history: every crisis is a record of the client with a long reason
        crisis = raise_crisis(api, CLIENT)
    assert crisis

    def without_moment(text: str) -> dict[str, Any]:
        data = json.loads(text)
        data.pop("exported_at")
        return data

    with Stores(api.care.settings) as stores:
        whole = export_client(stores, CLIENT)
        for indent in (None, 2):
            streamed = "".join(export_json(stores, CLIENT, indent=indent))
            expected = whole.model_dump_json(indent=indent)
            assert without_moment(streamed) == without_moment(expected)
            moment = json.dumps(json.loads(expected)["exported_at"])
            assert streamed.replace(json.dumps(json.loads(streamed)["exported_at"]), moment) == expected  # same text
        total = len(whole.model_dump_json())
        del whole

        # the text is produced before the stores are read through: one record read per piece
        reads = 0
        select_events = {store.name: store.recorder.select_events for store in stores.all}
        for store in stores.all:
            def counted(*args: Any, _name: str = store.name, **kwargs: Any) -> Any:
                nonlocal reads
                reads += 1
                return select_events[_name](*args, **kwargs)
            monkeypatch.setattr(store.recorder, "select_events", counted)
        pieces = export_json(stores, CLIENT)
        next(pieces), next(pieces)
        assert reads == 1
        tracemalloc.start()
        try:
            size = sum(len(piece) for piece in pieces)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert size > 0.9 * total > 100_000
        assert peak < total / 4, (peak, total)  # never the whole export in memory

    served = api.client.get(f"/audit/clients/{CLIENT}/export",
                            headers=api.headers("auditor", **{"X-Audit-Purpose": "Bounded export"}))
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert len(without_moment(served.text)["aggregates"]) == 3 + 120
    missing = api.client.get("/audit/clients/nobody/export",
                             headers=api.headers("auditor", **{"X-Audit-Purpose": "Bounded export"}))
    assert missing.status_code == 404, missing.text


def test_the_html_export_and_the_local_cli_export_are_streamed_with_the_same_text(
        api: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """The HTML report is written from the stores as it is read (a page of each record at a
    time), the same text as the report rendered from the whole export; `careplan audit export
    --local` writes the pieces as they come, JSON or HTML, and never builds the whole export."""
    import re
    import tracemalloc
    from collections.abc import Iterator

    from typer.testing import CliRunner

    from services.audit import auditor as auditing
    from services.audit import export as exporting
    from services.audit.reading import Stores
    from services.cli.audit import app as audit_cli
    from tests.integration.test_api import raise_crisis

    def same(text: str) -> str:
        return re.sub(r'Exported [^ ]+ from|"exported_at": "[^"]+"', "<moment>", text)

    def streamed_report(crises: int) -> tuple[int, int]:
        """(characters, memory peak) of the HTML report once ``crises`` more are recorded."""
        for _ in range(crises):
            raise_crisis(api, CLIENT)
        with Stores(api.care.settings) as stores:
            pieces = exporting.export_html(stores, CLIENT)
            assert isinstance(pieces, Iterator) and not isinstance(pieces, (list, tuple, str))
            tracemalloc.start()
            try:
                size = 0
                for piece in pieces:
                    assert len(piece) < 10_000  # a row, a heading: never a section at once
                    size += len(piece)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
        return size, peak

    # past a few pages of the logs (PAGE notifications each), the memory a report needs stops
    # growing with the client's history; held whole, it would grow with the report and exceed it
    small, large = streamed_report(2 * exporting.PAGE), streamed_report(4 * exporting.PAGE)
    assert large[0] > 2.5 * small[0] > 250_000
    assert large[1] - small[1] < (large[0] - small[0]) / 4 and large[1] < large[0], (small, large)

    with Stores(api.care.settings) as stores:
        whole = exporting.export_client(stores, CLIENT)
        expected_html, expected_json = exporting.to_html(whole), whole.model_dump_json(indent=2)
        del whole
        assert len(expected_html) == large[0]
        assert same("".join(exporting.export_html(stores, CLIENT))) == same(expected_html)

    served = api.client.get(f"/audit/clients/{CLIENT}/export?format=html",
                            headers=api.headers("auditor", **{"X-Audit-Purpose": "Bounded export"}))
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/html")
    assert same(served.text) == same(expected_html)

    def whole_export(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the whole export was built")

    monkeypatch.setattr(exporting, "export_client", whole_export)
    monkeypatch.setattr(auditing, "export_client", whole_export)
    for output_format, expected in (("html", expected_html), ("json", expected_json)):
        written = api.care.settings.data_dir / f"report.{output_format}"
        run = CliRunner().invoke(audit_cli, ["export", "--client", CLIENT, "--format", output_format, "--local",
                                             "--purpose", "Bounded export", "--data-dir", str(api.care.settings.data_dir),
                                             "--output", str(written)])
        assert run.exit_code == 0, run.output
        assert same(written.read_text(encoding="utf-8")) == same(expected)
    printed = CliRunner().invoke(audit_cli, ["export", "--client", CLIENT, "--local", "--purpose", "Bounded export",
                                             "--data-dir", str(api.care.settings.data_dir)])
    assert printed.exit_code == 0 and same(printed.stdout) == same(expected_json) + "\n"

    # through `careplan api serve`: the API streams the same text, and the command writes it as it comes
    from tests.support.served import add_token, environment, serving

    data = api.care.settings.data_dir
    token = add_token(environment(data), "governance-2", "auditor", "--all-clients")
    with serving(data) as url:
        for output_format, expected in (("html", expected_html), ("json", expected_json)):
            written = data / f"served.{output_format}"
            run = CliRunner().invoke(audit_cli, ["export", "--client", CLIENT, "--format", output_format, "--api", url,
                                                 "--token", token, "--purpose", "Bounded export", "--output", str(written)])
            assert run.exit_code == 0, run.output
            assert same(written.read_text(encoding="utf-8")) == same(expected)
        refused = CliRunner().invoke(audit_cli, ["export", "--client", "nobody", "--api", url, "--token", token,
                                                 "--purpose", "Bounded export", "--output", str(data / "none.json")])
        assert refused.exit_code == 1 and not (data / "none.json").exists() and not (data / "none.json.part").exists()
