"""The web pages in Debian's headless Chromium, driven by Playwright (no browser download:
``executable_path=/usr/bin/chromium``), on the demo's stores served by ``careplan api serve``:
sign in, every page's visible text, a form sent and its effect seen, the auditor's timeline
and causation graph, /docs offline, and not one request outside the API's origin.
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.demo import demo_copy
from tests.support.served import add_token, environment, serving

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Site:
    def __init__(self, origin: str, tokens: dict[str, str], browser: Any) -> None:
        self.origin, self.tokens, self.browser = origin, tokens, browser
        #: every URL any page asked for, across the whole module
        self.requested: list[str] = []

    def stayed_on_origin(self) -> None:
        """Not one request (script, style, font, image, XHR) left the API's origin."""
        assert self.requested
        outside = [u for u in self.requested if not u.startswith((self.origin + "/", "data:"))]
        assert outside == []

    def page(self) -> Any:
        context = self.browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        page.on("request", lambda request: self.requested.append(request.url))
        return page

    def sign_in(self, who: str, path: str = "/ui/") -> Any:
        page = self.page()
        page.goto(self.origin + path)
        assert "/ui/login" in page.url
        assert page.locator("h1").inner_text() == "Sign in"
        shot(page, "login")
        page.get_by_label("API token").fill(self.tokens[who])
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        return page


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert CHROMIUM, "Debian's chromium is required (.ci/run installs it: apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    data = tmp_path_factory.mktemp("ui") / "data"
    env = environment(data)
    demo_copy(tmp_path_factory, data)  # the demo's folder, as `careplan demo --data-dir` leaves it
    tokens = {
        "clinician": add_token(env, "clinician-17", "clinician", "--client", "client-0042"),
        "auditor": add_token(env, "governance-2", "auditor", "--all-clients"),
    }
    ARTIFACTS.mkdir(exist_ok=True)
    with serving(data) as origin, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield Site(origin, tokens, browser)
        finally:
            browser.close()


