"""The web pages, served by the API under ``/ui/``: sign in with a token once, then a caseload,
a plan with the actions a clinician may take on it, a client's progress as a chart, and the
auditors' timeline.

A FastAPI application of its own, mounted at ``/ui`` (so its routes are not in the API's
OpenAPI document nor among its APIRoutes). Pages are rendered on the server from Jinja2
templates; the stylesheet is in the package; nothing is fetched from anywhere else (the
Content-Security-Policy says so to the browser too). Commands from its forms go through
:func:`services.care.handling.handle` like the JSON API's, with the version the page showed
as the expected version.

Who may see what (the token's role and clients, as in the JSON API):

=====================================  ==========================  =================================
route                                  roles                       client scope
=====================================  ==========================  =================================
GET/POST /ui/login, POST /ui/logout    anyone                      —
GET /ui/static/*                       anyone                      —
GET /ui/, /ui/caseload                 clinician, supervisor       the token's clients only
GET /ui/plans/{id}, .../progress       clinician, supervisor       another client's: 404 as missing
GET /ui/courses/{id}/progress          clinician, supervisor       another client's: 404 as missing
POST /ui/plans/{id}/<action>           as the command's JSON route another client's: 404 as missing
GET /ui/audit, GET/POST /ui/audit/...  auditor                     another client's: 404 as missing
=====================================  ==========================  =================================

Not signed in: a GET is redirected (303) to the sign-in page, a POST is refused (401).
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.base import Role
from domain.errors import DomainError
from services.api.auth import Principal
from services.api.dependencies import Api
from services.api.ui.sessions import COOKIE, MAX_AGE, Session, Sessions, session_key
from services.shared.diagnostics import describe, frames
from services.shared.errors import AggregateMissingError, NotYetExistingError

log = logging.getLogger(__name__)

PREFIX = "/ui"
HERE = Path(__file__).parent
CLINICAL = (Role.CLINICIAN, Role.SUPERVISOR)
#: Nothing but this origin, for anything; no inline script at all.
CSP = ("default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # clinical pages are not kept in caches (shared machines, back button after sign-out)
    "Cache-Control": "no-store",
}


class PageProblem(Exception):
    """An error page: status, title, what to do."""

    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


class SignIn(Exception):
    """Not signed in (or the token behind the session is no longer valid)."""


def not_found(what: str = "page") -> PageProblem:
    return PageProblem(404, "Not found", f"There is no such {what}, or it is not one of your clients'.")


class Ui:
    def __init__(self, api: Api) -> None:
        self.api = api
        self.sessions = Sessions(session_key(api.care.settings.data_dir), api.tokens)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals["prefix"] = PREFIX

    # ----------------------------------------------------------------- sessions

    def session(self, request: Request) -> Session | None:
        cached = getattr(request.state, "ui_session", False)
        if cached is not False:
            return cached  # type: ignore[no-any-return]
        found = self.sessions.read(request.cookies.get(COOKIE))
        request.state.ui_session = found
        return found

    def signed_in(self, request: Request, roles: tuple[Role, ...] | None = None) -> Principal:
        session = self.session(request)
        if session is None or session.principal is None:
            raise SignIn
        request.state.principal = session.principal  # for the access log
        if roles is not None and session.principal.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise PageProblem(403, "Not for your role", f"This page is for: {allowed}. "
                              f"You are signed in as a {session.principal.role.value}.")
        return session.principal

    async def checked_form(self, request: Request, roles: tuple[Role, ...] | None = None) -> tuple[Principal, Any]:
        """A POST's form, after its CSRF token was checked against the session; nothing is
        read or changed for a form without the right one."""
        session = self.session(request)
        if session is None or session.principal is None:
            raise PageProblem(401, "Signed out", "Your session has ended; sign in again. Nothing was changed.")
        form = await request.form()
        if not self.sessions.csrf_ok(session, form.get("csrf")):  # type: ignore[arg-type]
            raise PageProblem(403, "Form refused", "This form did not come from this session (or it is too old). "
                              "Nothing was changed; open the page again and resend it.")
        return self.signed_in(request, roles), form

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = self.session(request)
        cookie = None
        if session is None:
            session, cookie = self.sessions.anonymous()
        principal = session.principal
        context |= {"principal": principal, "csrf": self.sessions.csrf(session), "form_key": secrets.token_urlsafe(12),
                    "is_auditor": principal is not None and principal.role is Role.AUDITOR}
        response = self.templates.TemplateResponse(request, template, context, status_code=status)
        if cookie is not None:
            set_cookie(request, response, cookie)
        return response


def set_cookie(request: Request, response: Response, value: str) -> None:
    response.set_cookie(COOKIE, value, max_age=MAX_AGE, path=PREFIX, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def safe_next(target: str | None) -> str:
    """Only a page of this site (never ``//host`` or a scheme): an open redirect otherwise."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/"


def create_ui(api: Api) -> FastAPI:
    from services.api.ui import audit_pages, plan_pages

    ui = Ui(api)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ui = ui

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(SignIn)
    async def sign_in_first(request: Request, _: SignIn) -> Response:
        if request.method != "GET":
            return ui.render(request, "error.html", 401, title="Signed out",
                             detail="Your session has ended; sign in again. Nothing was changed.")
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        response = RedirectResponse(f"{PREFIX}/login?next={_quote(target)}", status_code=303)
        if ui.session(request) is not None:  # a session whose token was revoked or expired: gone
            response.delete_cookie(COOKIE, path=PREFIX)
        return response

    @app.exception_handler(PageProblem)
    async def page_problem(request: Request, exc: PageProblem) -> Response:
        return ui.render(request, "error.html", exc.status, title=exc.title, detail=exc.detail)

    @app.exception_handler(AggregateMissingError)
    async def missing(request: Request, _: AggregateMissingError) -> Response:
        problem = not_found("record")
        return ui.render(request, "error.html", problem.status, title=problem.title, detail=problem.detail)

    @app.exception_handler(NotYetExistingError)
    async def not_yet(request: Request, exc: NotYetExistingError) -> Response:
        return ui.render(request, "error.html", 404, title="Did not exist yet", detail=str(exc))

    @app.exception_handler(DomainError)
    async def domain(request: Request, exc: DomainError) -> Response:
        return ui.render(request, "error.html", 409, title="Not possible", detail=str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        where = ", ".join(str(e.get("loc", ("",))[-1]) for e in exc.errors())
        return ui.render(request, "error.html", 422, title="Not a valid address",
                         detail=f"Check this part of the address: {where}.")

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            problem = not_found()
            return ui.render(request, "error.html", 404, title=problem.title, detail=problem.detail)
        return ui.render(request, "error.html", exc.status_code, title="Refused", detail=str(exc.detail))

    async def unavailable(request: Request, exc: Exception) -> Response:
        # a database that cannot be read just now (the read models' or a store's), as GET /caseload's 503
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
        response = ui.render(request, "error.html", 503, title="Not available just now",
                             detail="The records cannot be read at the moment; nothing was changed. Retry shortly.")
        response.headers["Retry-After"] = "5"
        return response

    for unreadable in (sqlite3.OperationalError, sqlite3.DatabaseError, psycopg.OperationalError):
        app.add_exception_handler(unreadable, unavailable)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        # the error's class and where, not its message (messages quote input)
        log.error("unexpected error on %s %s: %s\n%s", request.method, request.url.path, describe(exc), frames(exc))
        return ui.render(request, "error.html", 500, title="Something failed on our side",
                         detail="It is logged. Nothing you sent was lost: reload the page to see what was recorded.")

    @app.get("/login")
    async def login_page(request: Request, next: str | None = None) -> Response:
        return ui.render(request, "login.html", next=safe_next(next), error=None)

    @app.post("/login")
    async def login(request: Request) -> Response:
        session = ui.session(request)
        form = await request.form()
        target = safe_next(str(form.get("next") or ""))
        if not ui.sessions.csrf_ok(session, form.get("csrf")):  # type: ignore[arg-type]
            return ui.render(request, "login.html", 403, next=target,
                             error="The sign-in form was too old or not from this site; please try again.")
        made = ui.sessions.sign_in(str(form.get("token") or ""))
        if made is None:
            return ui.render(request, "login.html", 401, next=target,
                             error="That token is not valid (unknown, revoked or expired).")
        new, cookie = made
        if target == f"{PREFIX}/" and new.principal is not None and new.principal.role is Role.AUDITOR:
            target = f"{PREFIX}/audit"
        response = RedirectResponse(target, status_code=303)
        set_cookie(request, response, cookie)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        await ui.checked_form(request)
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    plan_pages.include(app, ui)
    audit_pages.include(app, ui)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="/")


def parse_uuid(value: str, what: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise not_found(what) from None


def install(app: FastAPI, api: Api) -> None:
    app.mount(PREFIX, create_ui(api), name="ui")
