"""Reads from the read models (services/views): a caseload, plan lists, outcomes.

Every route catches the views up first (only what the stores recorded since the last read),
so a read right after a write sees it. The role and client rules are the API's:

- ``GET /caseload``: clinicians and supervisors, the token's clients; a clinician's caseload
  is the plans they drafted (``clinician`` may name only themselves), a supervisor sees
  every clinician's (or one's, with ``clinician``).
- ``GET /plans``: clinicians, supervisors and integrations, the token's clients; ``client``
  outside them is 403.
- ``GET /outcomes``: clinicians and supervisors, over the token's clients; JSON, or CSV (one
  row per course) with ``Accept: text/csv``.
"""

from __future__ import annotations

import csv
import io
import logging
import sqlite3
from datetime import datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response

from domain.base import Moment, Role
from services.api.auth import ALL_CLIENTS, Principal
from services.api.dependencies import CLINICAL, READERS, Api
from services.api.problems import ApiProblem
from services.api.routes import param, signature
from services.views.outcomes import MEASURES
from services.views.queries import PLAN_STATUSES, RISK_LEVELS, CaseloadRow, OutcomeReport, Page

log = logging.getLogger(__name__)

STATUS = f"^({'|'.join(PLAN_STATUSES)})$"
RISK = f"^({'|'.join(RISK_LEVELS)})$"
#: An id as the events hold it (ShortText), without control characters.
ID = r"^[^\x00-\x1f\x7f]{1,200}$"


def scope(principal: Principal) -> frozenset[str] | None:
    """The token's clients as the views take them (None: every client)."""
    return None if ALL_CLIENTS in principal.clients else frozenset(principal.clients)


def paged(page: Page[Any], path: str, query: dict[str, Any]) -> JSONResponse:
    headers = {"X-Total-Count": str(page.total)}
    if page.page * page.size < page.total:
        from urllib.parse import urlencode

        following = urlencode({k: v for k, v in {**query, "page": page.page + 1, "size": page.size}.items()
                               if v is not None})
        headers["Link"] = f'<{path}?{following}>; rel="next"'
    return JSONResponse(page.model_dump(mode="json"), headers=headers)


CSV_COLUMNS = [
    "course_id", "plan_id", "client_id", "modality", "status", "started_at", "ended_at", "finished", "paired",
    "case_at_first", "recovered", "reliable_improvement", "reliable_deterioration", "reliable_recovery",
    *(f"{m.lower().replace('-', '')}_{field}" for m in MEASURES
      for field in ("count", "first", "last", "change", "rci", "rci_reliable")),
]


