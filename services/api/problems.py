"""RFC 9457 problem details: every error the API returns, one stable ``type`` per kind.

The ``type`` of a domain error is ``/problems/<code>`` (the error's stable code); the API
serves a short description of each at that address."""

from __future__ import annotations

import logging
from typing import Any

from eventsourcing.persistence import IntegrityError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import (
    ClientDataErasedError,
    DomainError,
    InvalidValueError,
    NotAuthorisedError,
    ReasonRequiredError,
)
from services.shared.diagnostics import describe, frames
from services.shared.errors import AggregateMissingError, ConcurrencyConflictError, NotYetExistingError

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"


class ApiProblem(Exception):
    """An error the API itself decides (authentication, role, preconditions)."""

    def __init__(self, status: int, code: str, title: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.title, self.detail, self.headers = status, code, title, detail, headers or {}


def problem(status: int, code: str, title: str, detail: str, instance: str | None = None, **extra: Any) -> JSONResponse:
    body = {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail, **extra}
    if instance:
        body["instance"] = instance
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE)


def status_of(error: DomainError, *, if_match: bool) -> int:
    if isinstance(error, (AggregateMissingError, NotYetExistingError)):
        return 404
    if isinstance(error, ConcurrencyConflictError):
        return 412 if if_match else 409
    if isinstance(error, NotAuthorisedError):
        return 403
    if isinstance(error, ClientDataErasedError):
        return 410  # the record existed and its content was erased (issue 16)
    if isinstance(error, (InvalidValueError, ReasonRequiredError)):
        return 422
    return 409  # a clinical or lifecycle rule: the request conflicts with the record's state


def title_of(code: str) -> str:
    return code.replace("-", " ").capitalize()


def known_codes() -> dict[str, str]:
    """Every domain error code with the first line of its class's description."""
    found: dict[str, str] = {}
    classes: list[type[DomainError]] = [DomainError]
    while classes:
        cls = classes.pop()
        doc = (cls.__doc__ or "").strip().splitlines()
        found.setdefault(cls.code, doc[0] if doc else title_of(cls.code))
        classes.extend(cls.__subclasses__())
    found |= {
        "unauthenticated": "No valid bearer token: send Authorization: Bearer <token>.",
        "forbidden": "The token's role (or its clients) does not allow this request.",
        "invalid-request": "The request does not match the documented schema; see `errors`.",
        "invalid-value": "A value is outside what the care record accepts; nothing was written.",
        "precondition-required": "If-Match must name one version, e.g. \"3\".",
        "internal-error": "Something failed on our side; nothing was written. It is logged.",
        "views-unavailable": "The read models (caseload, plan lists, outcomes) cannot be read just now; retry shortly.",
    }
    return found


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        response = problem(exc.status, exc.code, exc.title, exc.detail, request.url.path)
        response.headers.update(exc.headers)
        return response

    @app.exception_handler(DomainError)
    async def domain_problem(request: Request, exc: DomainError) -> JSONResponse:
        status = status_of(exc, if_match="if-match" in request.headers)
        return problem(status, exc.code, title_of(exc.code), str(exc), request.url.path)

    @app.exception_handler(IntegrityError)
    async def lost_race(request: Request, exc: IntegrityError) -> JSONResponse:
        # A write that lost a race with another writer and was not mapped where it was made:
        # nothing was written, so it is a conflict to retry, not a failure of ours.
        return problem(409, "concurrency-conflict", title_of("concurrency-conflict"),
                       "The record was changed by another writer at the same time; read it again and retry. "
                       "Nothing was written.", request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        return problem(422, "invalid-request", "Invalid request", "The request does not match the schema.",
                       request.url.path, errors=errors)

    @app.exception_handler(ValueError)
    async def invalid_value(request: Request, exc: ValueError) -> JSONResponse:
        # The domain's own checks (lengths, ranges) raise ValueError before anything is recorded.
        return problem(422, "invalid-value", "Invalid value", str(exc), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_problem(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
        return problem(exc.status_code, code, title_of(code), str(exc.detail), request.url.path)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        # The error's class and where it came from, not its message: messages quote input.
        log.error("unexpected error on %s %s: %s\n%s", request.method, request.url.path, describe(exc), frames(exc))
        return problem(500, "internal-error", "Internal error", "Something failed on our side; it is logged.",
                       request.url.path)