def shot(page: Any, name: str, **options: Any) -> None:
    """A screenshot in tests/artifacts, after axe-core (vendored by axe-playwright-python) found
    no WCAG 2 A/AA violation on the page: labels, contrast, headings, lang, names."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page, options={"runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa"]}})
    assert found.violations_count == 0, (name, found.generate_snapshot())
    path = ARTIFACTS / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=True, **options)
    assert path.stat().st_size > 10_000


def test_a_clinician_signs_in_reads_the_caseload_plan_and_progress_and_sends_a_form(site: Site) -> None:
    page = site.sign_in("clinician")
    assert page.url.endswith("/ui/")
    # caseload
    assert page.locator("h1").inner_text() == "Caseload"
    table = page.locator("table.caseload").inner_text()
    assert "client-0042" in table and "Low mood after a move and a strained partnership" in table
    assert "PHQ-9" in page.locator("table.caseload thead").inner_text()
    assert page.locator("header").get_by_text("clinician-17").is_visible()
    shot(page, "caseload")
    page.get_by_role("link", name="Risk").click()  # server-side sort by a column
    assert "sort=risk" in page.url and page.locator("th[aria-sort]").count() == 1
    # plan
    page.get_by_role("link", name="Low mood after a move and a strained partnership").click()
    assert page.locator("h1").inner_text() == "Low mood after a move and a strained partnership"
    for heading in ("Goals", "Expectations", "Strategy history", "Actions", "Timeline of every change"):
        assert page.get_by_role("heading", name=heading, exact=True).is_visible(), heading
    assert "I should never feel anxious or low again" in page.locator("main").inner_text()  # an adjustment chain
    timeline = page.locator("#timeline").inner_text()
    assert "Strategy changed: short_term_moderate → mid_term_in_depth" in timeline and "clinician-17" in timeline
    shot(page, "plan")
    # a form: add a goal, and see it on the page and in the timeline
    rows_before = page.locator("#timeline tbody tr").count()
    page.get_by_label("Goal", exact=True).fill("Join the walking group on Saturdays")
    page.get_by_label("Why (optional)").fill("Agreed at review")
    page.get_by_role("button", name="Add goal").click()
    page.wait_for_load_state()
    assert "Join the walking group on Saturdays" in page.locator("section[aria-labelledby=goals-h]").inner_text()
    assert page.locator("#timeline tbody tr").count() == rows_before + 1
    assert "Goal added" in page.locator("#timeline tbody tr").first.inner_text()
    shot(page, "plan-after-form")
    # a readable problem: the strategy form without a reason
    page.get_by_label("New strategy").select_option("long_term_deep_work")
    page.get_by_role("button", name="Change strategy").click()
    page.wait_for_load_state()
    assert page.get_by_role("alert").is_visible()
    assert "Nothing was written" in page.get_by_role("alert").inner_text()
    shot(page, "plan-problem")
    # progress
    page.get_by_role("link", name="Progress chart (PHQ-9, GAD-7)").click()
    assert page.locator("h1").inner_text().startswith("Progress:")
    chart = page.locator("figure svg.chart")
    assert chart.is_visible() and (chart.locator("title").first.text_content() or "").startswith("PHQ-9 and GAD-7 over time")
    assert page.locator("svg .score").count() >= 3 and page.locator("svg .flag-risk").count() >= 1
    scores = page.locator("section[aria-labelledby=scores-h] table").inner_text()
    assert "PHQ-9" in scores and "GAD-7" in scores
    assert "PHQ-9 item 9 above 0" in page.locator("section[aria-labelledby=flags-h]").inner_text()
    shot(page, "progress")
    page.emulate_media(media="print")
    assert not page.locator("header.top").is_visible()  # print: the chart and tables, no navigation
    assert chart.is_visible()
    shot(page, "progress-print")
    page.emulate_media(media="screen")
    page.get_by_role("navigation", name="Courses").get_by_role("link", name="course 1").click()
    assert page.locator("h1").inner_text().endswith("(one course)") and chart.is_visible()
    shot(page, "progress-course")
    page.goto(site.origin + "/ui/audit")  # not for a clinician: a readable refusal
    assert page.locator("h1").inner_text() == "Not for your role"
    shot(page, "refused")
    # the keyboard: the first Tab reaches the skip link
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    # sign out: the pages ask for the token again
    page.get_by_role("button", name="Sign out").click()
    page.goto(site.origin + "/ui/caseload")
    assert "/ui/login" in page.url
    site.stayed_on_origin()


def test_an_auditor_reads_a_timeline_a_state_a_diff_and_a_causation_graph(site: Site) -> None:
    page = site.sign_in("auditor")
    assert page.url.endswith("/ui/audit")
    assert page.locator("h1").inner_text() == "Audit"
    clinician = site.sign_in("clinician")
    plan_href = clinician.get_by_role("link", name=re.compile("Low mood")).first.get_attribute("href")
    plan_id = plan_href.rsplit("/", 1)[-1]
    page.get_by_label("Id", exact=True).fill(plan_id)
    page.get_by_role("button", name="Open").click()
    page.get_by_label("Purpose of this read (recorded)").fill("Serious incident review")
    page.get_by_label("State at (a version, or a moment such as 2026-05-04T09:30:00Z; optional)").fill("3")
    page.get_by_label("From (version or moment)").fill("1")
    page.get_by_label("To (version or moment)").fill("5")
    page.get_by_role("button", name="Read").click()
    page.wait_for_load_state()
    history = page.locator("section[aria-labelledby=history-h]").inner_text()
    assert "CarePlanDrafted" in history and "EmergencySupportActivated" in history
    assert page.get_by_role("heading", name=re.compile("^State at version 3")).is_visible()
    assert page.get_by_role("heading", name="Diff from version 1 to version 5").is_visible()
    shot(page, "audit-timeline")
    entry = page.locator(".audit-timeline li", has_text="EmergencySupportActivated").first
    entry.get_by_role("link", name="Trace this event").click()
    page.get_by_label("Purpose of this read (recorded)").fill("Serious incident review")
    page.get_by_role("button", name="Trace").click()
    page.wait_for_load_state()
    graph = page.locator("svg.graph")
    assert graph.is_visible()
    stores = graph.locator("text.store").evaluate_all("nodes => nodes.map(n => n.textContent)")
    assert stores[:3] == ["care", "assessment", "escalation"]
    assert graph.locator("path.edge").count() >= 3
    shot(page, "audit-trace")
    site.stayed_on_origin()


def test_the_api_docs_render_offline(site: Site) -> None:
    page = site.page()
    page.goto(site.origin + "/docs")
    page.wait_for_selector(".swagger-ui .information-container", timeout=30_000)
    assert "careplan" in page.locator(".swagger-ui .info .title").inner_text()
    assert page.locator(".opblock").count() > 20
    page.screenshot(path=str(ARTIFACTS / "ui-docs.png"), full_page=True)  # Swagger UI's own markup: not ours to fix
    site.stayed_on_origin()