def outcomes_csv(report: OutcomeReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for course in report.courses:
        r = course.result
        row: list[Any] = [
            course.course_id, course.plan_id, course.client_id, course.modality, course.status,
            course.started_at.isoformat(), course.ended_at.isoformat() if course.ended_at else "", course.finished,
            r.paired, r.case_at_first, r.recovered, r.reliable_improvement, r.reliable_deterioration,
            r.reliable_recovery,
        ]
        for measure in MEASURES:
            m = r.measures.get(measure)
            row += [m.count, m.first, m.last, m.change, m.rci, m.rci_reliable] if m else [""] * 6
        writer.writerow([str(v).lower() if isinstance(v, bool) else v for v in row])
    return out.getvalue()


def wants_csv(accept: str | None) -> bool:
    """``text/csv`` named before (or without) JSON in Accept."""
    if not accept:
        return False
    kinds = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return "text/csv" in kinds and (
        "application/json" not in kinds or kinds.index("text/csv") < kinds.index("application/json"))


class Reading:
    """The views for one request: caught up first; their database unavailable is a 503."""

    def __init__(self, api: Api) -> None:
        self.views = api.views

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.views, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return method(*args, **kwargs)
            except (sqlite3.OperationalError, sqlite3.DatabaseError, psycopg.OperationalError) as e:
                log.warning("views unavailable: %s", type(e).__name__)
                raise ApiProblem(503, "views-unavailable", "Views unavailable",
                                 "The caseload, plan lists and outcomes cannot be read just now; retry shortly.",
                                 {"Retry-After": "5"}) from e

        return call


def include(router: APIRouter, api: Api, who: Any) -> None:
    views = Reading(api)

    def caseload(principal: Principal, clinician: str | None, status: str | None, risk: str | None, page: int,
                 size: int) -> JSONResponse:
        api.require(principal, CLINICAL, "read a caseload")
        if principal.role is Role.CLINICIAN:
            if clinician is not None and clinician != principal.actor_id:
                raise ApiProblem(403, "forbidden", "Forbidden",
                                 "A clinician reads their own caseload; another clinician's is for supervisors.")
            clinician = principal.actor_id
        views.catch_up()
        found = views.caseload(scope(principal), clinician=clinician, status=status, risk=risk, page=page, size=size)
        return paged(found, "/caseload", {"clinician": clinician if principal.role is not Role.CLINICIAN else None,
                                          "status": status, "risk": risk})

    filters = [
        param("status", Annotated[str | None, Query(pattern=STATUS, description="Only plans in this status.")], None),
        param("risk", Annotated[str | None, Query(pattern=RISK, description="Only plans at this risk level.")], None),
        param("page", Annotated[int, Query(ge=1, le=1_000_000, description="Page, from 1.")], 1),
        param("size", Annotated[int, Query(ge=1, le=500, description="Plans per page.")], 50),
    ]
    signature(caseload, [
        param("principal", who),
        param("clinician", Annotated[str | None, Query(pattern=ID, description=(
            "Only this clinician's plans (supervisors; a clinician may name only themselves)."))], None),
        *filters,
    ])
    router.get("/caseload", tags=["views"], summary="The caseload: plans needing attention first",
               name="caseload", responses={200: {"model": Page[CaseloadRow]}})(caseload)

    def plans(principal: Principal, client: str | None, status: str | None, risk: str | None, page: int,
              size: int) -> JSONResponse:
        api.require(principal, READERS, "list plans")
        clients = scope(principal)
        if client is not None:
            api.require_client(principal, client)
            clients = frozenset({client})
        views.catch_up()
        found = views.plans(clients, status=status, risk=risk, page=page, size=size)
        return paged(found, "/plans", {"client": client, "status": status, "risk": risk})

    signature(plans, [
        param("principal", who),
        param("client", Annotated[str | None, Query(pattern=ID, description="Only this client's plans.")], None),
        *filters,
    ])
    router.get("/plans", tags=["views"], summary="Care plans, filtered and paged", name="listPlans",
               responses={200: {"model": Page[CaseloadRow]}})(plans)

    def outcomes(principal: Principal, start: datetime | None, end: datetime | None, accept: str | None) -> Response:
        api.require(principal, CLINICAL, "read outcomes")
        if start is not None and end is not None and start >= end:
            raise ApiProblem(400, "invalid-request", "Invalid request", "'from' must be before 'to'.")
        views.catch_up()
        report = views.outcomes(scope(principal), start=start, end=end)
        if wants_csv(accept):
            return Response(outcomes_csv(report), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": 'attachment; filename="outcomes.csv"'})
        return JSONResponse(report.model_dump(mode="json"))

    signature(outcomes, [
        param("principal", who),
        param("start", Annotated[Moment | None, Query(alias="from", description=(
            "Period start (RFC 3339 with a time zone), inclusive."))], None),
        param("end", Annotated[Moment | None, Query(alias="to", description=(
            "Period end (RFC 3339 with a time zone), exclusive."))], None),
        param("accept", Annotated[str | None, Header(alias="Accept")], None),
    ])
    router.get("/outcomes", tags=["views"], summary="Outcomes per course and across the service (NHS Talking "
               "Therapies definitions); CSV with Accept: text/csv", name="outcomes",
               responses={200: {"model": OutcomeReport, "content": {"text/csv": {}}}})(outcomes)
