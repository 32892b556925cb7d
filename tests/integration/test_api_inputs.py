"""Inputs that answered 500 (issue 13): naive or out-of-range moments, versions beyond 64
bits, audit ranges without a zone, a session near the end of representable time; then a
property test over every GET route with parameters and the POST routes: no 5xx, ever."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote
from uuid import uuid4

import pytest
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.base import Actor, CommandContext, Role
from domain.events.therapy_course import SessionScheduled
from tests.integration.test_api import Setup, api_routes, body_for, make_setup, url_for
from tests.support.bodies import example_body


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Setup]:
    setup = make_setup(tmp_path)
    yield setup
    setup.close()


AUDIT = {"X-Audit-Purpose": "Input checks"}
HUGE = str(2**63)


def malformed(setup: Setup) -> list[tuple[str, str, str]]:
    """(caller, url, what) of each request the issue found answering 500."""
    plan, course = setup.plan, setup.course
    return [
        ("clinician", f"/plans/{plan}?at=2026-05-04T09:00:00", "a moment without a zone"),
        ("clinician", f"/plans/{plan}?at=9999-12-31T23:59:59-14:00", "a moment past the bounds"),
        ("clinician", f"/plans/{plan}?at=0001-01-01T00:00:00%2B14:00", "a moment before the bounds"),
        ("clinician", f"/plans/{plan}?version={HUGE}", "a version beyond 64 bits"),
        ("clinician", f"/courses/{course}?version={2**70}", "a version beyond 64 bits"),
        ("clinician", f"/fhir/CarePlan/{plan}?_at=2026-05-04T09:00:00", "a FHIR _at without a zone"),
        ("clinician", f"/fhir/CarePlan/{plan}/_history/{HUGE}", "a FHIR version beyond 64 bits"),
        ("auditor", f"/audit/aggregates/{plan}/diff?from=2026-01-01T00:00:00&to=1", "an audit range without a zone"),
        ("auditor", f"/audit/aggregates/{plan}/diff?from=1&to=2026-01-01T00:00:00", "an audit range without a zone"),
        ("auditor", f"/audit/aggregates/{plan}/diff?from=1&to={2**64}", "an audit version beyond 64 bits"),
        ("auditor", f"/audit/aggregates/{plan}/diff?from=%D9%A1&to=2", "a version in other digits"),
        ("auditor", f"/audit/aggregates/{plan}/replay?at=2026-01-01T00:00:00", "an audit moment without a zone"),
        ("auditor", f"/audit/aggregates/{plan}/replay?version={HUGE}", "an audit version beyond 64 bits"),
    ]


def test_malformed_moments_versions_and_ranges_answer_4xx_and_change_nothing(api: Setup) -> None:
    for caller, url, what in malformed(api):
        before = api.written()
        response = api.client.get(url, headers=api.headers(caller, **AUDIT))
        assert response.status_code in (400, 422), (what, url, response.status_code, response.text)
        assert response.headers["content-type"] == "application/problem+json", what
        assert response.json()["type"] == "/problems/invalid-request", what
        assert api.written() == before, what
    # the good forms still work
    assert api.client.get(f"/plans/{api.plan}?at=2030-01-01T00:00:00Z", headers=api.headers("clinician")).status_code == 200
    assert api.client.get(f"/plans/{api.plan}?version=1", headers=api.headers("clinician")).status_code == 200
    diff = api.client.get(f"/audit/aggregates/{api.plan}/diff?from=1&to=2030-01-01T00:00:00%2B02:00",
                          headers=api.headers("auditor", **AUDIT))
    assert diff.status_code == 200, diff.text


def test_moments_in_commands_need_a_zone_and_sessions_at_most_five_years_ahead(api: Setup) -> None:
    course = f"/courses/{api.course}"
    before = api.written()
    for body in ({"scheduled_for": "9999-12-31T23:30:00Z"}, {"scheduled_for": "2026-12-31T23:30:00"},
                 {"scheduled_for": f"{datetime.now(tz=UTC).year + 6}-01-01T09:00:00Z"}):
        refused = api.post(f"{course}/schedule-session", body, "clinician")
        assert refused.status_code == 422, (body, refused.text)
        assert refused.headers["content-type"] == "application/problem+json"
    for path, body in (("submit-questionnaire", {"instrument": "PHQ-9", "answers": [0] * 9,
                                                 "answered_at": "2026-01-01T00:00:00"}),
                       ("assign-homework", {"kind": "reading", "description": "Read", "due": "9999-12-31T23:59:59Z"})):
        assert api.post(f"{course}/{path}", body, "clinician").status_code == 422, path
    assert api.written() == before
    fine = api.post(f"{course}/schedule-session", {"scheduled_for": f"{datetime.now(tz=UTC).year + 1}-01-04T09:00:00+01:00"},
                    "clinician")
    assert fine.status_code == 200, fine.text
    assert api.client.get(f"/fhir/Appointment?course={api.course}", headers=api.headers("clinician")).status_code == 200


def test_a_session_recorded_near_the_end_of_time_before_the_door_still_renders(api: Setup) -> None:
    """A course whose session was recorded at 9999-12-31T23:30Z (before the door refused it)
    answered 500 on /fhir/Appointment for ever; it renders, without an end."""
    course = api.care.get_course(api.course)
    ctx = CommandContext(actor=Actor(id="clinician-1", role=Role.CLINICIAN), at=datetime.now(tz=UTC),
                         correlation_id=uuid4())
    course._trigger(SessionScheduled, ctx, session_id=uuid4(), number=1,
                    scheduled_for=datetime(9999, 12, 31, 23, 30, tzinfo=UTC), duration_minutes=50)
    api.care.save(course)
    response = api.client.get(f"/fhir/Appointment?course={api.course}", headers=api.headers("clinician"))
    assert response.status_code == 200, response.text
    [entry] = response.json()["entry"]
    assert entry["resource"]["start"].startswith("9999-12-31T23:30") and "end" not in entry["resource"]


# --------------------------------------------------------------------------- properties

printable = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
moments = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),  # naive, any year
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.sampled_from(["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+14:00", "9999-12-31T23:30:00-14:00",
                     "2026-13-45T25:61:00Z", "2026-05-04", "2026-05-04T09:00:00Z", "2026-05-04T09:00:00+01:00",
                     "now", "T", "1e309"]),
)
numbers = st.one_of(st.integers(-(2**70), 2**70).map(str), st.sampled_from(["0", "-1", "1", "2", HUGE, str(2**63 - 1),
                                                                             "1.5", "NaN", "٣", "１", "0x10", "+1"]))
values = st.one_of(moments, numbers, printable, st.just(""), st.uuids().map(str))


def _query_names(route: APIRoute) -> list[str]:
    return [p.alias or p.name for p in route.dependant.query_params]


def _path_names(route: APIRoute) -> list[str]:
    return [p.alias or p.name for p in route.dependant.path_params]


def test_no_route_answers_5xx_to_any_parameter(tmp_path: Path) -> None:
    """Every GET route with parameters (and every POST route's path), each parameter either
    valid, or drawn from malformed dates, huge and negative numbers, unicode and empty text;
    POST bodies with their moments and numbers replaced: never a 5xx, nothing written when refused."""
    setup = make_setup(tmp_path)
    routes = api_routes(setup)
    gets = [r for r in routes if "GET" in r.methods and (_query_names(r) or _path_names(r))]
    posts = [r for r in routes if "POST" in r.methods]
    assert len(gets) >= 15, [r.path for r in gets]
    callers = st.sampled_from(["clinician", "supervisor", "auditor", "integration", "other-clinician"])

    def request_for(route: APIRoute, data: st.DataObject) -> tuple[str, dict[str, str]]:
        valid = url_for(route, setup)
        path, _, query = valid.partition("?")
        parts = route.path.split("/")
        filled = path.split("/")
        for i, part in enumerate(parts):
            if part.startswith("{") and data.draw(st.booleans()):
                filled[i] = quote(data.draw(values), safe="")
        params = dict(p.split("=", 1) for p in query.split("&") if p)
        for name in _query_names(route):
            if data.draw(st.booleans()):
                params[name] = data.draw(values)
        return "/".join(filled), params

    @settings(max_examples=600, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data(), callers)
    def fuzz_get(data: st.DataObject, caller: str) -> None:
        route = data.draw(st.sampled_from(gets))
        url, params = request_for(route, data)
        headers = setup.headers(caller, **AUDIT)
        if data.draw(st.booleans()):
            headers["If-None-Match"] = data.draw(printable.filter(str.isascii))
        before = setup.written()
        response = setup.client.get(url, params=params, headers=headers)
        assert response.status_code < 500, (route.name, url, params, response.text)
        assert setup.written() == before, (route.name, url, params)

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data(), callers)
    def fuzz_post(data: st.DataObject, caller: str) -> None:
        route = data.draw(st.sampled_from(posts))
        url, _ = request_for(route, data)
        body = dict(body_for(route, setup) or {})
        for name in data.draw(st.lists(st.sampled_from(sorted(body) or ["scheduled_for"]), max_size=2)):
            body[name] = data.draw(values | numbers.map(lambda n: int(float(n)) if n.lstrip("-").isdigit() else n))
        headers = setup.headers(caller)
        if data.draw(st.booleans()):
            headers["If-Match"] = data.draw(numbers.filter(str.isascii))
        before = setup.written()
        response = setup.client.post(url, json=body, headers=headers)
        assert response.status_code < 500, (route.name, url, body, response.text)
        if response.status_code >= 400:
            assert setup.written() == before, (route.name, body, response.status_code)

    try:
        fuzz_get()
        fuzz_post()
    finally:
        setup.close()


@pytest.mark.parametrize("field", ["scheduled_for", "held_at", "answered_at", "due"])
def test_every_moment_field_of_a_command_refuses_naive_moments(field: str) -> None:
    from pydantic import ValidationError

    from services.care import commands as c

    command = next(cls for cls in (c.ScheduleSession, c.HoldSession, c.SubmitQuestionnaire, c.AssignHomework)
                   if field in cls.model_fields)
    body = {**example_body(command, "course_id"), "course_id": str(uuid4()), field: "2026-05-04T09:00:00+02:00"}
    if field == "due":
        body |= {"homework_id": str(uuid4())} if "homework_id" in command.model_fields else {}
    command.model_validate(body)  # with a zone: accepted
    with pytest.raises(ValidationError) as refused:
        command.model_validate(body | {field: "2026-05-04T09:00:00"})
    assert [e["loc"] for e in refused.value.errors()] == [(field,)]
