"""The clinicians' pages: caseload, a plan (with its actions), a plan's progress."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from domain.care_plan import CarePlan
from domain.catalogues.strategies import Strategy
from domain.errors import DomainError
from services.api.problems import ApiProblem, status_of
from services.api.ui import CLINICAL, PREFIX, PageProblem, Ui, not_found, parse_uuid
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
