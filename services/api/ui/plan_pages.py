"""The clinicians' pages: caseload, a plan (with its actions), a plan's progress."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from domain.base import Role
from domain.care_plan import CarePlan
from domain.catalogues.strategies import Strategy
from domain.errors import DomainError
from services.api.problems import ApiProblem, status_of
from services.api.ui import CLINICAL, PREFIX, PageProblem, Ui, not_found, parse_uuid
from services.api.ui.charts import Flag, Score, progress_chart, shared_bands
from services.api.ui.charts import Progress as ChartProgress
from services.care import commands as c
from services.care import handling
from services.shared.commands import CommandMeta
from services.shared.errors import AggregateMissingError, ConcurrencyConflictError

#: The events that set or change a plan's strategy, for its strategy history.
STRATEGY_EVENTS = ("CarePlanDrafted", "StrategyChanged", "EmergencySupportActivated", "EmergencySupportEnded")


def plan_in_scope(ui: Ui, request: Request, plan_id: str) -> CarePlan:
    """The plan, if the signed-in token may see it; a plan of another client is the same 404
    as a missing one (nothing of it shown)."""
    principal = ui.signed_in(request, CLINICAL)
    found = parse_uuid(plan_id, "plan")
    try:
        plan = ui.api.care.get_plan(found)
    except AggregateMissingError:
        raise not_found("plan") from None
    if not principal.may_act_for(plan.client_id):
        raise not_found("plan")
    return plan


def timeline(ui: Ui, plan_id: UUID) -> list[dict[str, Any]]:
    return [
        {"version": e.originator_version, "at": e.timestamp, "actor": e.actor.id, "role": e.actor.role.value,
         "type": type(e).__name__, "summary": e.describe(), "reason": e.reason}
        for e in ui.api.care.history(plan_id)
    ]


def strategy_history(events: list[dict[str, Any]], plan: CarePlan) -> list[dict[str, Any]]:
    found = [e for e in events if e["type"] in STRATEGY_EVENTS]
    return found or [{"version": 1, "at": plan.created_on, "summary": f"Strategy {plan.strategy.value}", "actor": "",
                      "reason": None, "type": "CarePlanDrafted", "role": ""}]


#: action in the address → (command, the form's fields the command takes, what the button says)
ACTIONS: dict[str, tuple[type[c.PlanCommand], tuple[str, ...], str]] = {
    "add-goal": (c.AddGoal, ("description", "reason"), "Add goal"),
    "adjust-expectation": (c.AdjustExpectation, ("expectation_id", "fair_goal", "rationale"), "Adjust expectation"),
    "change-strategy": (c.ChangeStrategy, ("strategy", "reason"), "Change strategy"),
}


def include(app: FastAPI, ui: Ui) -> None:
    include_lists(app, ui)

    def plan_page(request: Request, plan: CarePlan, *, status: int = 200, problem: str | None = None,
                  failed: str | None = None, sent: dict[str, str] | None = None) -> Response:
        events = timeline(ui, plan.id)
        return ui.render(
            request, "plan.html", status, plan=plan, events=list(reversed(events)),
            strategies=strategy_history(events, plan), strategy_choices=[s for s in Strategy
                                                                         if s is not Strategy.EMERGENCY_SUPPORT],
            problem=problem, failed=failed, sent=sent or {}, title=f"Plan: {plan.title}",
        )

    @app.get("/plans/{plan_id}")
    async def plan(request: Request, plan_id: str) -> Response:
        return plan_page(request, plan_in_scope(ui, request, plan_id))

    @app.post("/plans/{plan_id}/{action}")
    async def act(request: Request, plan_id: str, action: str) -> Response:
        if action not in ACTIONS:
            raise not_found()
        command, fields, _ = ACTIONS[action]
        principal, form = await ui.checked_form(request, CLINICAL)
        current = plan_in_scope(ui, request, plan_id)
        sent = {name: str(form.get(name) or "").strip() for name in fields}
        try:
            ui.api.may_command(principal, command)
        except ApiProblem as refused:
            raise PageProblem(403, "Not for your role", f"{refused.detail} Nothing was changed.") from None
        version = str(form.get("version") or "")
        if not version.isdigit():
            raise PageProblem(422, "Form incomplete", "The form did not say which version of the plan it was "
                              "filled in on; open the plan again. Nothing was changed.")
        values = {k: v for k, v in sent.items() if v}
        make: Callable[[], c.Command] = lambda: command(plan_id=current.id, **values)
        key = str(form.get("key") or "") or None
        meta = CommandMeta(actor=principal.actor, expected_version=int(version))
        try:
            handling.handle(ui.api.care, make, meta, key, aggregate_id=current.id)
        except ConcurrencyConflictError:
            latest = ui.api.care.get_plan(current.id)
            return plan_page(request, latest, status=409, failed=action, sent=sent, problem=(
                f"The plan changed while you were looking at it (you saw version {version}, it is now version "
                f"{latest.version}). Nothing was written: read the changes below and send the form again."))
        except ValidationError as invalid:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}" for e in invalid.errors())
            return plan_page(request, current, status=422, failed=action, sent=sent,
                             problem=f"Please check the form ({problems}). Nothing was written.")
        except DomainError as refused:
            return plan_page(request, current, status=status_of(refused, if_match=True), failed=action, sent=sent,
                             problem=f"{refused} Nothing was written.")
        except ValueError as invalid:
            return plan_page(request, current, status=422, failed=action, sent=sent,
                             problem=f"{invalid} Nothing was written.")
        return RedirectResponse(f"{PREFIX}/plans/{current.id}#timeline", status_code=303)


# --------------------------------------------------------------------- caseload and progress

#: column → how a caseload row sorts by it (None last whatever the direction)
SORTS: dict[str, Callable[[Any], Any]] = {
    "client": lambda r: r.client_id,
    "title": lambda r: r.title.lower(),
    "status": lambda r: r.status,
    "strategy": lambda r: r.strategy,
    "risk": lambda r: RISK_ORDER.index(r.risk_level) if r.risk_level in RISK_ORDER else -1,
    "crises": lambda r: r.open_crises,
    "next_session": lambda r: r.next_session_at,
    "phq9": lambda r: r.last_phq9.score if r.last_phq9 else None,
    "gad7": lambda r: r.last_gad7.score if r.last_gad7 else None,
    "overdue": lambda r: r.questionnaires_overdue,
}
RISK_ORDER = ("none", "low", "moderate", "high", "imminent")
#: scheduled sessions drawn on the chart: up to this long after the last score
UPCOMING_SHOWN = timedelta(weeks=2)
#: rows per page of the caseload page (sorting is within a page; the views order risk first)
PAGE_SIZE = 200


def views_of(ui: Ui) -> Any:
    if ui.api.views is None:
        raise PageProblem(503, "Read models not running", "This API runs without the read models (services/views); "
                          "the caseload and progress pages need them.")
    ui.api.views.catch_up()
    return ui.api.views


def sorted_rows(rows: list[Any], column: str, descending: bool) -> list[Any]:
    key = SORTS[column]
    present = [r for r in rows if key(r) is not None]
    absent = [r for r in rows if key(r) is None]
    return sorted(present, key=key, reverse=descending) + absent


def include_lists(app: FastAPI, ui: Ui) -> None:
    from services.api.routes.views import scope
    from services.views.queries import PLAN_STATUSES, RISK_LEVELS

    @app.get("/")
    async def start(request: Request) -> Response:
        """An auditor's start is the audit page; everyone else's the caseload."""
        if ui.signed_in(request).role is Role.AUDITOR:
            return RedirectResponse(f"{PREFIX}/audit", status_code=303)
        return await caseload(request)

    @app.get("/caseload")
    async def caseload(request: Request, sort: str | None = None, order: str = "desc", status: str | None = None,
                       risk: str | None = None, page: int = 1) -> Response:
        principal = ui.signed_in(request, CLINICAL)
        if sort is not None and sort not in SORTS:
            raise PageProblem(422, "Unknown column", f"The caseload sorts by one of: {', '.join(SORTS)}.")
        if order not in ("asc", "desc") or (status and status not in PLAN_STATUSES) or (
                risk and risk not in RISK_LEVELS) or page < 1:
            raise PageProblem(422, "Unknown filter", "Choose the status, risk and order from the lists offered.")
        # as GET /caseload: a clinician's caseload is the plans they drafted; a supervisor sees every clinician's
        clinician = principal.actor_id if principal.role is Role.CLINICIAN else None
        found = views_of(ui).caseload(scope(principal), clinician=clinician, status=status or None, risk=risk or None,
                                      page=page, size=PAGE_SIZE)
        rows = sorted_rows(found.items, sort, order == "desc") if sort else found.items
        return ui.render(request, "caseload.html", rows=rows, found=found, sort=sort, order=order,
                         status_filter=status or "", risk_filter=risk or "", statuses=PLAN_STATUSES, risks=RISK_LEVELS, columns=CASELOAD_COLUMNS,
                         pages=-(-found.total // PAGE_SIZE), title="Caseload")

    def progress_page(request: Request, plan: CarePlan, of: UUID, course: UUID | None) -> Response:
        from services.views.queries import NotInViewsError

        views = views_of(ui)

        def read(of: UUID) -> Any:
            try:
                return views.progress(of)
            except NotInViewsError:
                return None

        found = read(of)
        whole = read(plan.id) if course else found
        what = f"{plan.title}" + (" (one course)" if course else "")
        chart = progress_chart(chart_data(found), title=f"PHQ-9 and GAD-7 over time: {what}") if found else None
        courses = whole.course_ids if whole else []
        return ui.render(request, "progress.html", plan=plan, progress=found, chart=chart, course=course,
                         courses=courses, title=f"Progress: {what}")

    @app.get("/plans/{plan_id}/progress")
    async def progress(request: Request, plan_id: str) -> Response:
        plan = plan_in_scope(ui, request, plan_id)
        return progress_page(request, plan, plan.id, None)

    @app.get("/courses/{course_id}/progress")
    async def course_progress(request: Request, course_id: str) -> Response:
        """One course's chart; a course of another client's plan is the same 404 as a missing one."""
        ui.signed_in(request, CLINICAL)
        found = parse_uuid(course_id, "course")
        try:
            course = ui.api.care.get_course(found)
        except AggregateMissingError:
            raise not_found("course") from None
        plan = plan_in_scope(ui, request, str(course.plan_id))
        return progress_page(request, plan, course.id, course.id)


#: (sort key, heading) of the caseload table, in order
CASELOAD_COLUMNS = (
    ("client", "Client"), ("title", "Plan"), ("status", "Status"), ("strategy", "Strategy"), ("risk", "Risk"),
    ("crises", "Open crises"), ("next_session", "Next session"), ("phq9", "Last PHQ-9"), ("gad7", "Last GAD-7"),
    ("overdue", "Questionnaires"),
)


def chart_data(found: Any) -> Any:
    """The read model's progress as the chart draws it."""
    bands: dict[str, list[tuple[int, int, str]]] = {}
    for band in found.bands:
        bands.setdefault(band.instrument, []).append((band.low, band.high, band.severity))
    series: dict[str, list[Score]] = {}
    flags: list[Flag] = []
    for p in found.points:
        series.setdefault(p.instrument, []).append(Score(p.answered_at, p.total, (p.severity or "").replace("_", " ")))
        if p.reliable_improvement:
            flags.append(Flag(p.answered_at, "improvement", f"{p.instrument} reliable improvement ({p.change:+d})"))
        if p.reliable_deterioration:
            flags.append(Flag(p.answered_at, "deterioration", f"{p.instrument} reliable deterioration ({p.change:+d})"))
    for f in found.flags:
        what = {"phq9_item9": "PHQ-9 item 9 above 0", "cssrs": "C-SSRS ideation or behaviour"}.get(
            f.kind, f"{f.instrument} suicide item")
        flags.append(Flag(f.answered_at, "risk", f"Risk flag: {what}" + (f" ({f.suicide_risk})" if f.suicide_risk else "")))
    # sessions still to come after the last score would only stretch the time axis (the page lists them all)
    last = max([p.answered_at for p in found.points], default=None)
    sessions = [(s.starts_at, f"{s.kind.replace('_', '-')} {s.number}, {s.state}") for s in found.sessions
                if s.state != "scheduled" or last is None or s.starts_at <= last + UPCOMING_SHOWN]
    return ChartProgress(series=series, flags=flags, sessions=sessions, bands=shared_bands(bands))
