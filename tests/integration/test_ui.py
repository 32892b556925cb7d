"""The web pages under /ui/ through FastAPI's TestClient: signing in and out, the session
cookie's flags, CSRF refusal (nothing changes), role and client scope on every page, the
plan's forms through the command path, the auditor's pages recorded with their purpose,
and /docs without any external address."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from fastapi.testclient import TestClient

from services.api.auth import revoke_token
from services.api.ui.sessions import COOKIE
from services.audit.access import AccessLog
from services.shared.settings import Settings
from tests.integration.test_api import Setup, make_setup

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
VERSION = re.compile(r'name="version" value="(\d+)"')


@pytest.fixture
def ui(backend_settings: Settings) -> Iterator[Setup]:
    from services.views.queries import Views

    setup = make_setup(backend_settings.data_dir, backend_settings)
    views = setup.client.app.state.api.views = Views(setup.care.settings)
    yield setup
    views.close()
    setup.close()


def browser(setup: Setup) -> TestClient:
    """A new 'browser' (its own cookie jar) on the same application."""
    return TestClient(setup.client.app, raise_server_exceptions=False, base_url="http://testserver")


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, html[:500]
    return found.group(1)


def sign_in(setup: Setup, caller: str) -> TestClient:
    web = browser(setup)
    page = web.get("/ui/login")
    assert page.status_code == 200
    signed = web.post("/ui/login", data={"token": setup.tokens[caller], "csrf": csrf_of(page.text), "next": "/ui/"},
                      follow_redirects=False)
    assert signed.status_code == 303, signed.text
    return web


def plan_page(setup: Setup, web: TestClient) -> tuple[str, str, int]:
    page = web.get(f"/ui/plans/{setup.plan}")
    assert page.status_code == 200, page.text
    version = VERSION.search(page.text)
    assert version
    return page.text, csrf_of(page.text), int(version.group(1))


def test_signing_in_sets_an_httponly_strict_cookie_scoped_to_ui(ui: Setup) -> None:
    web = browser(ui)
    page = web.get("/ui/login")
    assert '<html lang="en">' in page.text and '<label for="token">' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    signed = web.post("/ui/login", data={"token": ui.tokens["clinician"], "csrf": csrf_of(page.text)},
                      follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/"
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert ui.tokens["clinician"] not in cookie  # the token itself is never in the cookie
    assert web.get(f"/ui/plans/{ui.plan}").status_code == 200


def test_over_https_the_cookie_is_secure_too(ui: Setup) -> None:
    web = TestClient(ui.client.app, raise_server_exceptions=False, base_url="https://testserver")
    page = web.get("/ui/login")
    signed = web.post("/ui/login", data={"token": ui.tokens["clinician"], "csrf": csrf_of(page.text)},
                      follow_redirects=False)
    assert "Secure" in signed.headers["set-cookie"] and "HttpOnly" in signed.headers["set-cookie"]


def test_an_expired_token_is_refused_at_sign_in(ui: Setup) -> None:
    from datetime import UTC, datetime, timedelta

    from domain.base import Role
    from services.api.auth import add_token

    soon = datetime.now(tz=UTC) + timedelta(seconds=1)
    token = add_token(ui.care.settings.data_dir / "tokens.json", actor_id="brief-1", role=Role.CLINICIAN,
                      clients=("client-1",), expires_at=soon, now=soon - timedelta(seconds=2))
    ui.client.app.state.api.tokens.reload()
    import time

    time.sleep(max(0.0, (soon - datetime.now(tz=UTC)).total_seconds()) + 0.05)
    web = browser(ui)
    page = web.get("/ui/login")
    refused = web.post("/ui/login", data={"token": token, "csrf": csrf_of(page.text)}, follow_redirects=False)
    assert refused.status_code == 401 and "not valid" in refused.text


def test_a_wrong_token_or_a_sign_in_without_csrf_is_refused(ui: Setup) -> None:
    web = browser(ui)
    page = web.get("/ui/login")
    wrong = web.post("/ui/login", data={"token": "not-a-token", "csrf": csrf_of(page.text)}, follow_redirects=False)
    assert wrong.status_code == 401 and "not valid" in wrong.text and COOKIE not in wrong.headers.get("set-cookie", "")
    forged = web.post("/ui/login", data={"token": ui.tokens["clinician"], "csrf": "forged"}, follow_redirects=False)
    assert forged.status_code == 403
    assert web.get(f"/ui/plans/{ui.plan}", follow_redirects=False).status_code == 303  # still signed out


def test_without_a_session_pages_redirect_to_sign_in_and_posts_are_refused(ui: Setup) -> None:
    web = browser(ui)
    for path in ("/ui/", "/ui/caseload", f"/ui/plans/{ui.plan}", f"/ui/plans/{ui.plan}/progress", "/ui/audit"):
        answer = web.get(path, follow_redirects=False)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/ui/login?next=")
    before = ui.written()
    answer = web.post(f"/ui/plans/{ui.plan}/add-goal", data={"description": "x", "version": "1", "csrf": "x"})
    assert answer.status_code == 401 and ui.written() == before


def test_a_forged_cookie_is_no_session(ui: Setup) -> None:
    web = browser(ui)
    web.cookies.set(COOKIE, "eyJuIjoiYWJjIiwiZCI6IjAwIn0.forged.signature", domain="testserver.local", path="/ui")
    assert web.get(f"/ui/plans/{ui.plan}", follow_redirects=False).status_code == 303


def test_a_revoked_token_ends_the_session_at_the_next_request(ui: Setup) -> None:
    web = sign_in(ui, "clinician")
    assert web.get(f"/ui/plans/{ui.plan}").status_code == 200
    token_file = ui.care.settings.data_dir / "tokens.json"
    from services.api.auth import list_tokens

    (stored,) = [t for t in list_tokens(token_file) if t.actor_id == "clinician-1"]
    revoke_token(token_file, stored.id)
    ui.client.app.state.api.tokens.reload()
    gone = web.get(f"/ui/plans/{ui.plan}", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/login")


def test_signing_out_needs_the_csrf_token_and_ends_the_session(ui: Setup) -> None:
    web = sign_in(ui, "clinician")
    _, csrf, _ = plan_page(ui, web)
    assert web.post("/ui/logout", data={"csrf": "wrong"}).status_code == 403
    assert web.get(f"/ui/plans/{ui.plan}").status_code == 200
    out = web.post("/ui/logout", data={"csrf": csrf}, follow_redirects=False)
    assert out.status_code == 303
    assert f'{COOKIE}=""' in out.headers["set-cookie"] and "Max-Age=0" in out.headers["set-cookie"]
    assert web.get(f"/ui/plans/{ui.plan}", follow_redirects=False).status_code == 303


def test_the_plan_page_shows_goals_strategy_and_the_timeline(ui: Setup) -> None:
    web = sign_in(ui, "clinician")
    html, _, version = plan_page(ui, web)
    assert "<h1>Low mood</h1>" in html
    assert "Strategy history" in html and "Timeline of every change" in html
    assert "clinician-1 (clinician)" in html  # who, in the timeline
    assert version == ui.care.get_plan(ui.plan).version


def test_a_form_runs_the_command_with_the_version_shown(ui: Setup) -> None:
    web = sign_in(ui, "clinician")
    _, csrf, version = plan_page(ui, web)
    done = web.post(f"/ui/plans/{ui.plan}/add-goal", data={
        "csrf": csrf, "version": str(version), "key": "k1", "description": "Walk to the shop twice a week",
        "reason": "agreed in session"}, follow_redirects=False)
    assert done.status_code == 303, done.text
    plan = ui.care.get_plan(ui.plan)
    assert plan.version == version + 1
    assert [g.description for g in plan.goals.values()] == ["Walk to the shop twice a week"]
    (event,) = [e for e in ui.care.history(ui.plan) if type(e).__name__ == "GoalAdded"]
    assert event.actor.id == "clinician-1"  # the session's token, as for the JSON API
    assert "Walk to the shop twice a week" in web.get(f"/ui/plans/{ui.plan}").text


def test_a_stale_form_is_a_readable_conflict_and_writes_nothing(ui: Setup) -> None:
    web = sign_in(ui, "clinician")
    _, csrf, version = plan_page(ui, web)
    ui.post(f"/plans/{ui.plan}/add-goal", {"description": "Someone else's goal"}, "supervisor")
    before = ui.written()
    stale = web.post(f"/ui/plans/{ui.plan}/change-strategy", data={
        "csrf": csrf, "version": str(version), "strategy": "mid_term_in_depth", "reason": "slower pace"})
    assert stale.status_code == 409
    assert "changed while you were looking at it" in stale.text and "Traceback" not in stale.text
    assert 'value="slower pace"' in stale.text  # what was typed is kept
    assert ui.written() == before


def test_an_invalid_form_is_shown_on_the_page_and_writes_nothing(ui: Setup) -> None:
    web = sign_in(ui, "clinician")
    _, csrf, version = plan_page(ui, web)
    before = ui.written()
    bad = web.post(f"/ui/plans/{ui.plan}/change-strategy", data={
        "csrf": csrf, "version": str(version), "strategy": "not-a-strategy", "reason": "x"})
    assert bad.status_code == 422 and "Please check the form" in bad.text and "strategy" in bad.text
    no_reason = web.post(f"/ui/plans/{ui.plan}/change-strategy", data={
        "csrf": csrf, "version": str(version), "strategy": "mid_term_in_depth"})
    assert no_reason.status_code == 422 and "Nothing was written" in no_reason.text
    assert ui.written() == before


@pytest.mark.parametrize("csrf", [None, "", "0" * 64, "wrong"])
def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(ui: Setup, csrf: str | None) -> None:
    web = sign_in(ui, "clinician")
    _, _, version = plan_page(ui, web)
    before = ui.written()
    data = {"version": str(version), "description": "Should not land"}
    if csrf is not None:
        data["csrf"] = csrf
    refused = web.post(f"/ui/plans/{ui.plan}/add-goal", data=data)
    assert refused.status_code == 403 and "Nothing was changed" in refused.text
    assert ui.written() == before and not ui.care.get_plan(ui.plan).goals


def test_another_sessions_csrf_token_is_refused(ui: Setup) -> None:
    mine, theirs = sign_in(ui, "clinician"), sign_in(ui, "supervisor")
    _, their_csrf, version = plan_page(ui, theirs)
    before = ui.written()
    refused = mine.post(f"/ui/plans/{ui.plan}/add-goal",
                        data={"csrf": their_csrf, "version": str(version), "description": "Should not land"})
    assert refused.status_code == 403 and ui.written() == before


def test_another_clients_plan_is_the_same_404_as_a_missing_one(ui: Setup) -> None:
    web = sign_in(ui, "other-clinician")
    theirs = web.get(f"/ui/plans/{ui.plan}")
    missing = web.get(f"/ui/plans/{uuid4()}")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace(str(ui.plan), "") == missing.text.replace(re.search(
        r"/ui/plans/([0-9a-f-]+)", missing.url.path).group(1), "")  # type: ignore[union-attr]
    assert "Low mood" not in theirs.text
    assert web.get(f"/ui/plans/{ui.plan}/progress").status_code == 404
    assert web.get("/ui/plans/not-a-uuid").status_code == 404
    # and a form for it is refused the same way, writing nothing
    before = ui.written()
    page = web.get("/ui/login")
    answer = web.post(f"/ui/plans/{ui.plan}/add-goal", data={"csrf": csrf_of(page.text), "version": "1",
                                                             "description": "x"})
    assert answer.status_code == 404 and ui.written() == before


def test_roles_each_page_allows(ui: Setup) -> None:
    auditor, clinician, integration = sign_in(ui, "auditor"), sign_in(ui, "clinician"), sign_in(ui, "integration")
    for path in (f"/ui/plans/{ui.plan}", f"/ui/plans/{ui.plan}/progress", "/ui/caseload"):
        assert auditor.get(path).status_code == 403, path
        assert integration.get(path).status_code == 403, path
    supervisor = sign_in(ui, "supervisor")
    assert supervisor.get(f"/ui/plans/{ui.plan}").status_code == 200
    assert supervisor.get(f"/ui/plans/{ui.plan}/progress").status_code == 200
    assert supervisor.get("/ui/audit").status_code == 403
    assert supervisor.get(f"/ui/audit/events/{ui.plan}/trace").status_code == 403
    assert integration.get("/ui/audit").status_code == 403
    start = auditor.get("/ui/", follow_redirects=False)
    assert start.status_code == 303 and start.headers["location"] == "/ui/audit"
    assert clinician.get("/ui/audit").status_code == 403
    assert clinician.get(f"/ui/audit/aggregates/{ui.plan}").status_code == 403
    assert auditor.get("/ui/audit").status_code == 200


def test_a_supervisor_only_command_is_refused_to_a_clinician_on_the_page(ui: Setup) -> None:
    from services.api.ui import plan_pages

    assert all(cmd.__name__ not in ("LowerRisk", "EndEmergencySupport") for cmd, _, _ in plan_pages.ACTIONS.values())
    web = sign_in(ui, "clinician")
    assert web.post(f"/ui/plans/{ui.plan}/lower-risk", data={"csrf": "x"}).status_code == 404


def audit_reads(settings: Settings) -> list[tuple[str, str, str, str]]:
    log = AccessLog(settings)
    try:
        return [(e.actor.id, e.function, e.subject, e.purpose) for e in log.entries()]  # type: ignore[attr-defined]
    finally:
        log.close()


def test_the_auditors_pages_record_each_read_with_its_purpose(ui: Setup) -> None:
    web = sign_in(ui, "auditor")
    start = web.get("/ui/audit")
    opened = web.post("/ui/audit", data={"csrf": csrf_of(start.text), "kind": "aggregate", "id": str(ui.plan)},
                      follow_redirects=False)
    assert opened.headers["location"] == f"/ui/audit/aggregates/{ui.plan}"
    form = web.get(opened.headers["location"])
    csrf = csrf_of(form.text)
    assert audit_reads(ui.care.settings) == []  # opening the form read nothing
    no_purpose = web.post(f"/ui/audit/aggregates/{ui.plan}", data={"csrf": csrf, "purpose": " "})
    assert no_purpose.status_code == 422 and audit_reads(ui.care.settings) == []
    read = web.post(f"/ui/audit/aggregates/{ui.plan}",
                    data={"csrf": csrf, "purpose": "Complaint 2026-114", "at": "1", "from": "1", "to": "2"})
    assert read.status_code == 200, read.text
    assert "CarePlanDrafted" in read.text and "State at version 1" in read.text and "Diff from version 1" in read.text
    assert audit_reads(ui.care.settings) == [
        ("auditor-1", "history", f"aggregate {ui.plan}", "Complaint 2026-114"),
        ("auditor-1", "replay", f"aggregate {ui.plan} at version 1", "Complaint 2026-114"),
        ("auditor-1", "diff", f"aggregate {ui.plan} from 1 to 2", "Complaint 2026-114"),
    ]
    event = next(iter(ui.care.history(ui.plan))).event_id
    traced = web.post(f"/ui/audit/events/{event}/trace", data={"csrf": csrf, "purpose": "Complaint 2026-114"})
    assert traced.status_code == 200 and "<svg" in traced.text and 'class="graph"' in traced.text
    assert audit_reads(ui.care.settings)[-1] == ("auditor-1", "trace", f"event {event}", "Complaint 2026-114")


def test_an_auditor_out_of_scope_gets_404_and_a_bad_moment_a_422(ui: Setup, tmp_path: Path) -> None:
    from domain.base import Role
    from services.api.auth import add_token

    token = add_token(ui.care.settings.data_dir / "tokens.json", actor_id="auditor-2", role=Role.AUDITOR,
                      clients=("client-2",))
    ui.client.app.state.api.tokens.reload()
    ui.tokens["narrow-auditor"] = token
    web = sign_in(ui, "narrow-auditor")
    csrf = csrf_of(web.get(f"/ui/audit/aggregates/{ui.plan}").text)
    assert web.post(f"/ui/audit/aggregates/{ui.plan}", data={"csrf": csrf, "purpose": "p"}).status_code == 404
    event = next(iter(ui.care.history(ui.plan))).event_id
    assert web.post(f"/ui/audit/events/{event}/trace", data={"csrf": csrf, "purpose": "p"}).status_code == 404
    wide = sign_in(ui, "auditor")
    csrf = csrf_of(wide.get(f"/ui/audit/aggregates/{ui.plan}").text)
    bad = wide.post(f"/ui/audit/aggregates/{ui.plan}", data={"csrf": csrf, "purpose": "p", "at": "yesterday"})
    assert bad.status_code == 422 and "moment with a time zone" in bad.text


def test_docs_and_redoc_reference_no_external_address(ui: Setup) -> None:
    for path in ("/docs", "/redoc"):
        page = ui.client.get(path)
        assert page.status_code == 200
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", page.text), page.text
        assert "cdn" not in page.text.lower()
        for asset in re.findall(r"(?:src|href)=[\"']?(/docs/assets/[^\"' >]+)", page.text):
            assert ui.client.get(asset).status_code == 200, asset
    assert ui.client.get("/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert all(not p.startswith("/ui") for p in ui.client.get("/openapi.json").json()["paths"])


def test_ui_pages_reference_nothing_outside_the_origin(ui: Setup) -> None:
    web = sign_in(ui, "clinician")
    for path in ("/ui/login", f"/ui/plans/{ui.plan}"):
        text = web.get(path).text
        assert not re.search(r"(src|href|action)=\"(https?:)?//", text), path


def test_no_next_address_leads_off_the_site(ui: Setup) -> None:
    web = browser(ui)
    page = web.get("/ui/login?next=//evil.example/x")
    assert 'name="next" value="/ui/"' in page.text
    signed = web.post("/ui/login", data={"token": ui.tokens["clinician"], "csrf": csrf_of(page.text),
                                         "next": "https://evil.example/"}, follow_redirects=False)
    assert signed.headers["location"] == "/ui/"


def test_the_caseload_lists_the_tokens_plans_with_badges_and_sorts_on_the_server(ui: Setup) -> None:
    second = ui.post("/plans", {"client_id": "client-1", "title": "Worry", "strategy": "short_term_moderate",
                                "therapy_models": ["steady_progress"]}, "clinician").json()["aggregate_id"]
    ui.post(f"/plans/{second}/raise-risk", {"level": "high", "reason": "disclosed plans"}, "clinician")
    web = sign_in(ui, "clinician")
    page = web.get("/ui/")
    assert page.status_code == 200, page.text
    assert "<h1>Caseload</h1>" in page.text and "2 plans you drafted" in page.text
    assert f'href="/ui/plans/{ui.plan}"' in page.text and f'href="/ui/plans/{second}"' in page.text
    assert page.text.index("Worry") < page.text.index("Low mood")  # highest risk first
    assert '<span class="badge risk-high">high</span>' in page.text
    by_title = web.get("/ui/caseload?sort=title&order=asc")
    assert by_title.text.index("Low mood") < by_title.text.index("Worry")
    assert 'aria-sort="ascending"' in by_title.text
    desc = web.get("/ui/caseload?sort=title&order=desc").text
    assert desc.index("Worry") < desc.index("Low mood")
    assert "Worry" in web.get("/ui/caseload?risk=high").text and "Low mood" not in web.get("/ui/caseload?risk=high").text
    assert web.get("/ui/caseload?sort=nonsense").status_code == 422
    assert web.get("/ui/caseload?risk=nonsense").status_code == 422
    # another clinician's token (another client) lists none of them
    other = sign_in(ui, "other-clinician").get("/ui/caseload")
    assert other.status_code == 200 and "Low mood" not in other.text and "No plans" in other.text
    # a supervisor sees every clinician's plans of their clients
    assert "Low mood" in sign_in(ui, "supervisor").get("/ui/caseload").text


def test_the_progress_page_without_scores_says_so_per_plan_and_per_course(ui: Setup) -> None:
    web = sign_in(ui, "clinician")
    for path in (f"/ui/plans/{ui.plan}/progress", f"/ui/courses/{ui.course}/progress"):
        page = web.get(path)
        assert page.status_code == 200, page.text
        assert "No PHQ-9 or GAD-7 has been scored for this plan yet." in page.text
    assert f'href="/ui/plans/{ui.plan}/progress">every course of the plan' in web.get(
        f"/ui/courses/{ui.course}/progress").text
    other = sign_in(ui, "other-clinician")
    assert other.get(f"/ui/courses/{ui.course}/progress").status_code == 404
    assert other.get(f"/ui/courses/{uuid4()}/progress").status_code == 404
    assert sign_in(ui, "auditor").get(f"/ui/courses/{ui.course}/progress").status_code == 403


def test_metrics_name_the_pages_by_their_templates_under_ui(ui: Setup) -> None:
    def json_reads(scraped: str) -> list[str]:  # the JSON API's plan reads (other tests in this process count too)
        return [line for line in scraped.splitlines() if 'method="GET",route="/plans/{plan_id}"' in line]

    web = sign_in(ui, "clinician")
    before = json_reads(ui.client.get("/metrics").text)
    assert web.get(f"/ui/plans/{ui.plan}").status_code == 200
    scraped = ui.client.get("/metrics").text
    assert 'route="/ui/plans/{plan_id}",status="200"' in scraped
    assert str(ui.plan) not in scraped  # a template, never an id
    assert json_reads(scraped) == before  # not counted as the JSON API's read


def test_a_form_sent_twice_adds_once(ui: Setup) -> None:
    web = sign_in(ui, "clinician")
    html, csrf, version = plan_page(ui, web)
    key = re.search(r'name="key" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]
    form = {"csrf": csrf, "version": str(version), "key": key, "description": "Sleep before midnight"}
    first = web.post(f"/ui/plans/{ui.plan}/add-goal", data=form, follow_redirects=False)
    again = web.post(f"/ui/plans/{ui.plan}/add-goal", data=form, follow_redirects=False)
    assert first.status_code == again.status_code == 303
    assert [g.description for g in ui.care.get_plan(ui.plan).goals.values()] == ["Sleep before midnight"]


def test_read_models_that_cannot_be_read_are_a_503_page(ui: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    views = ui.client.app.state.api.views

    def locked(*_: object, **__: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(views, "caseload", locked)
    page = sign_in(ui, "clinician").get("/ui/caseload")
    assert page.status_code == 503 and page.headers["retry-after"] == "5" and "Retry shortly" in page.text


def test_the_session_key_is_made_once_0600_and_shared_by_every_worker(tmp_path: Path) -> None:
    import stat

    from services.api.ui.sessions import KEY_FILE, session_key

    first, second = session_key(tmp_path), session_key(tmp_path)
    assert first == second and len(first) == 32
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [KEY_FILE]  # no temporary file left
