"""The auditors' reads (services.audit): auditor role only, each with a stated purpose,
each recorded in the access log before anything is read."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import TypeAdapter, ValidationError

from domain.base import Moment, Role
from services.api.auth import Principal
from services.api.dependencies import MAX_VERSION, Api
from services.api.problems import ApiProblem
from services.api.routes import param, signature

MOMENT: TypeAdapter[datetime] = TypeAdapter(Moment)
Purpose = Annotated[str | None, Header(alias="X-Audit-Purpose", description="Why you read: recorded with the read; required.")]


def include(router: APIRouter, api: Api, who: Any) -> None:
    from services.audit.auditor import Auditor

    def auditor(principal: Principal, purpose: str | None) -> Auditor:
        api.require(principal, (Role.AUDITOR,), "use the audit functions")
        # the token's clients only: a record out of scope is a 404 like a missing one (issue 13)
        return Auditor(api.care.settings, principal.actor, purpose, principal.may_act_for)

    def history(aggregate_id: UUID, principal: Principal, purpose: str | None) -> dict[str, Any]:
        store, entries = auditor(principal, purpose).history(aggregate_id)
        return {"store": store, "events": [e.model_dump(mode="json") for e in entries]}

    def replay(aggregate_id: UUID, principal: Principal, purpose: str | None, at: datetime | None,
               version: int | None) -> dict[str, Any]:
        return auditor(principal, purpose).replay(aggregate_id, at=at, version=version).model_dump(mode="json")

    def diff(aggregate_id: UUID, principal: Principal, purpose: str | None, start: str, end: str) -> dict[str, Any]:
        def point(value: str) -> datetime | int:
            """A version (ASCII digits, at most MAX_VERSION) or an RFC 3339 moment with a zone."""
            try:
                if value.isascii() and value.isdigit():
                    if 1 <= int(value) <= MAX_VERSION:
                        return int(value)
                else:
                    return MOMENT.validate_python(value)
            except (ValueError, ValidationError):
                pass
            raise ApiProblem(400, "invalid-request", "Invalid request",
                             f"{value[:64]!r} is neither a version (1 to {MAX_VERSION}) nor a moment with a time zone "
                             "(RFC 3339, e.g. 2026-05-04T09:30:00Z).")

        return auditor(principal, purpose).diff(aggregate_id, point(start), point(end)).model_dump(mode="json")

    def trace(event_id: UUID, principal: Principal, purpose: str | None) -> dict[str, Any]:
        return auditor(principal, purpose).trace(event_id).model_dump(mode="json")

    def export(client_id: str, principal: Principal, purpose: str | None, output_format: str,
               indent: int | None) -> Response:
        # streamed a piece at a time, never held whole in the API process (issue 13)
        pieces = auditor(principal, purpose).export_text(client_id=client_id, output_format=output_format,
                                                         indent=indent)
        return StreamingResponse(pieces, media_type="text/html" if output_format == "html" else "application/json")

    def access_report(client_id: str, principal: Principal, purpose: str | None, start: datetime | None,
                      end: datetime | None, output_format: str) -> Response:
        from services.audit.access_report import to_html

        report = auditor(principal, purpose).access_report(client_id, start=start, end=end)
        if output_format == "html":
            return Response(to_html(report), media_type="text/html")
        return Response(report.model_dump_json(), media_type="application/json")

    def verify(principal: Principal, purpose: str | None) -> JSONResponse:
        reports = auditor(principal, purpose).verify()
        return JSONResponse([r.model_dump(mode="json") for r in reports],
                            status_code=200 if all(r.ok for r in reports) else 409)

    who_purpose = [param("principal", who), param("purpose", Purpose, None)]
    signature(history, [param("aggregate_id", UUID), *who_purpose])
    signature(replay, [param("aggregate_id", UUID), *who_purpose,
                       param("at", Annotated[Moment | None, Query(description="RFC 3339, with a time zone.")], None),
                       param("version", Annotated[int | None, Query(ge=1, le=MAX_VERSION)], None)])
    signature(diff, [param("aggregate_id", UUID), *who_purpose,
                     param("start", Annotated[str, Query(alias="from", description="Version or moment.")]),
                     param("end", Annotated[str, Query(alias="to", description="Version or moment.")])])
    signature(trace, [param("event_id", UUID), *who_purpose])
    signature(export, [param("client_id", str), *who_purpose,
                       param("output_format", Annotated[str, Query(alias="format", pattern="^(json|html)$")], "json"),
                       param("indent", Annotated[int | None, Query(ge=0, le=8, description="JSON only: indent by this "
                                                                   "many spaces (default: compact).")], None)])
    signature(access_report, [param("client_id", str), *who_purpose,
                              param("start", Annotated[Moment | None, Query(alias="from", description="RFC 3339, with a "
                                                                            "time zone (inclusive).")], None),
                              param("end", Annotated[Moment | None, Query(alias="to", description="RFC 3339, with a "
                                                                          "time zone (exclusive).")], None),
                              param("output_format", Annotated[str, Query(alias="format", pattern="^(json|html)$")],
                                    "json")])
    signature(verify, who_purpose)
    for path, endpoint, summary, name in (
        ("/audit/aggregates/{aggregate_id}/history", history, "Every event of an aggregate: who, what, why", "auditHistory"),
        ("/audit/aggregates/{aggregate_id}/replay", replay, "An aggregate's state at a moment or version", "auditReplay"),
        ("/audit/aggregates/{aggregate_id}/diff", diff, "What changed between two versions or moments", "auditDiff"),
        ("/audit/events/{event_id}/trace", trace, "An event's causation chain across services", "auditTrace"),
        ("/audit/clients/{client_id}/export", export, "A client's whole care history (JSON or HTML)", "auditExport"),
        ("/audit/clients/{client_id}/access-report", access_report,
         "Every read of a client's data in a period (JSON or printable HTML)", "auditAccessReport"),
        ("/audit/verify", verify, "Integrity of every store's hash chain (409 on a break)", "auditVerify"),
    ):
        router.get(path, tags=["audit"], summary=summary, name=name)(endpoint)
